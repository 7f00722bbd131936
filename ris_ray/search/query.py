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

Filters (:class:`ris_ray.search.filters.SearchFilter`) are applied *before* the
ranking (Lance prefilter), so ``k`` results come back whenever ``k`` rows
qualify. ``max_distance`` then drops results farther than ``D``: the
nearest rows within ``D`` are a prefix of the ranking, so it returns every
qualifying row up to ``k``, and fewer than ``k`` when fewer lie within ``D``.

The search is Lance's exact vector scan (``use_index=False``): every
fingerprint is compared, in Lance's chunked, vectorised scan. Distances:

- ``l2``: Euclidean distance ``||x - q||`` (Lance reports its square; we take
  the root so numbers read as distances),
- ``cosine``: ``1 - cos(x, q)``.

Several datasets of one model and tile size (``ris query --db A --db B``) are
searched as one: each in its own thread, the results merged into one top-k
(:func:`search_many`, :mod:`ris_ray.search.shards`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from functools import partial
from typing import Any

import numpy as np

from ris_ray.core.config import METRICS, check_metric
from ris_ray.core.errors import InputError
from ris_ray.core.records import TILE_REF_FIELDS
from ris_ray.core.sql import sql_in
from ris_ray.raster.geo import WGS84, check_crs, fmt_coords
from ris_ray.search.examples import (
    Part,
    dedupe,
    image_part,
    part_at_point,
    query_tile,
    random_part,
    stored_parts,
)
from ris_ray.search.filters import SearchFilter, check_tile_id
from ris_ray.search.results import (
    DEFAULT_ALPHA,
    RESULT_COLUMNS,
    Neighbour,
    QueryBackend,
    QueryMember,
    QueryResult,
    QueryTile,
)
from ris_ray.search.shards import Shards, merge, open_shards
from ris_ray.store.schema import fingerprint_type

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
    "search_many",
]

#: Most datasets :func:`search_many` searches at once (each scan is itself parallel).
MAX_PARALLEL_SEARCHES = 8


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
    ``1 - x.q / (|x| |q|)`` for cosine; equal distances in ``tile_id`` order."""
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
    ids = np.asarray(table.column("tile_id").to_pylist(), dtype=object)
    order = np.lexsort((ids, d))[:k]
    out = table.take(pa.array(order))
    i = out.schema.get_field_index("_distance")
    return out.set_column(i, "_distance", pa.array(d[order], pa.float32()))


#: Rows fetched beyond ``k`` on a float32 dataset, so that tiles tied at the
#: k-th distance (copies of one scene) are chosen by ``tile_id``, not by
#: the order Lance met them in.
TIE_MARGIN = 8


def _ties_by_id(table: Any, k: int) -> Any:
    """The first ``k`` of ``table`` (Lance's nearest rows) with equal distances
    in ``tile_id`` order, so the answer does not depend on the order rows
    were written in."""
    if table.num_rows < 2:
        return table
    return table.sort_by([("_distance", "ascending"), ("tile_id", "ascending")]).slice(0, k)


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
    ``metric`` (see :mod:`ris_ray.search.index`) and ``exact`` is False: then
    Lance's IVF_PQ search probes ``ANN_NPROBES`` partitions and re-ranks
    ``k * ANN_REFINE`` candidates with exact distances. ``filters`` is
    unused (``where`` is their SQL); it makes the signature that of
    :meth:`QueryBackend.search`. On a float16 dataset the distances are
    recomputed in float32 (see :func:`half_candidates`).
    """
    check_search(k, metric, max_distance)
    from ris_ray.search.index import ANN_NPROBES, ANN_REFINE, vector_index

    half = fingerprint_type(ds) == "float16"
    nearest: dict[str, Any] = {
        "column": "fingerprint",
        "q": vector.astype(np.float32),
        "k": half_candidates(k) if half else k + TIE_MARGIN,
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
    columns = [*RESULT_COLUMNS, "_distance", *(["fingerprint"] if half else [])]
    table = ds.to_table(columns=columns, nearest=nearest, **kw)
    table = rerank_float32(table, vector, metric, k) if half else _ties_by_id(table, k)
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


def search_many(
    shards: Shards,
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
    """:func:`search` over each dataset of ``shards`` merged into one top-``k``
    by distance (:func:`~ris_ray.search.shards.merge`), and the wall time in ms.

    The datasets are searched in parallel threads (Lance scans without the
    GIL); each neighbour names its dataset. On the exact path the result is
    that of :func:`search` over one dataset holding every row. With a single
    dataset this is :func:`search` itself.
    """
    kw: dict[str, Any] = dict(where=where, max_distance=max_distance, exact=exact)
    if len(shards.datasets) == 1:
        return search(shards.datasets[0], vector, k, metric, exclude, **kw)
    check_search(k, metric, max_distance)

    def one(ds: Any) -> list[Neighbour]:
        found, _ = search(ds, vector, k, metric, exclude, **kw)
        return [replace(n, dataset=str(ds.uri)) for n in found]

    t0 = time.perf_counter()
    workers = min(len(shards.datasets), MAX_PARALLEL_SEARCHES)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ris-search") as pool:
        ranked = list(pool.map(one, shards.datasets))
    return merge(ranked, k), (time.perf_counter() - t0) * 1000.0


def _open(db: str | Sequence[str], backend: QueryBackend | None) -> Shards:
    """The datasets a query reads: ``backend``'s own, else those at ``db``."""
    if backend is not None:
        return Shards.of([backend.ds])
    return open_shards([db] if isinstance(db, str) else db)


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
    db: str | Sequence[str],
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
    """Answer one k-NN query against the dataset at ``db``, or the datasets
    (one model and tile size) when ``db`` is a sequence: each is searched and
    the results merged into one top-k (:func:`search_many`); stored tiles and
    places are found in whichever dataset holds them.

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

    shards = _open(db, backend)
    pos: list[Part] = []
    if lonlat is not None:
        at = f"--lonlat {fmt_coords(lonlat)}"
        pos.append(part_at_point(shards, *lonlat, WGS84, at, backend))
    if point is not None and point_crs is not None:
        at = f"--point {fmt_coords(point)}"
        pos.append(part_at_point(shards, *point, point_crs, at, backend))
    pos += stored_parts(shards, pos_ids, "positive", "--tile-id", backend)
    if image is not None:
        pos.append(image_part(shards.params, image, window, bbox, weights_path, device))
    pos = dedupe(pos or [random_part(shards, seed)])
    neg = dedupe(stored_parts(shards, list(negatives), "negative", "--not", backend))
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
    where = f.to_sql(*shards.datasets)
    rank = backend.search if backend is not None else partial(search_many, shards)
    neighbours, ms = rank(
        vector, k, metric, exclude, filters=f, where=where, max_distance=max_distance, exact=exact
    )
    shown = _combine([sql_in("tile_id", exclude, negate=True) if exclude else None, where])
    return QueryResult(
        query_tile(pos, neg, alpha),
        metric,
        k,
        shards.params.model,
        shards.count_rows(),
        ms,
        neighbours,
        filter=shown,
        max_distance=max_distance,
    )
