"""k-nearest-neighbour queries over a ris_ray dataset.

The query vector is built from one or more *positives* and optional
*negatives*:

- positives: stored tiles (``tile_ids``), the tile containing a place
  (``lonlat`` in WGS84, or ``point`` in any ``point_crs``), a crop of an
  external image (``image`` with a pixel ``window`` or a ``bbox`` in the
  file's CRS, embedded with the dataset's own model), or, when none of these
  is given, a random stored tile (seeded);
- negatives: stored tiles (``negatives``) to steer away from.

``query = mean(positives) - alpha * mean(negatives)`` (Rocchio-style
feedback; with no negatives it is just the mean of the positives, and a
single positive is used as it is). The query tiles never rank themselves:
positives are excluded unless ``include_self``, negatives always.

Filters (:class:`ris_ray.filters.SearchFilter`) are applied *before* the
ranking (Lance prefilter), so ``k`` results come back whenever ``k`` rows
qualify. ``max_distance`` then drops results farther than ``D``: the
nearest rows within ``D`` are a prefix of the ranking, so it returns every
qualifying row up to ``k``, and fewer than ``k`` when fewer lie within ``D``.

The search is Lance's exact vector scan (``use_index=False``): every
fingerprint is compared, in Lance's chunked, vectorised scan. Distances:

- ``l2``: Euclidean distance ``||x - q||`` (Lance reports its square; we take
  the root so numbers read as distances),
- ``cosine``: ``1 - cos(x, q)``.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from typing import Any, Protocol

import numpy as np

from ris_ray.config import METRICS, check_metric
from ris_ray.errors import InputError, QueryError
from ris_ray.filters import SearchFilter, check_tile_id
from ris_ray.geo import WGS84, check_crs, fmt_coords, tiles_at
from ris_ray.records import TILE_REF_FIELDS, TileRef
from ris_ray.schema import dataset_params, fingerprint_type
from ris_ray.sql import sql_in
from ris_ray.store import open_dataset
from ris_ray.tiling import read_crop
from ris_ray.uris import is_remote

__all__ = [
    "DEFAULT_ALPHA",
    "METRICS",
    "RESULT_COLUMNS",
    "Neighbour",
    "QueryBackend",
    "QueryMember",
    "QueryResult",
    "QueryTile",
    "check_metric",
    "check_search",
    "half_candidates",
    "neighbour",
    "query",
    "rerank_float32",
    "search",
]


#: Weight of the negatives' mean in ``mean(pos) - alpha * mean(neg)``.
DEFAULT_ALPHA = 0.5
_RESULT_COLUMNS = [*TILE_REF_FIELDS, "thumbnail"]
#: Columns a result row carries (a :class:`QueryBackend` returns them, plus ``fingerprint``).
RESULT_COLUMNS = tuple(_RESULT_COLUMNS)


@dataclass
class QueryMember:
    """One tile or image crop that went into the query vector."""

    role: str  # "positive" | "negative"
    label: str
    tile_id: str | None = None
    source: str | None = None
    row: int | None = None
    col: int | None = None
    lon: float | None = None
    lat: float | None = None


@dataclass
class QueryTile:
    """What was searched for: a stored tile, a crop of an external image, or a
    combination of several (see ``members``).

    With a single positive, ``tile_id``/``source``/``row``/``col`` describe it;
    with several they are ``None`` and ``thumbnail``/``pixels`` show the first.
    """

    label: str
    tile_id: str | None = None
    source: str | None = None
    row: int | None = None
    col: int | None = None
    thumbnail: bytes | None = field(default=None, repr=False)
    pixels: np.ndarray | None = field(default=None, repr=False)
    lon: float | None = None
    lat: float | None = None
    members: list[QueryMember] = field(default_factory=list)
    alpha: float | None = None


@dataclass(kw_only=True)
class Neighbour(TileRef):
    """One search result: a stored tile (:class:`~ris_ray.records.TileRef`), its
    rank and distance to the query vector."""

    rank: int
    distance: float
    thumbnail: bytes | None = field(default=None, repr=False)


@dataclass
class QueryResult:
    query: QueryTile
    metric: str
    k: int
    model: str
    rows_scanned: int
    search_ms: float
    neighbours: list[Neighbour]
    filter: str | None = None
    max_distance: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (thumbnails and pixels left out)."""
        q = {k: v for k, v in asdict(self.query).items() if k not in ("thumbnail", "pixels")}
        return {
            "query": q,
            "metric": self.metric,
            "k": self.k,
            "model": self.model,
            "rows_scanned": self.rows_scanned,
            "search_ms": round(self.search_ms, 3),
            "filter": self.filter,
            "max_distance": self.max_distance,
            "neighbours": [
                {k: v for k, v in asdict(n).items() if k != "thumbnail"} for n in self.neighbours
            ],
        }


