"""Filters applied *before* ranking (Lance prefilter), so ``k`` results come back
whenever ``k`` rows qualify.

- ``sources``: shell globs (``fnmatch``, case-sensitive) matched against each
  source's full path and its file name; the distinct sources are read from
  the dataset, matched in Python and passed to Lance as ``source IN (...)``
  with quoted literals (never the user's text itself).
- ``bbox_wgs84``: tile centre (``lon``/``lat``) inside ``W,S,E,N``; ``W > E``
  crosses the antimeridian. Tiles without georeferencing never match.
- ``exclude_sources`` / ``exclude_ids``: rows to leave out (the query's own
  files for ``--exclude-same-source``, the query tiles themselves).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

from ris_ray.core.errors import InputError, QueryError
from ris_ray.core.location import Location
from ris_ray.core.sql import sql_in
from ris_ray.raster.geo import fmt_coords

__all__ = ["TILE_ID", "SearchFilter", "check_tile_id", "dataset_sources", "match_sources"]

TILE_ID = re.compile(r"^[0-9a-f]{20}\Z")  # \Z: "$" would accept a trailing newline


def check_tile_id(tile_id: str, option: str = "--tile-id") -> str:
    """``tile_id`` if it is 20 lowercase hex digits, else :class:`InputError`."""
    if not TILE_ID.match(tile_id):
        raise InputError(f"{option} {tile_id!r}: tile ids are 20 lowercase hex digits")
    return tile_id


def dataset_sources(ds: Any) -> list[str]:
    """Distinct ``source`` values of the dataset, sorted."""
    return sorted(ds.to_table(columns=["source"]).column("source").unique().to_pylist())


def match_sources(sources: Sequence[str], pattern: str) -> list[str]:
    """Sources whose full path or file name matches the glob ``pattern``
    (``/vsis3/b/k`` names the ``s3://b/k`` that ingest stores)."""
    where = Location.parse(pattern)
    pattern = where.url if where.is_object else pattern
    return [
        s
        for s in sources
        if fnmatch.fnmatchcase(s, pattern) or fnmatch.fnmatchcase(PurePath(s).name, pattern)
    ]


def _check_bbox(bbox: tuple[float, float, float, float]) -> None:
    w, s, e, n = bbox
    text = fmt_coords(bbox)
    if not (-180 <= w <= 180 and -180 <= e <= 180 and -90 <= s < n <= 90):
        raise InputError(
            f"--bbox-wgs84 {text}: expected W,S,E,N in degrees "
            "(-180..180 longitude, -90..90 latitude, S < N)"
        )


@dataclass(frozen=True)
class SearchFilter:
    """What a row must satisfy to be ranked (all conditions AND-ed)."""

    sources: tuple[str, ...] = ()
    bbox_wgs84: tuple[float, float, float, float] | None = None
    exclude_sources: tuple[str, ...] = ()
    exclude_ids: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.bbox_wgs84 is not None:
            _check_bbox(self.bbox_wgs84)
        for tid in self.exclude_ids:
            check_tile_id(tid)

    def to_sql(self, ds: Any, *more: Any) -> str | None:
        """The Lance filter string, or ``None`` when nothing is filtered: one
        string for ``ds`` and the ``more`` datasets searched with it.

        Raises :class:`QueryError` when a ``sources`` glob matches no source
        of any of them.
        """
        parts: list[str] = []
        if self.sources:
            parts.append(sql_in("source", self._chosen_sources([ds, *more])))
        if self.bbox_wgs84 is not None:
            w, s, e, n = (float(v) for v in self.bbox_wgs84)
            lon = (
                f"(lon >= {w!r} AND lon <= {e!r})" if w <= e else f"(lon >= {w!r} OR lon <= {e!r})"
            )
            parts.append(f"{lon} AND lat >= {s!r} AND lat <= {n!r}")
        if self.exclude_sources:
            parts.append(sql_in("source", dict.fromkeys(self.exclude_sources), negate=True))
        if self.exclude_ids:
            parts.append(sql_in("tile_id", dict.fromkeys(self.exclude_ids), negate=True))
        return " AND ".join(f"({p})" for p in parts) if parts else None

    def _chosen_sources(self, datasets: Sequence[Any]) -> list[str]:
        """The sources of ``datasets`` that the ``sources`` globs match, in glob order."""
        known = sorted({s for ds in datasets for s in dataset_sources(ds)})
        chosen: list[str] = []
        for pattern in self.sources:
            hits = match_sources(known, pattern)
            if not hits:
                where = ", ".join(str(ds.uri) for ds in datasets)
                raise QueryError(
                    f"--source {pattern!r} matches none of the {len(known)} sources in "
                    f"{where} (globs match the full path or the file name; see `ris info`)"
                )
            chosen += hits
        return list(dict.fromkeys(chosen))
