"""Approximate-nearest-neighbour indexes on the fingerprint column.

An exact scan reads every fingerprint (2 KB a tile); past a few million
tiles an IVF_PQ index (Lance's) answers from a few partitions of compressed
codes and re-ranks the best candidates exactly. ``ris query`` uses an index
built for its metric when one exists; ``--exact`` forces the full scan.
New rows added after the build are still found (Lance scans unindexed
fragments exactly); ingest folds them into the index (``optimize_indices``).
"""

from __future__ import annotations

import math
import time
from typing import Any

from ris_ray.core.config import FINGERPRINT_DIM, check_metric
from ris_ray.core.errors import InputError
from ris_ray.core.location import Location
from ris_ray.store.dataset import open_dataset, trained_rows_key
from ris_ray.store.tilestore import TileStore

__all__ = [
    "ANN_NPROBES",
    "ANN_REFINE",
    "build_index",
    "index_name",
    "refresh_indices",
    "vector_index",
]

#: Partitions probed per query and the exact re-rank factor (k * refine candidates).
ANN_NPROBES = 32
ANN_REFINE = 50  # 1M synthetic vectors: recall@10 0.71 at 10, 0.97 at 50 (15 ms)


def index_name(metric: str) -> str:
    return f"fingerprint_ivf_pq_{metric}"


def vector_index(ds: Any, metric: str) -> str | None:
    """Name of the fingerprint index built for ``metric``, if the dataset has one."""
    wanted = index_name(metric)
    return wanted if any(idx.name == wanted for idx in ds.describe_indices()) else None


def build_index(
    db: str | Location,
    *,
    metric: str = "l2",
    partitions: int | None = None,
    sub_vectors: int = 64,
    lock_wait_s: float = 0.0,
) -> dict[str, Any]:
    """Build (or rebuild) an IVF_PQ index for ``metric``, holding the writer lock
    (waiting up to ``lock_wait_s`` for a running ingest).

    Defaults: ``partitions = sqrt(rows)`` (Lance's rule of thumb, at least 1,
    at most 4096) and 64 sub-vectors of 8 dimensions each (64 bytes per tile).
    """
    check_metric(metric)
    loc = Location.parse(db)
    open_dataset(loc)  # a missing or foreign dataset fails before the lock
    with TileStore.for_writing(loc, lock_wait_s=lock_wait_s):  # one writer (ris_ray.store.lock)
        return _build(str(db), open_dataset(loc), metric, partitions, sub_vectors)


def _build(
    db: str, ds: Any, metric: str, partitions: int | None, sub_vectors: int
) -> dict[str, Any]:
    rows = ds.count_rows()
    if rows < 256:
        raise InputError(f"{db}: {rows} rows is too few for an index; exact search is fast")
    parts = partitions or min(4096, max(1, round(math.sqrt(rows))))
    if FINGERPRINT_DIM % sub_vectors:
        raise InputError(f"--sub-vectors {sub_vectors}: must divide {FINGERPRINT_DIM}")
    t0 = time.perf_counter()
    ds.create_index(
        "fingerprint",
        index_type="IVF_PQ",
        name=index_name(metric),
        metric=metric,
        num_partitions=parts,
        num_sub_vectors=sub_vectors,
        replace=True,
    )
    ds.update_config({trained_rows_key(index_name(metric)): str(rows)})  # for ris info
    return {
        "name": index_name(metric),
        "rows": rows,
        "partitions": parts,
        "sub_vectors": sub_vectors,
        "seconds": round(time.perf_counter() - t0, 2),
    }


def refresh_indices(db: str) -> bool:
    """Fold rows added since the last build into the dataset's indexes, if any."""
    return TileStore(db).refresh_indices()
