"""What goes into a query vector: stored tiles, a random tile, the tile at a
place, a crop of an external image, as positives and negatives.

Each becomes a :class:`Part` (its vector and the
:class:`~ris_ray.search.results.QueryMember` describing it);
:func:`query_tile` describes the combination that was searched for. Stored
tiles are looked up in whichever dataset of a
:class:`~ris_ray.search.shards.Shards` holds them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ris_ray.core.errors import QueryError
from ris_ray.core.location import Location
from ris_ray.raster.geo import fmt_coords, tiles_at
from ris_ray.raster.reading import read_crop
from ris_ray.search.filters import check_tile_id
from ris_ray.search.results import QueryBackend, QueryMember, QueryTile
from ris_ray.search.shards import Shards
from ris_ray.store.schema import DatasetParams

__all__ = [
    "Part",
    "dedupe",
    "image_part",
    "part_at_point",
    "part_of_row",
    "query_tile",
    "random_part",
    "stored_parts",
]


@dataclass
class Part:
    vector: np.ndarray
    member: QueryMember
    thumbnail: bytes | None = None
    pixels: np.ndarray | None = None


def part_of_row(row: dict[str, Any], role: str, label: str | None = None) -> Part:
    member = QueryMember(
        role=role,
        label=label or row["tile_id"],
        tile_id=row["tile_id"],
        source=row["source"],
        row=row["row"],
        col=row["col"],
        lon=row["lon"],
        lat=row["lat"],
    )
    return Part(np.asarray(row["fingerprint"], np.float32), member, row["thumbnail"])


def stored_parts(
    shards: Shards,
    tile_ids: Sequence[str],
    role: str,
    option: str,
    backend: QueryBackend | None = None,
) -> list[Part]:
    """The stored tiles ``tile_ids``, each from whichever dataset holds it
    (through ``backend`` when given); :class:`QueryError` names any missing."""
    if not tile_ids:
        return []
    ids = [check_tile_id(t, option) for t in tile_ids]
    rows = backend.stored(ids) if backend is not None else shards.stored(ids)
    missing = [t for t in ids if t not in rows]
    if missing:
        raise QueryError(f"{option}: tile id {', '.join(missing)} is not in {shards.label}")
    return [part_of_row(rows[t], role) for t in ids]


def random_part(shards: Shards, seed: int | None) -> Part:
    """A stored tile drawn with ``seed`` from all rows of ``shards``, uniformly."""
    n = shards.count_rows()
    if n == 0:
        several = len(shards.datasets) > 1
        raise QueryError(f"{'none of ' if several else ''}{shards.uri} holds no tiles")
    index = int(np.random.default_rng(seed).integers(n))
    return part_of_row(shards.take(index), "positive")


def part_at_point(
    shards: Shards,
    x: float,
    y: float,
    crs: str,
    option: str,
    backend: QueryBackend | None = None,
) -> Part:
    """The stored tile containing ``(x, y)`` (in ``crs``) in any of ``shards``;
    of several, the one whose centre is nearest, then the higher valid fraction."""
    rows = [
        r
        for ds in shards.datasets
        for r in tiles_at(ds, x, y, crs, columns=["tile_id", "valid_fraction"])
    ]
    if not rows:
        raise QueryError(
            f"{option}: no tile in {shards.label} contains this point (only georeferenced "
            "files have locations; `ris info` lists the dataset, --bbox-wgs84 filters by area)"
        )
    best = min(rows, key=lambda r: (r["_centre_d"], -r["valid_fraction"], r["tile_id"]))
    part = stored_parts(shards, [best["tile_id"]], "positive", option, backend)[0]
    part.member.label = f"{best['tile_id']} (contains {option.split(' ', 1)[1]})"
    return part


def image_part(
    params: DatasetParams,
    image: str,
    window: tuple[int, int, int, int] | None,
    bbox: tuple[float, float, float, float] | None,
    weights_path: str | None,
    device: str,
) -> Part:
    """A crop of ``image`` embedded with the model and tile size of ``params``."""
    label = image.rsplit("/", 1)[-1]
    if bbox is not None:
        label += f" [bbox {fmt_coords(bbox)}]"
    elif window is not None:
        label += f" [{','.join(map(str, window))}]"
    crop = read_crop(image, params.tile_size, window=window, bbox=bbox)  # one open
    pixels, window, centre = crop.pixels, crop.window, crop.centre
    from ris_ray.model.embed import Embedder  # torch: only for image queries
    from ris_ray.model.weights import weights_for_model

    embedder = Embedder(weights_for_model(params.model, weights_path), device=device)
    vector = embedder.embed(pixels[None])[0]
    source = Location.parse(image).url  # as ingest stores it (absolute, s3://)
    member = QueryMember(
        role="positive",
        label=label,
        source=source,
        row=window[1] if window else None,
        col=window[0] if window else None,
        lon=centre[0] if centre else None,
        lat=centre[1] if centre else None,
    )
    return Part(np.asarray(vector, np.float32), member, pixels=pixels)


def dedupe(parts: list[Part]) -> list[Part]:
    seen: set[str] = set()
    out: list[Part] = []
    for p in parts:
        if p.member.tile_id is not None:
            if p.member.tile_id in seen:
                continue
            seen.add(p.member.tile_id)
        out.append(p)
    return out


def query_tile(pos: list[Part], neg: list[Part], alpha: float) -> QueryTile:
    members = [p.member for p in (*pos, *neg)]
    first = pos[0]
    suffix = f" − {alpha:g}·mean of {len(neg)} negative(s)" if neg else ""
    if len(pos) == 1:
        m = first.member
        return QueryTile(
            label=m.label + suffix,
            tile_id=m.tile_id,
            source=m.source,
            row=m.row,
            col=m.col,
            thumbnail=first.thumbnail,
            pixels=first.pixels,
            lon=m.lon,
            lat=m.lat,
            members=members,
            alpha=alpha if neg else None,
        )
    return QueryTile(
        label=f"mean of {len(pos)} positives{suffix}",
        thumbnail=first.thumbnail,
        pixels=first.pixels,
        members=members,
        alpha=alpha if neg else None,
    )
