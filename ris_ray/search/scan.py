"""An in-memory exact scan: all fingerprints held in RAM as float32 blocks.

For a long-lived process that answers many queries (a service, a notebook,
the benchmark's "warm" case) this keeps the vectors in RAM and scores a
query with one matrix-vector product per chunk, which is memory-bandwidth
bound like FAISS's flat index:

``||x - q||^2 = ||x||^2 - 2 x.q + ||q||^2``, so rows are ranked by the key
``||x||^2 / 2 - x.q`` (cosine: ``-x.q / ||x||``), norms precomputed. A pool of
the best ``m = 2k + 8`` keys so far gives a threshold ``tau``; each later chunk
only keeps rows whose key is ``<= tau`` (a compare, not a sort), so the cost
beyond the matrix-vector product is a few milliseconds per million rows. The
pool's distances are finally recomputed exactly in float64, so near-ties and
near-zero distances are not float32 round-off (the margin over ``k`` keeps a
true neighbour that round-off ranked just below the k-th).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ris_ray.core.config import METRICS, check_metric  # METRICS re-exported: checks live in config

__all__ = ["METRICS", "FlatScan"]


class FlatScan:
    """Exact k-NN over an ``(N, D)`` matrix (``l2`` or ``cosine``).

    The vectors are kept as column blocks of ``chunk_rows`` rows, each a
    C-contiguous ``(D, rows)`` array: scoring a block is then BLAS's
    non-transposed ``sgemv`` (``q @ block``), which streams memory faster
    here than the transposed one that ``x @ q`` on an ``(N, D)`` matrix uses
    (60 vs 85 ms per million 512-d rows on 2 cores).
    """

    def __init__(
        self, vectors: np.ndarray, ids: Sequence[str] | None = None, chunk_rows: int = 1 << 16
    ) -> None:
        v = np.asarray(vectors)
        if v.ndim != 2:
            raise ValueError(f"expected an (N, D) matrix, got shape {v.shape}")
        self.n, self.dim = int(v.shape[0]), int(v.shape[1])
        self.chunk_rows = chunk_rows
        self.blocks = [
            np.ascontiguousarray(v[s : s + chunk_rows].T, dtype=np.float32)
            for s in range(0, self.n, chunk_rows)
        ]
        self.ids = list(ids) if ids is not None else None
        sq = np.concatenate([np.einsum("ij,ij->j", b, b) for b in self.blocks] or [np.empty(0)])
        self.half_sq = (0.5 * sq).astype(np.float32)
        self.neg_inv_norm = (-1.0 / (np.sqrt(sq) + 1e-30)).astype(np.float32)

    def __len__(self) -> int:
        return self.n

    def rows(self, idx: np.ndarray | Sequence[int]) -> np.ndarray:
        """The float32 vectors of the given row indexes, as an ``(len(idx), D)`` array."""
        idx = np.asarray(idx, dtype=np.int64).reshape(-1)
        block, col = np.divmod(idx, self.chunk_rows)
        out = np.empty((len(idx), self.dim), dtype=np.float32)
        for b in np.unique(block):
            sel = block == b
            out[sel] = self.blocks[int(b)][:, col[sel]].T
        return out

    @classmethod
    def from_dataset(cls, ds: Any) -> FlatScan:
        """Load every fingerprint (and tile id) of a Lance dataset."""
        t = ds.to_table(columns=["tile_id", "fingerprint"])
        fp = t.column("fingerprint").combine_chunks()
        dim = t.schema.field("fingerprint").type.list_size  # explicit: 0 rows reshape too
        x = fp.values.to_numpy(zero_copy_only=False).reshape(len(fp), dim)
        return cls(x, t.column("tile_id").to_pylist())

    def search(
        self, q: np.ndarray, k: int, metric: str = "l2", allow: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Row indexes and distances of the ``k`` nearest rows, nearest first,
        equal distances in ``ids`` order when given (only rows where the
        boolean mask ``allow`` is true, when given)."""
        check_metric(metric)
        q32 = np.asarray(q, dtype=np.float32).reshape(-1)
        n = self.n
        k = min(k, n)
        if k <= 0:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float64)
        m = 2 * k + 8
        scale = self.half_sq if metric == "l2" else self.neg_inv_norm
        pool_idx = np.empty(0, dtype=np.int64)
        pool_key = np.empty(0, dtype=np.float32)
        tau = np.float32(np.inf)
        for b, block in enumerate(self.blocks):
            start = b * self.chunk_rows
            key = q32 @ block
            part = scale[start : start + len(key)]
            if metric == "l2":
                np.subtract(part, key, out=key)
            else:
                np.multiply(key, part, out=key)
            sel = np.flatnonzero(key <= tau) if len(pool_idx) >= m else np.arange(len(key))
            if allow is not None:
                sel = sel[allow[start + sel]]
            pool_idx = np.concatenate([pool_idx, sel + start])
            pool_key = np.concatenate([pool_key, key[sel]])
            if len(pool_idx) > m:
                top = np.argpartition(pool_key, m - 1)[:m]
                pool_idx, pool_key = pool_idx[top], pool_key[top]
            if len(pool_idx) >= m:
                tau = pool_key.max()
        exact = self._exact(pool_idx, q32, metric)
        # Equal distances in tile_id order (as ris query's), else in row order.
        tie = pool_idx if self.ids is None else np.array([self.ids[i] for i in pool_idx], object)
        order = np.lexsort((tie, exact))[:k]
        return pool_idx[order], exact[order]

    def _exact(self, rows: np.ndarray, q: np.ndarray, metric: str) -> np.ndarray:
        x = self.rows(rows).astype(np.float64)
        q64 = q.astype(np.float64)
        if metric == "l2":
            return np.asarray(np.sqrt(((x - q64) ** 2).sum(axis=1)))
        return np.asarray(1.0 - (x @ q64) / (np.linalg.norm(x, axis=1) * np.linalg.norm(q64)))
