"""Change between two captures of the same area: which tiles look different?

``diff(db, before, after)`` pairs the tiles of two sources by location and
reports the fingerprint distance of each pair, most changed first.

Pairing (:func:`pair_positions`, one-to-one, closest pairs first):

- ``grid``: both files in the same CRS: tiles pair when their lower-left
  corners (``minx``, ``miny``) are within half a tile of each other (same
  grid, or grids offset by less than half a tile);
- ``reprojected``: different CRSs: the after tiles' centres are transformed
  into the before file's CRS and pair with the nearest before centre within
  half a tile;
- ``pixel``: neither file is georeferenced: tiles pair by pixel origin
  (``col``, ``row``) within half a tile, for co-registered plain images.

Tiles without a partner (outside the other capture's footprint, or skipped
there for low validity) are counted, not compared.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ris_ray.core.config import check_metric
from ris_ray.core.errors import InputError, QueryError
from ris_ray.core.location import Location
from ris_ray.core.records import BOUNDS_FIELDS, TILE_REF_FIELDS
from ris_ray.core.sql import sql_literal
from ris_ray.raster.geo import transform_points
from ris_ray.search.filters import dataset_sources, match_sources
from ris_ray.store.dataset import open_dataset
from ris_ray.store.schema import dataset_params

__all__ = [
    "DiffResult",
    "TileChange",
    "diff",
    "pair_positions",
    "resolve_source",
]

#: A tile's location (:class:`~ris_ray.core.records.TileRef`; the source is known), picture, vector.
_COLUMNS = [*(f for f in TILE_REF_FIELDS if f != "source"), "thumbnail", "fingerprint"]


@dataclass
class TileChange:
    """One location seen in both captures; geometry is the before tile's."""

    rank: int
    distance: float
    before_tile_id: str
    after_tile_id: str
    row: int
    col: int
    after_row: int
    after_col: int
    lon: float | None
    lat: float | None
    crs: str | None
    minx: float | None
    miny: float | None
    maxx: float | None
    maxy: float | None
    #: distance between the paired positions, in tiles
    offset: float
    before_thumbnail: bytes | None = field(default=None, repr=False)
    after_thumbnail: bytes | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if not k.endswith("_thumbnail")}


@dataclass
class DiffResult:
    db: str
    before: str
    after: str
    metric: str
    pairing: str
    tile_size: int
    stride: int
    changes: list[TileChange]
    unmatched_before: int
    unmatched_after: int

    def top(self, n: int) -> list[TileChange]:
        """The ``n`` most changed locations."""
        return self.changes[:n]

    def to_dict(self, top: int | None = None) -> dict[str, Any]:
        """JSON-ready summary with the ``top`` most changed pairs (all when ``None``)."""
        changes = self.changes if top is None else self.changes[:top]
        return {
            "db": self.db,
            "before": self.before,
            "after": self.after,
            "metric": self.metric,
            "pairing": self.pairing,
            "pairs": len(self.changes),
            "unmatched_before": self.unmatched_before,
            "unmatched_after": self.unmatched_after,
            "changes": [c.to_dict() for c in changes],
        }


def resolve_source(ds: Any, text: str, option: str) -> str:
    """The one source of ``ds`` that ``text`` names: the exact stored path, the
    path made absolute (``/vsis3/b/k`` as the ``s3://b/k`` ingest stores), or a
    glob matching the full path or file name."""
    known = dataset_sources(ds)
    for candidate in (text, Location.parse(text).url):
        if candidate in known:
            return candidate
    hits = match_sources(known, text)
    if len(hits) == 1:
        return hits[0]
    if not hits:
        raise QueryError(
            f"{option} {text!r} matches none of the {len(known)} sources in {ds.uri} "
            "(give the path as ingested, a file name or a glob; see `ris info`)"
        )
    raise InputError(
        f"{option} {text!r} matches {len(hits)} sources ({hits[0]}, {hits[1]}, ...); "
        "give a longer path or a narrower glob"
    )


def pair_positions(a: np.ndarray, b: np.ndarray, tolerance: float) -> list[tuple[int, int, float]]:
    """One-to-one pairs ``(i, j, d)`` of points ``a[i]``, ``b[j]`` (``(N, 2)``
    arrays) with ``d = |a[i] - b[j]| <= tolerance``, closest pairs first.

    Points are bucketed on a grid of cell ``tolerance`` so each point is only
    compared with its neighbourhood (``O(N + M)`` for tiles on a grid).
    """
    if tolerance <= 0 or not math.isfinite(tolerance):
        raise ValueError(f"tolerance must be > 0, got {tolerance}")
    buckets: dict[tuple[int, int], list[int]] = {}
    for j, (x, y) in enumerate(b):
        buckets.setdefault((math.floor(x / tolerance), math.floor(y / tolerance)), []).append(j)
    candidates: list[tuple[float, int, int]] = []
    for i, (x, y) in enumerate(a):
        cx, cy = math.floor(x / tolerance), math.floor(y / tolerance)
        for dx in (-1, 0, 1):
            for dy in (-1, 0, 1):
                for j in buckets.get((cx + dx, cy + dy), ()):
                    d = math.hypot(b[j][0] - x, b[j][1] - y)
                    if d <= tolerance:
                        candidates.append((d, i, j))
    candidates.sort()
    used_a: set[int] = set()
    used_b: set[int] = set()
    pairs = []
    for d, i, j in candidates:
        if i not in used_a and j not in used_b:
            used_a.add(i)
            used_b.add(j)
            pairs.append((i, j, d))
    return pairs


