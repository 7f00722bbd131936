"""The one owner of a ris_ray dataset's life: open, stage, commit, prune, compact.

Layout: one Lance dataset per ``--db``; one row per tile, in the schema of
:mod:`ris_ray.store.schema` (dataset parameters in its metadata).

:class:`TileStore` opens and checks parameters, stages and commits files
together with their manifest records (:mod:`ris_ray.store.manifest` is its
helper; :class:`~ris_ray.store.writer.TileWriter` the tile table's), prunes,
compacts, refreshes indices and reports the version. Readers open a dataset
with :func:`ris_ray.store.dataset.open_dataset`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from datetime import timedelta

import pyarrow as pa

from ris_ray.core.location import Location
from ris_ray.core.sql import sql_in
from ris_ray.store.dataset import dataset_exists, lance_dataset, open_dataset
from ris_ray.store.fragments import FragmentTarget, Written, remove_unreferenced
from ris_ray.store.lock import dataset_lock
from ris_ray.store.manifest import FileRecord, Manifest
from ris_ray.store.schema import (
    FINGERPRINT_TYPES,
    DatasetParams,
    EncodedRows,
)
from ris_ray.store.writer import TileWriter

__all__ = ["TileStore", "compact"]


def compact(
    uri: str | Location, *, keep_days: float = 7.0, lock_wait_s: float = 0.0
) -> dict[str, int]:
    """Compact fragments (dataset and manifest) and clean up old versions, holding
    the writer lock (a running ingest makes this wait up to ``lock_wait_s``, then
    refuse, naming it)."""
    loc = Location.parse(uri)
    open_dataset(loc)  # a missing or foreign dataset fails before the lock
    with TileStore.for_writing(loc, lock_wait_s=lock_wait_s) as store:
        return store.compact(keep_days=keep_days)


class TileStore:
    """The one owner of a ris_ray dataset: its tiles and its manifest.

    Open it for reading and maintenance (``TileStore(uri)``) or for an ingest
    run (:meth:`for_ingest`: checks the run's parameters against the dataset
    and stages tiles). It commits finished files together with their manifest
    records, prunes files that are gone, compacts, refreshes indices and
    reports the version. :class:`~ris_ray.store.manifest.Manifest` is its helper for
    the manifest table; nothing else writes either table.
    """

    def __init__(self, uri: str | Location) -> None:
        self.location = Location.parse(uri)
        self.uri = self.location.url
        self.manifest = Manifest(self.location)
        self._writer: TileWriter | None = None
        self._held = contextlib.ExitStack()  # the writer lock, while held

    @classmethod
    def for_writing(cls, uri: str | Location, *, lock_wait_s: float = 0.0) -> TileStore:
        """A store holding the dataset's writer lock (:func:`ris_ray.store.lock.dataset_lock`:
        a local lock file or an object-store lease, waiting up to ``lock_wait_s``)
        until :meth:`close`: ingest, compact and index builds take it; readers
        (``TileStore(uri)``, ``ris serve``) never do. Raises
        :class:`~ris_ray.core.errors.LockedError` naming the holder."""
        store = cls(uri)
        store._held.enter_context(dataset_lock(store.location, lock_wait_s))
        return store

    @classmethod
    def for_ingest(
        cls,
        uri: str | Location,
        params: DatasetParams,
        *,
        rebuild: bool = False,
        fingerprint: str = FINGERPRINT_TYPES[0],
        lock_wait_s: float = 0.0,
    ) -> TileStore:
        """A store ready to stage tiles, holding the writer lock (:meth:`for_writing`)
        before it looks at the dataset; raises :class:`ModelMismatchError` when the
        dataset holds tiles of other parameters (unless ``rebuild``). New and
        rebuilt datasets get ``fingerprint`` elements, existing ones keep theirs
        (see :attr:`fingerprint`)."""
        store = cls.for_writing(uri, lock_wait_s=lock_wait_s)
        try:
            store._writer = TileWriter(
                store.location, params, rebuild=rebuild, fingerprint=fingerprint
            )
        except BaseException:
            store.close()
            raise
        return store

    @property
    def fingerprint(self) -> str:
        """The fingerprint type this run writes: float16 for a new or rebuilt
        dataset, the dataset's own type on append (float32 for datasets written
        before float16). Build tables with ``to_table(batch, params, fingerprint)``."""
        return self.writer.fingerprint

    @property
    def writer(self) -> TileWriter:
        if self._writer is None:
            raise RuntimeError("TileStore opened without TileStore.for_ingest")
        return self._writer

    @property
    def rebuild(self) -> bool:
        return self.writer.rebuild

    @property
    def commits(self) -> int:
        return self.writer.commits

    @property
    def pending(self) -> int:
        """Finished files waiting for the next :meth:`commit`."""
        return self.writer.pending_sources

    def known_files(self) -> dict[str, FileRecord]:
        """The manifest's records by stored path (none in rebuild mode)."""
        return {} if self._writer is not None and self.rebuild else self.manifest.load()

    def add(self, source: str, table: pa.Table) -> None:
        self.writer.add(source, table)

    def add_encoded(self, source: str, rows: EncodedRows) -> None:
        self.writer.add_encoded(source, rows)

    def fragment_target(self) -> FragmentTarget:
        """Where embedders write rows themselves (:mod:`ris_ray.store.fragments`)."""
        return self.writer.target()

    def add_written(self, sources: list[str], written: Written) -> None:
        """Fragments an embedder call wrote: committed with their files."""
        self.writer.add_written(sources, written)

    def call_lost(self) -> None:
        """An embedder call was lost, perhaps after writing: :meth:`close` removes
        the data files no version references."""
        self.writer.orphans_possible = True

    def finish(self, source: str) -> None:
        self.writer.finish(source)

    def commit(
        self, record: Callable[[str, int | None], FileRecord], settled: Sequence[str] = ()
    ) -> int | None:
        """Publish every finished file in one Lance transaction, then upsert the
        manifest records (``record(path, version)``) of those files and of
        ``settled`` (files with nothing staged, e.g. unreadable ones)."""
        version, sources = self.writer.commit()
        version = version if version is not None else self.writer.version
        if not self.rebuild:
            self.manifest.upsert(record(s, version) for s in [*sources, *settled])
        return version

    def commit_rebuild(
        self, record: Callable[[str, int | None], FileRecord], paths: Sequence[str]
    ) -> None:
        """Rebuild mode: overwrite the dataset with everything staged and the
        manifest with the records of ``paths``."""
        version, _ = self.writer.finalize()
        self.manifest.replace_all(record(p, version) for p in paths)

    def prune(self, gone: Sequence[str]) -> int:
        """Delete the tiles and manifest rows of files that no longer exist;
        returns the number of tiles deleted."""
        ds = open_dataset(self.location)
        before = ds.count_rows()
        ds.delete(sql_in("source", list(gone)))
        self.manifest.delete(gone)
        return int(before - lance_dataset(self.location).count_rows())

    def compact(self, *, above: int = 0, keep_days: float | None = None) -> dict[str, int]:
        """Compact the dataset and its manifest when the dataset has more than
        ``above`` fragments; with ``keep_days``, also remove versions older than
        that, and the data files no version references (fragments an interrupted
        or failed ingest wrote and never committed). Returns fragment counts
        before/after and what cleanup removed."""
        ds = open_dataset(self.location)
        before = len(ds.get_fragments())
        out = {"fragments_before": before, "versions_removed": 0, "bytes_removed": 0}
        if before > above:
            ds.optimize.compact_files()
            self.manifest.compact()
        if keep_days is not None:
            out["unreferenced_bytes_removed"] = remove_unreferenced(self.location)
            older = timedelta(days=keep_days)
            stats = lance_dataset(self.location).cleanup_old_versions(older_than=older)
            self.manifest.cleanup(older)
            out.update(
                versions_removed=int(stats.old_versions), bytes_removed=int(stats.bytes_removed)
            )
        out["fragments_after"] = len(lance_dataset(self.location).get_fragments())
        return out

    def refresh_indices(self) -> bool:
        """Fold rows added since the last build into the dataset's indexes, if any."""
        ds = open_dataset(self.location)
        if not ds.describe_indices():
            return False
        ds.optimize.optimize_indices()
        return True

    @property
    def version(self) -> int | None:
        """The dataset's latest version (``None``: no dataset yet)."""
        return int(lance_dataset(self.location).version) if dataset_exists(self.location) else None

    def close(self) -> None:
        """Remove the staging area (tiles not committed are dropped), then release
        the writer lock, if held."""
        try:
            if self._writer is not None:
                self._writer.close()
        finally:
            self._held.close()

    def __enter__(self) -> TileStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
