"""What ``ris serve`` keeps in memory between requests, and when it reloads.

A :class:`Snapshot` is one dataset version held open: the Lance dataset,
the result metadata (tile id, source, row/col, lon/lat, bounds; no
thumbnails) as an Arrow table, ``tile_id -> row`` positions, and every
fingerprint in a :class:`ris_ray.search.scan.FlatScan` (loaded at once when the
dataset has no l2 index, else on the first query that needs it). It is a
:class:`ris_ray.search.query.QueryBackend`, so :func:`ris_ray.search.query.query` answers
through it with the CLI's own logic (validation, positives/negatives,
``mean(pos) - alpha * mean(neg)``, filters, result records):

- stored tiles are looked up in memory instead of a filtered scan;
- ranking: when the dataset has an IVF_PQ index for the metric (and the
  query is not ``exact``), Lance's ANN search (:func:`ris_ray.search.query.search`)
  as in the CLI, asked for ``k + len(exclude)`` rows and the query's own
  tiles dropped afterwards (no ``tile_id NOT IN`` prefilter, which scans the
  id column); otherwise the exact in-memory scan, with the filters applied
  as a boolean row mask (:func:`filter_mask`, the numpy twin of
  :meth:`ris_ray.search.filters.SearchFilter.to_sql`).

:class:`Session` hands out the current snapshot and, at most once per
``check_every`` seconds, asks Lance for the latest version; a newer one is
loaded and swapped in (requests in flight keep the snapshot they started
with), so a new ingest shows up without a restart.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np
import pyarrow as pa

from ris_ray.core.config import METRICS
from ris_ray.core.errors import DatasetError, RisError
from ris_ray.core.location import Location
from ris_ray.core.records import TILE_REF_FIELDS
from ris_ray.search.filters import SearchFilter, check_tile_id, match_sources
from ris_ray.search.index import vector_index
from ris_ray.search.query import Neighbour, check_search, neighbour, search
from ris_ray.search.scan import FlatScan
from ris_ray.store.dataset import lance_dataset, open_dataset

__all__ = ["DatasetUnavailable", "Session", "Snapshot", "filter_mask"]

log = logging.getLogger(__name__)
#: Searches running at once, process-wide: one per core. More requests wait
#: here rather than all thrashing the cores (throughput holds under load).
SEARCH_SLOTS = threading.BoundedSemaphore(os.cpu_count() or 2)
_META_COLUMNS = list(TILE_REF_FIELDS)  # a result row without its thumbnail
T = TypeVar("T")


def filter_mask(
    f: SearchFilter,
    sources: Sequence[str],
    codes: np.ndarray,
    lon: np.ndarray,
    lat: np.ndarray,
) -> np.ndarray | None:
    """Rows passing ``f`` as a boolean mask (``None``: every row passes).

    ``codes[i]`` is row i's index into ``sources``. Same rules as
    :meth:`SearchFilter.to_sql`: a row passes when its source matches one of
    the globs, its centre lies in ``bbox_wgs84`` (``W > E`` wraps the
    antimeridian; rows without lon/lat never do) and it is not excluded.
    """
    allow: np.ndarray | None = None

    def keep(mask: np.ndarray) -> None:
        nonlocal allow
        allow = mask if allow is None else allow & mask

    if f.sources:
        chosen = {s for p in f.sources for s in match_sources(sources, p)}
        keep(np.isin(codes, [i for i, s in enumerate(sources) if s in chosen]))
    if f.bbox_wgs84 is not None:
        w, s, e, n = f.bbox_wgs84
        with np.errstate(invalid="ignore"):
            in_lon = (lon >= w) & (lon <= e) if w <= e else (lon >= w) | (lon <= e)
            keep(in_lon & (lat >= s) & (lat <= n))
    if f.exclude_sources:
        gone = set(f.exclude_sources)
        keep(~np.isin(codes, [i for i, s in enumerate(sources) if s in gone]))
    return allow


class Snapshot:
    """One dataset version held open for queries (a :class:`QueryBackend`)."""

    def __init__(self, ds: Any, key: tuple[object, ...] = ()) -> None:
        self._ds = ds
        self.version = int(ds.version)
        #: What identifies this version (see :meth:`Session.identity`); ``tag``:
        #: a short digest of it, in thumbnail URLs so that they can be cached for good.
        self.key = key or (self.version,)
        self.tag = hashlib.sha256(repr(self.key).encode()).hexdigest()[:16]
        self.meta: pa.Table = ds.to_table(columns=_META_COLUMNS).combine_chunks()
        self.rows = self.meta.num_rows
        self.positions = {t: i for i, t in enumerate(self.meta.column("tile_id").to_pylist())}
        encoded = self.meta.column("source").dictionary_encode().combine_chunks()
        self.sources: list[str] = encoded.dictionary.to_pylist()
        self.codes = encoded.indices.to_numpy(zero_copy_only=False)
        self.lon = self.meta.column("lon").to_numpy(zero_copy_only=False).astype(np.float64)
        self.lat = self.meta.column("lat").to_numpy(zero_copy_only=False).astype(np.float64)
        self.indexes = {m: vector_index(ds, m) for m in METRICS}
        self.cache: dict[str, Any] = {}  # per-version derived data (footprints, ...)
        self._scan: FlatScan | None = None
        self._scan_lock = threading.Lock()
        if not self.indexes["l2"]:  # the default query ranks with the exact scan
            self.scan()

    def scan(self) -> FlatScan:
        """The in-memory exact scan, loaded on first use (every fingerprint:
        4 bytes x 512 per tile); with an index, only an exact query needs it."""
        with self._scan_lock:
            if self._scan is None:
                self._scan = FlatScan.from_dataset(self._ds)
            return self._scan

    @property
    def ds(self) -> Any:
        return self._ds

    def row_dicts(self, positions: Sequence[int] | np.ndarray) -> list[dict[str, Any]]:
        """Metadata rows (no thumbnail) at these positions, in that order."""
        return list(self.meta.take(pa.array(np.asarray(positions, np.int64))).to_pylist())

    def stored(self, tile_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        found = [t for t in tile_ids if t in self.positions]
        pos = [self.positions[t] for t in found]
        if not pos:
            return {}
        fp = self._ds.take(pos, columns=["fingerprint"]).column("fingerprint").combine_chunks()
        vectors = fp.values.to_numpy(zero_copy_only=False).astype(np.float32).reshape(len(pos), -1)
        rows = self.row_dicts(pos)
        for row, vec in zip(rows, vectors):
            row["fingerprint"] = vec
            row["thumbnail"] = None
        return {r["tile_id"]: r for r in rows}

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
        """``k`` nearest rows passing ``filters`` minus ``exclude`` (see the module doc)."""
        check_search(k, metric, max_distance)
        with SEARCH_SLOTS:
            if not exact and self.indexes.get(metric):
                return self._ann(vector, k, metric, exclude, where, max_distance)
            return self._exact(vector, k, metric, exclude, filters, max_distance)

    def _exact(
        self,
        vector: np.ndarray,
        k: int,
        metric: str,
        exclude: Sequence[str],
        filters: SearchFilter,
        max_distance: float | None,
    ) -> tuple[list[Neighbour], float]:
        t0 = time.perf_counter()
        allow = filter_mask(filters, self.sources, self.codes, self.lon, self.lat)
        gone = [self.positions[t] for t in exclude if t in self.positions]
        if gone:
            allow = np.ones(self.rows, bool) if allow is None else allow.copy()
            allow[gone] = False
        idx, dist = self.scan().search(vector, k, metric, allow)
        out: list[Neighbour] = []
        for row, d in zip(self.row_dicts(idx), dist.tolist()):
            if max_distance is not None and d > max_distance:
                break
            out.append(neighbour(len(out) + 1, d, row))
        return out, (time.perf_counter() - t0) * 1000.0

    def _ann(
        self,
        vector: np.ndarray,
        k: int,
        metric: str,
        exclude: Sequence[str],
        where: str | None,
        max_distance: float | None,
    ) -> tuple[list[Neighbour], float]:
        gone = set(exclude)
        found, ms = search(
            self._ds, vector, k + len(gone), metric, where=where, max_distance=max_distance
        )
        kept = [n for n in found if n.tile_id not in gone][:k]
        for rank, n in enumerate(kept, start=1):
            n.rank = rank
        return kept, ms

    def thumbnail(self, tile_id: str) -> bytes | None:
        """The stored thumbnail (JPEG) of a tile, ``None`` when it has none;
        :class:`KeyError` for an unknown id."""
        check_tile_id(tile_id, "tile_id")
        pos = self.positions[tile_id]
        value = self._ds.take([pos], columns=["thumbnail"]).column("thumbnail")[0].as_py()
        return value or None


class DatasetUnavailable(DatasetError):
    """The served dataset is gone or unreadable right now (the API answers 503)."""


class Session:
    """The current :class:`Snapshot` of the dataset at ``uri``, reloaded when it
    changes in any way (checked at most every ``check_every`` seconds)."""

    def __init__(self, uri: str, *, check_every: float = 1.0) -> None:
        self.location = Location.parse(uri)
        self.uri = self.location.url
        self.check_every = check_every
        self._snapshot = Snapshot(open_dataset(self.location), self.identity())
        self._gone: str | None = None
        self._checked = time.monotonic()
        self._lock = threading.Lock()

    def identity(self) -> tuple[object, ...]:
        """What tells one committed state from another: the version number and,
        for a local dataset, the inode and change times of its ``_versions``
        directory (a copy of another dataset with the same version number, a
        compaction's cleanup or a restore all change them). One manifest read
        and one ``stat``; remote datasets: the version number only."""
        key: tuple[object, ...] = (int(lance_dataset(self.location).version),)
        if self.location.is_local:
            st = os.stat(os.path.join(self.uri, "_versions"))
            key += (st.st_ino, st.st_dev, st.st_ctime_ns, st.st_mtime_ns)
        return key

    def current(self, *, force: bool = False) -> Snapshot:
        """The snapshot to answer with; loads the dataset again first when a
        check is due and it changed. :class:`DatasetUnavailable` while the
        dataset cannot be read (deleted, moved, half copied)."""
        now = time.monotonic()
        due = force or now - self._checked >= self.check_every
        if due and self._lock.acquire(blocking=force):
            try:
                self._checked = now
                key = self.identity()
                if key != self._snapshot.key:
                    self._snapshot = Snapshot(open_dataset(self.location), key)
                    log.warning("%s: now serving version %d", self.uri, self._snapshot.version)
                self._gone = None
            except (OSError, ValueError) as exc:
                self._gone = self._unreadable(exc, "restore it or wait for the write to finish")
                log.warning("%s", self._gone)
            finally:
                self._lock.release()
        if self._gone:
            raise DatasetUnavailable(self._gone)
        return self._snapshot

    def answer(self, fn: Callable[[Snapshot], T]) -> T:
        """``fn(snapshot)``; when it fails reading the dataset (a compaction
        removed the files of the version held, the dataset was replaced or
        deleted), check the dataset again at once and retry once with what is
        there now. :class:`DatasetUnavailable` when that fails too."""
        try:
            return fn(self.current())
        except (OSError, ValueError) as exc:
            _reraise_input_errors(exc)
            log.warning("%s: read failed (%s); checking the dataset again", self.uri, exc)
        snap = self.current(force=True)
        try:
            return fn(snap)
        except (OSError, ValueError) as exc:
            _reraise_input_errors(exc)
            raise DatasetUnavailable(self._unreadable(exc, "wait a moment")) from None

    def _unreadable(self, exc: BaseException, fix: str) -> str:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return f"{self.uri}: the dataset cannot be read now ({first[:160]}); {fix}, then retry"


def _reraise_input_errors(exc: BaseException) -> None:
    """A bad request (a :class:`RisError` other than a dataset's) is not a read failure."""
    if isinstance(exc, RisError) and not isinstance(exc, DatasetError):
        raise exc