def _rows(ds: Any, source: str) -> list[dict[str, Any]]:
    return list(ds.to_table(columns=_COLUMNS, filter=f"source = {sql_literal(source)}").to_pylist())


def _georeferenced(rows: Sequence[dict[str, Any]]) -> bool:
    return bool(rows) and all(r["crs"] and r["minx"] is not None for r in rows)


def _positions(
    before: list[dict[str, Any]],
    after: list[dict[str, Any]],
    tile_size: int,
    names: tuple[str, str],
) -> tuple[str, np.ndarray, np.ndarray, float]:
    """Pairing mode, positions of both captures in one frame, and half a tile."""
    geo_a, geo_b = _georeferenced(before), _georeferenced(after)
    if not geo_a and not geo_b:
        a = np.array([(r["col"], r["row"]) for r in before], np.float64)
        b = np.array([(r["col"], r["row"]) for r in after], np.float64)
        return "pixel", a, b, tile_size / 2.0
    if geo_a != geo_b:
        geo, plain = names if geo_a else names[::-1]
        raise InputError(
            f"--before/--after: {geo} is georeferenced and {plain} is not; "
            "compare two georeferenced captures or two plain co-registered images"
        )
    crs_a = {r["crs"] for r in before}
    crs_b = {r["crs"] for r in after}
    if len(crs_a) > 1 or len(crs_b) > 1:
        raise InputError(f"--before/--after: a source has tiles in several CRSs ({names})")
    ca, cb = crs_a.pop(), crs_b.pop()

    def half_tile(r: dict[str, Any]) -> float:
        return 0.5 * float(min(r["maxx"] - r["minx"], r["maxy"] - r["miny"]))

    if ca == cb:
        a = np.array([(r["minx"], r["miny"]) for r in before], np.float64)
        b = np.array([(r["minx"], r["miny"]) for r in after], np.float64)
        return "grid", a, b, min(half_tile(before[0]), half_tile(after[0]))
    a = np.array([((r["minx"] + r["maxx"]) / 2, (r["miny"] + r["maxy"]) / 2) for r in before])
    bx = [(r["minx"] + r["maxx"]) / 2 for r in after]
    by = [(r["miny"] + r["maxy"]) / 2 for r in after]
    tx, ty = transform_points(cb, ca, bx, by)
    half = half_tile(before[0])
    return "reprojected", a.astype(np.float64), np.stack([tx, ty], axis=1), half


def _distance(a: np.ndarray, b: np.ndarray, metric: str) -> np.ndarray:
    if metric == "l2":
        return np.asarray(np.linalg.norm(a - b, axis=1))
    na = np.linalg.norm(a, axis=1)
    nb = np.linalg.norm(b, axis=1)
    cos = (a * b).sum(axis=1) / np.maximum(na * nb, 1e-12)
    return np.asarray(1.0 - cos)


def diff(db: str, before: str, after: str, *, metric: str = "l2") -> DiffResult:
    """Pair the tiles of ``before`` and ``after`` (sources of ``db``, by path,
    file name or glob) by location and rank the pairs by fingerprint
    distance (``l2`` or ``cosine``, as in ``ris query``), largest first."""
    check_metric(metric)
    ds = open_dataset(db)
    params = dataset_params(ds)
    src_a = resolve_source(ds, before, "--before")
    src_b = resolve_source(ds, after, "--after")
    if src_a == src_b:
        raise InputError(f"--before and --after both name {src_a}; give two different captures")
    rows_a, rows_b = _rows(ds, src_a), _rows(ds, src_b)
    if not rows_a or not rows_b:
        empty = src_a if not rows_a else src_b
        raise QueryError(f"{empty} has no tiles in {ds.uri}")
    mode, pa_, pb_, half = _positions(rows_a, rows_b, params.tile_size, (src_a, src_b))
    pairs = pair_positions(pa_, pb_, half)
    if not pairs:
        raise QueryError(
            f"--before {src_a} and --after {src_b} share no tile locations "
            f"({mode} pairing within half a tile); are they captures of the same area?"
        )
    ia = [i for i, _, _ in pairs]
    ib = [j for _, j, _ in pairs]
    fa = np.stack([np.asarray(rows_a[i]["fingerprint"], np.float64) for i in ia])
    fb = np.stack([np.asarray(rows_b[j]["fingerprint"], np.float64) for j in ib])
    dist = _distance(fa, fb, metric)
    order = sorted(range(len(pairs)), key=lambda p: (-dist[p], rows_a[ia[p]]["tile_id"]))
    changes = []
    for rank, p in enumerate(order, start=1):
        ra, rb = rows_a[ia[p]], rows_b[ib[p]]
        changes.append(
            TileChange(
                rank=rank,
                distance=float(dist[p]),
                before_tile_id=ra["tile_id"],
                after_tile_id=rb["tile_id"],
                row=ra["row"],
                col=ra["col"],
                after_row=rb["row"],
                after_col=rb["col"],
                lon=ra["lon"],
                lat=ra["lat"],
                **{f: ra[f] for f in BOUNDS_FIELDS},
                offset=float(pairs[p][2] / (2 * half)),
                before_thumbnail=ra["thumbnail"],
                after_thumbnail=rb["thumbnail"],
            )
        )
    return DiffResult(
        db=str(ds.uri),
        before=src_a,
        after=src_b,
        metric=metric,
        pairing=mode,
        tile_size=params.tile_size,
        stride=params.stride,
        changes=changes,
        unmatched_before=len(rows_a) - len(pairs),
        unmatched_after=len(rows_b) - len(pairs),
    )