@dataclass
class _Part:
    vector: np.ndarray
    member: QueryMember
    thumbnail: bytes | None = None
    pixels: np.ndarray | None = None


def _part(row: dict[str, Any], role: str, label: str | None = None) -> _Part:
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
    return _Part(np.asarray(row["fingerprint"], np.float32), member, row["thumbnail"])


class QueryBackend(Protocol):
    """Where :func:`query` reads stored tiles and ranks rows. Without one,
    :func:`query` opens ``db`` and asks Lance for both; a long-lived process
    (``ris serve``) passes one that keeps vectors and metadata in memory."""

    @property
    def ds(self) -> Any:
        """The open Lance dataset (parameters, places, random tiles, filters)."""

    def stored(self, tile_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Rows (:data:`RESULT_COLUMNS` and ``fingerprint``) of the ids that exist, by id."""

    def search(
        self,
        vector: np.ndarray,
        k: int,
        metric: str,
        exclude: Sequence[str],
        *,
        filters: SearchFilter,
        where: str | None,
        max_distance: float | None,
        exact: bool,
    ) -> tuple[list[Neighbour], float]:
        """What :func:`search` returns, for ``filters`` (``where`` is their SQL)."""


def _stored(
    ds: Any,
    tile_ids: Sequence[str],
    role: str,
    option: str,
    backend: QueryBackend | None = None,
) -> list[_Part]:
    if not tile_ids:
        return []
    ids = [check_tile_id(t, option) for t in tile_ids]
    if backend is not None:
        rows = backend.stored(ids)
    else:
        cols = [*_RESULT_COLUMNS, "fingerprint"]
        table = ds.to_table(columns=cols, filter=sql_in("tile_id", ids))
        rows = {r["tile_id"]: r for r in table.to_pylist()}
    missing = [t for t in ids if t not in rows]
    if missing:
        raise QueryError(f"{option}: tile id {', '.join(missing)} is not in {ds.uri}")
    return [_part(rows[t], role) for t in ids]


def _random(ds: Any, seed: int | None) -> _Part:
    n = ds.count_rows()
    if n == 0:
        raise QueryError(f"{ds.uri} holds no tiles")
    index = int(np.random.default_rng(seed).integers(n))
    row = ds.take([index], columns=[*_RESULT_COLUMNS, "fingerprint"]).to_pylist()[0]
    return _part(row, "positive")


def _at_point(
    ds: Any, x: float, y: float, crs: str, option: str, backend: QueryBackend | None = None
) -> _Part:
    rows = tiles_at(ds, x, y, crs, columns=["tile_id", "valid_fraction"])
    if not rows:
        raise QueryError(
            f"{option}: no tile in {ds.uri} contains this point (only georeferenced files "
            "have locations; `ris info` lists the dataset, --bbox-wgs84 filters by area)"
        )
    best = min(rows, key=lambda r: (r["_centre_d"], -r["valid_fraction"], r["tile_id"]))
    part = _stored(ds, [best["tile_id"]], "positive", option, backend)[0]
    part.member.label = f"{best['tile_id']} (contains {option.split(' ', 1)[1]})"
    return part


def _image(
    ds: Any,
    image: str,
    window: tuple[int, int, int, int] | None,
    bbox: tuple[float, float, float, float] | None,
    weights_path: str | None,
    device: str,
) -> _Part:
    params = dataset_params(ds)
    label = image.rsplit("/", 1)[-1]
    if bbox is not None:
        label += f" [bbox {fmt_coords(bbox)}]"
    elif window is not None:
        label += f" [{','.join(map(str, window))}]"
    crop = read_crop(image, params.tile_size, window=window, bbox=bbox)  # one open
    pixels, window, centre = crop.pixels, crop.window, crop.centre
    from ris_ray.embed import Embedder  # torch: only for image queries
    from ris_ray.weights import weights_for_model

    embedder = Embedder(weights_for_model(params.model, weights_path), device=device)
    vector = embedder.embed(pixels[None])[0]
    source = image if is_remote(image) else os.path.abspath(image)
    member = QueryMember(
        role="positive",
        label=label,
        source=source,
        row=window[1] if window else None,
        col=window[0] if window else None,
        lon=centre[0] if centre else None,
        lat=centre[1] if centre else None,
    )
    return _Part(np.asarray(vector, np.float32), member, pixels=pixels)


def _dedupe(parts: list[_Part]) -> list[_Part]:
    seen: set[str] = set()
    out: list[_Part] = []
    for p in parts:
        if p.member.tile_id is not None:
            if p.member.tile_id in seen:
                continue
            seen.add(p.member.tile_id)
        out.append(p)
    return out


def _query_tile(pos: list[_Part], neg: list[_Part], alpha: float) -> QueryTile:
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


def _combine(conditions: list[str | None]) -> str | None:
    """AND the non-empty SQL conditions (``None`` when there are none)."""
    parts = [c for c in conditions if c]
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else " AND ".join(f"({p})" for p in parts)


def check_search(k: int, metric: str, max_distance: float | None) -> None:
    """Refuse ``k < 1``, an unknown metric or a negative/non-finite ``max_distance``."""
    check_metric(metric)
    if k < 1:
        raise InputError(f"--k {k}: must be >= 1")
    if max_distance is not None and not (math.isfinite(max_distance) and max_distance >= 0):
        raise InputError(f"--max-distance {max_distance}: must be a number >= 0")


def half_candidates(k: int) -> int:
    """Candidates fetched from Lance on a float16 dataset: ``2k + 16``.

    Lance scores float16 columns in reduced precision (relative error up to
    ~1.5 % measured on cosine distances of near-duplicates), so the top
    ``2k + 16`` by its score are re-ranked in float32 by :func:`rerank_float32`.
    """
    return 2 * k + 16


def rerank_float32(table: Any, vector: np.ndarray, metric: str, k: int) -> Any:
    """The ``k`` rows of ``table`` nearest ``vector``, with ``_distance``
    recomputed in float32 from the stored fingerprints (promoted exactly):
    ``sum((x - q)^2)`` for l2 (squared, as Lance reports it) or
    ``1 - x.q / (|x| |q|)`` for cosine; ties keep Lance's order."""
    import pyarrow as pa

    if table.num_rows == 0:
        return table
    fp = table.column("fingerprint").combine_chunks()
    x = fp.values.to_numpy(zero_copy_only=False).astype(np.float32).reshape(len(fp), -1)
    q = np.asarray(vector, np.float32).reshape(-1)
    if metric == "l2":
        d = np.square(x - q).sum(axis=1, dtype=np.float32)
    else:
        norms = np.linalg.norm(x, axis=1) * np.linalg.norm(q)
        d = np.float32(1.0) - (x @ q) / np.maximum(norms, np.float32(1e-30))
    order = np.argsort(d, kind="stable")[:k]
    out = table.take(pa.array(order))
    i = out.schema.get_field_index("_distance")
    return out.set_column(i, "_distance", pa.array(d[order], pa.float32()))


def search(
    ds: Any,
    vector: np.ndarray,
    k: int,
    metric: str = "l2",
    exclude: str | Sequence[str] | None = None,
    *,
    where: str | None = None,
    max_distance: float | None = None,
    exact: bool = False,
    filters: SearchFilter | None = None,
) -> tuple[list[Neighbour], float]:
    """Top-``k`` over the rows passing ``where`` (minus the tile ids in
    ``exclude``), prefiltered; then results beyond ``max_distance`` are
    dropped. Returns neighbours and the search time in ms.

    Exact (every row compared) unless the dataset has an index for
    ``metric`` (see :mod:`ris_ray.index`) and ``exact`` is False: then
    Lance's IVF_PQ search probes ``ANN_NPROBES`` partitions and re-ranks
    ``k * ANN_REFINE`` candidates with exact distances. ``filters`` is
    unused (``where`` is their SQL); it makes the signature that of
    :meth:`QueryBackend.search`. On a float16 dataset the distances are
    recomputed in float32 (see :func:`half_candidates`).
    """
    check_search(k, metric, max_distance)
    from ris_ray.index import ANN_NPROBES, ANN_REFINE, vector_index

    half = fingerprint_type(ds) == "float16"
    nearest: dict[str, Any] = {
        "column": "fingerprint",
        "q": vector.astype(np.float32),
        "k": half_candidates(k) if half else k,
        "metric": metric,
        "use_index": False,
    }
    if not exact and vector_index(ds, metric) is not None:
        nearest.update(use_index=True, nprobes=ANN_NPROBES, refine_factor=ANN_REFINE)
    ids = [exclude] if isinstance(exclude, str) else list(exclude or ())
    excluded = sql_in("tile_id", [check_tile_id(t) for t in ids], negate=True) if ids else None
    sql = _combine([excluded, where])
    kw: dict[str, Any] = {"filter": sql, "prefilter": True} if sql else {}
    t0 = time.perf_counter()
    columns = [*_RESULT_COLUMNS, "_distance", *(["fingerprint"] if half else [])]
    table = ds.to_table(columns=columns, nearest=nearest, **kw)
    if half:
        table = rerank_float32(table, vector, metric, k)
    ms = (time.perf_counter() - t0) * 1000.0
    out: list[Neighbour] = []
    for row in table.to_pylist():
        d = float(row["_distance"])
        d = float(np.sqrt(max(d, 0.0))) if metric == "l2" else d
        if max_distance is not None and d > max_distance:
            break
        out.append(neighbour(len(out) + 1, d, row))
    return out, ms


def neighbour(rank: int, distance: float, row: dict[str, Any]) -> Neighbour:
    """The one way to build a :class:`Neighbour`: from a row holding
    :data:`RESULT_COLUMNS` (``thumbnail`` optional)."""
    return Neighbour(
        rank=rank,
        distance=distance,
        thumbnail=row.get("thumbnail"),
        **{c: row[c] for c in TILE_REF_FIELDS},
    )


def _check_image_args(
    image: str | None,
    window: tuple[int, int, int, int] | None,
    bbox: tuple[float, float, float, float] | None,
) -> None:
    if window is not None and image is None:
        raise InputError("--window needs --image")
    if bbox is not None and image is None:
        raise InputError("--bbox needs --image")
    if window is not None and bbox is not None:
        raise InputError("give only one of --window, --bbox")


def _check_ids(positives: Sequence[str], negatives: Sequence[str]) -> None:
    for t in positives:
        check_tile_id(t, "--tile-id")
    for t in negatives:
        check_tile_id(t, "--not")
    both = sorted(set(positives) & set(negatives))
    if both:
        raise InputError(f"--not {both[0]}: also given as --tile-id; a tile is one or the other")


def query(
    db: str,
    *,
    tile_id: str | Sequence[str] | None = None,
    image: str | None = None,
    window: tuple[int, int, int, int] | None = None,
    bbox: tuple[float, float, float, float] | None = None,
    lonlat: tuple[float, float] | None = None,
    point: tuple[float, float] | None = None,
    point_crs: str | None = None,
    negatives: Sequence[str] = (),
    alpha: float = DEFAULT_ALPHA,
    seed: int | None = None,
    k: int = 10,
    metric: str = "l2",
    include_self: bool = False,
    filters: SearchFilter | None = None,
    exclude_same_source: bool = False,
    max_distance: float | None = None,
    weights_path: str | None = None,
    device: str = "auto",
    exact: bool = False,
    backend: QueryBackend | None = None,
) -> QueryResult:
    """Answer one k-NN query against the dataset at ``db``.

    Positives: any mix of ``tile_id`` (one id or several), ``lonlat``,
    ``point`` (with ``point_crs``) and ``image`` (optionally with ``window``
    = col,row,width,height or ``bbox`` = minx,miny,maxx,maxy in the file's
    CRS); with none of them, a random tile chosen with ``seed``. They are
    averaged; ``negatives`` (tile ids) are subtracted with weight ``alpha``.

    A place is resolved to the stored tile whose bounds contain it; when
    several do (overlapping captures, stride < tile), the one whose centre is
    nearest (in tile units) wins, then the higher valid fraction.

    ``filters`` restrict the rows ranked; ``exclude_same_source`` also leaves
    out every file a positive comes from. ``backend`` (see
    :class:`QueryBackend`) answers instead of opening ``db``.
    """
    _check_image_args(image, window, bbox)
    if (point is None) != (point_crs is None):
        raise InputError("--point X,Y needs --crs EPSG:NNNN (and --crs needs --point)")
    if not (math.isfinite(alpha) and alpha >= 0):
        raise InputError(f"--alpha {alpha}: must be a number >= 0")
    pos_ids = [tile_id] if isinstance(tile_id, str) else list(tile_id or ())
    _check_ids(pos_ids, negatives)
    if point_crs is not None:
        check_crs(point_crs)

    ds = backend.ds if backend is not None else open_dataset(db)
    params = dataset_params(ds)
    pos: list[_Part] = []
    if lonlat is not None:
        pos.append(_at_point(ds, *lonlat, WGS84, f"--lonlat {fmt_coords(lonlat)}", backend))
    if point is not None and point_crs is not None:
        pos.append(_at_point(ds, *point, point_crs, f"--point {fmt_coords(point)}", backend))
    pos += _stored(ds, pos_ids, "positive", "--tile-id", backend)
    if image is not None:
        pos.append(_image(ds, image, window, bbox, weights_path, device))
    pos = _dedupe(pos or [_random(ds, seed)])
    neg = _dedupe(_stored(ds, list(negatives), "negative", "--not", backend))
    clash = {p.member.tile_id for p in pos if p.member.tile_id} & {
        n.member.tile_id for n in neg if n.member.tile_id
    }
    if clash:
        raise InputError(f"--not {sorted(clash)[0]}: that tile is also a positive of this query")

    vector = np.mean([p.vector for p in pos], axis=0)
    if neg:
        vector = vector - alpha * np.mean([n.vector for n in neg], axis=0)

    exclude = [n.member.tile_id for n in neg if n.member.tile_id]
    if not include_self:
        exclude += [p.member.tile_id for p in pos if p.member.tile_id]
    f = filters or SearchFilter()
    if exclude_same_source:
        own = tuple(p.member.source for p in pos if p.member.source)
        f = replace(f, exclude_sources=(*f.exclude_sources, *own))
    where = f.to_sql(ds)
    rank = backend.search if backend is not None else partial(search, ds)
    neighbours, ms = rank(
        vector, k, metric, exclude, filters=f, where=where, max_distance=max_distance, exact=exact
    )
    shown = _combine([sql_in("tile_id", exclude, negate=True) if exclude else None, where])
    return QueryResult(
        _query_tile(pos, neg, alpha),
        metric,
        k,
        params.model,
        ds.count_rows(),
        ms,
        neighbours,
        filter=shown,
        max_distance=max_distance,
    )
