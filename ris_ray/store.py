"""The Lance dataset: explicit schema, an atomic writer, and readers.

Layout: one Lance dataset per ``--db``; one row per tile, in the schema of
:mod:`ris_ray.schema` (dataset parameters in its metadata).

Writing (:class:`TileWriter`) stages each source file's rows
(:mod:`ris_ray.staging`: in memory, spilled to local disk past a budget) and
publishes finished files in one Lance transaction per commit group (create /
append / ``merge_insert`` keyed on ``tile_id``), so a reader sees either none
or all of a file's tiles and a re-run never duplicates a tile.
(We do not use Ray Data's ``write_lance``: in Ray 2.60 it breaks with
pylance >= 6, and it commits per dataset, not per source file.)

:class:`TileStore` is the one owner of a dataset's life: it opens and checks
parameters, stages and commits files together with their manifest records
(:mod:`ris_ray.manifest` is its helper), prunes, compacts, refreshes indices
and reports the version.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any, Final

import pyarrow as pa

from ris_ray.config import FINGERPRINT_DIM
from ris_ray.errors import DatasetError, ObjectStoreError
from ris_ray.lance_io import open_lance, write_lance
from ris_ray.lock import dataset_lock
from ris_ray.manifest import FileRecord, Manifest
from ris_ray.objstore import is_object_uri, prefix_size
from ris_ray.schema import (
    FINGERPRINT_TYPES,
    DatasetParams,
    EncodedRows,
    dataset_params,
    fingerprint_dtype,
    fingerprint_type,
    schema_digest,
    schema_for,
)
from ris_ray.sql import sql_in
from ris_ray.staging import Staging
from ris_ray.uris import is_remote, local_path

# Lance logs a WARN line for every fragment written before the first commit.
os.environ.setdefault("LANCE_LOG", "error")
# Lance warns at every fork; Ray forks only to exec its own processes.
warnings.filterwarnings("ignore", "lance is not fork-safe")
import lance  # noqa: E402

__all__ = [
    "TileStore",
    "TileWriter",
    "compact",
    "dataset_info",
    "dataset_size_bytes",
    "lance_dataset",
    "local_path",
    "open_dataset",
    "version_history",
]

#: Lance file format for new datasets. Its exact vector scan reads the
#: fixed-size-list fingerprints 2-4x faster than the default 2.2 here
#: (benchmarks/run.py, stage 4); appends keep a dataset's own format.
LANCE_FILE_FORMAT: Final = "2.0"


def _exists(uri: str) -> bool:
    if is_remote(uri):
        try:
            open_lance(uri)
        except ObjectStoreError:
            raise
        except (ValueError, OSError):
            return False
        return True
    return (Path(uri) / "_versions").is_dir()


def lance_dataset(uri: str) -> Any:
    """The Lance dataset at ``uri`` (latest version), without ris_ray checks."""
    return open_lance(uri)


def open_dataset(uri: str, version: int | None = None) -> Any:
    """Open a ris_ray Lance dataset, or raise :class:`DatasetError` saying why not."""
    if not _exists(uri):
        raise DatasetError(
            f"{uri}: no Lance dataset here (create one with `ris ingest ... --db {uri}`)"
        )
    try:
        ds = open_lance(uri, version=version)
    except ObjectStoreError:
        raise
    except (ValueError, OSError) as exc:
        raise DatasetError(
            f"{uri}: cannot open Lance dataset ({str(exc).splitlines()[0]})"
        ) from None
    if "fingerprint" not in ds.schema.names or "tile_id" not in ds.schema.names:
        raise DatasetError(f"{uri}: a Lance dataset, but not a ris_ray one (no fingerprint column)")
    return ds


def dataset_size_bytes(uri: str) -> int:
    """Bytes under a dataset: its directory, or its prefix in an object store
    (0 for other remote URIs)."""
    if is_object_uri(uri):
        return prefix_size(uri)
    if is_remote(uri):
        return 0
    return sum(p.stat().st_size for p in Path(uri).rglob("*") if p.is_file())


class TileWriter:
    """Stage tiles per source file (in memory, spilled to disk); publish whole files atomically.

    ``add(source, table)`` stages rows of a source (:mod:`ris_ray.staging`:
    Arrow IPC messages in memory, spilled to a private temp dir past a
    budget, so memory stays bounded; ``add_encoded`` stages an embedder's
    message as it is), ``finish(source)``
    marks it complete, and ``commit()`` publishes every completed source in
    one Lance transaction:

    - a new dataset is created with ``write_dataset``;
    - when none of the sources has rows yet, rows are appended;
    - otherwise ``merge_insert`` on ``tile_id`` updates matching tiles,
      inserts new ones and deletes the sources' tiles that were not produced
      again (a changed file, a tile now below ``--min-valid``, rows left by a
      killed run). Readers see the version before or after, never half a file.

    With ``rebuild=True`` nothing is published until :meth:`finalize`, which
    overwrites the dataset with everything staged (old versions stay readable
    until cleanup). Call :meth:`close` to drop what is staged.
    """

    def __init__(
        self,
        uri: str,
        params: DatasetParams,
        *,
        rebuild: bool = False,
        stage_dir: str | None = None,
        fingerprint: str = FINGERPRINT_TYPES[0],
    ) -> None:
        self.uri = uri
        self.params = params
        self.rebuild = rebuild
        self._ready: list[str] = []
        self.rows_committed = 0
        self.commits = 0
        self._version: int | None = None
        #: Fingerprint type written: ``fingerprint`` for a new (or rebuilt) dataset,
        #: else the dataset's own (float32 for datasets written before float16).
        self.fingerprint = fingerprint
        fingerprint_dtype(fingerprint)  # checks the name
        if _exists(uri):
            ds = open_dataset(uri)
            if not rebuild:
                params.check_same(dataset_params(ds), uri)
                self.fingerprint = fingerprint_type(ds)
            self._version = ds.version
        self.schema = schema_for(params, self.fingerprint)
        #: Rows of files not committed yet (in memory, spilled under ``stage_dir`` past a budget).
        self.staging = Staging(self.schema, spill_dir=stage_dir)

    @property
    def version(self) -> int | None:
        """The dataset version this writer last saw or made (None: not created yet)."""
        return self._version

    @property
    def pending_sources(self) -> int:
        return len(self._ready)

    def add(self, source: str, table: pa.Table) -> None:
        """Stage ``table``'s rows for ``source`` (cast to the writer's schema)."""
        for batch in table.cast(self.schema).to_batches():
            if batch.num_rows:
                self.staging.add(source, batch.serialize(), batch.num_rows)

    def add_encoded(self, source: str, rows: EncodedRows) -> None:
        """Stage rows an embedder encoded (:class:`~ris_ray.schema.EncodedRows`)
        for ``source``, as they are, once their schema is the writer's and the
        message's header fits it (zero-copy, ~20 us); :class:`ValueError` otherwise."""
        if rows.rows == 0:
            return
        if rows.schema != schema_digest(self.params, self.fingerprint):
            raise ValueError(
                f"{source}: rows encoded in another schema than the dataset's "
                f"({self.fingerprint} fingerprints, {self.params.describe()})"
            )
        try:
            batch = pa.ipc.read_record_batch(rows.message, self.schema)
            batch.validate()
        except (pa.ArrowException, ValueError) as exc:
            raise ValueError(f"{source}: encoded rows unreadable: {exc}") from None
        if batch.num_rows != rows.rows:
            raise ValueError(f"{source}: {batch.num_rows} rows encoded, {rows.rows} announced")
        self.staging.add(source, rows.message, rows.rows)

    def finish(self, source: str) -> None:
        """Mark ``source`` complete: its rows go out with the next :meth:`commit`."""
        self.staging.seal(source)
        self._ready.append(source)

    def discard(self, source: str) -> None:
        """Forget everything staged for ``source``."""
        self.staging.drop(source)
        if source in self._ready:
            self._ready.remove(source)

    def commit(self) -> tuple[int | None, list[str]]:
        """Publish all finished sources in one transaction.

        Returns ``(version, sources)``: the new dataset version (``None`` if
        nothing changed) and the sources it covers. In rebuild mode this
        publishes nothing (see :meth:`finalize`).
        """
        if self.rebuild or not self._ready:
            return None, []
        sources, self._ready = self._ready, []
        version = self._publish(sources)
        return version, sources

    def finalize(self) -> tuple[int | None, list[str]]:
        """Publish what is left; in rebuild mode, overwrite the dataset with all of it."""
        if not self.rebuild:
            return self.commit()
        sources, self._ready = self._ready, []
        rows = self.staging.rows(sources)
        ds = write_lance(
            self.staging.reader(sources),
            self.uri,
            schema=self.schema,
            mode="overwrite",
            data_storage_version=LANCE_FILE_FORMAT,
        )
        self._after_commit(sources, rows, int(ds.version))
        return self._version, sources

    def _publish(self, sources: list[str]) -> int | None:
        rows = self.staging.rows(sources)
        if self._version is None:
            if rows == 0:
                return None
            ds = write_lance(
                self.staging.reader(sources),
                self.uri,
                schema=self.schema,
                data_storage_version=LANCE_FILE_FORMAT,
            )
        else:
            ds = open_lance(self.uri)
            present = ds.count_rows(filter=sql_in("source", sources))
            if present == 0 and rows == 0:
                return None
            if present == 0:
                ds = write_lance(
                    self.staging.reader(sources), self.uri, schema=self.schema, mode="append"
                )
            elif rows == 0:
                ds.delete(sql_in("source", sources))
            else:
                (
                    ds.merge_insert("tile_id")
                    .when_matched_update_all()
                    .when_not_matched_insert_all()
                    .when_not_matched_by_source_delete(sql_in("source", sources))
                    .execute(self.staging.reader(sources))
                )
            ds = open_lance(self.uri)
        self._after_commit(sources, rows, int(ds.version))
        return self._version

    def _after_commit(self, sources: list[str], rows: int, version: int) -> None:
        for s in sources:
            self.staging.drop(s)
        self._version = version
        self.rows_committed += rows
        self.commits += 1

    def close(self) -> None:
        self.staging.close()


def dataset_info(uri: str) -> dict[str, Any]:
    """Facts about a dataset for ``ris info``."""
    ds = open_dataset(local_path(uri))
    params = dataset_params(ds)
    sources = ds.to_table(columns=["source"]).column("source").unique()
    return {
        "uri": ds.uri,
        "rows": ds.count_rows(),
        "sources": len(sources),
        "model": params.model,
        "tile_size": params.tile_size,
        "stride": params.stride,
        "fingerprint": f"{fingerprint_type(ds)}[{FINGERPRINT_DIM}]",
        "version": ds.version,
        "versions": len(ds.versions()),
        "fragments": len(ds.get_fragments()),
        "lance_format": ds.data_storage_version,
        "pylance": lance.__version__,
        "size_bytes": dataset_size_bytes(local_path(uri)),
    }


def version_history(uri: str) -> list[dict[str, Any]]:
    """Every retained version: number, UTC time, rows, the change in rows and
    the Lance operation that made it (``Overwrite`` create/rebuild, ``Append``
    new files, ``Update`` replaced files, ``Delete`` prune, ``Rewrite``
    compaction)."""
    ds = open_dataset(local_path(uri))
    out: list[dict[str, Any]] = []
    previous = 0
    for v in ds.versions():
        number = int(v["version"])
        rows = int(v["metadata"].get("total_rows", -1))
        tx = ds.read_transaction(number)
        out.append(
            {
                "version": number,
                "timestamp": v["timestamp"].isoformat(timespec="seconds"),
                "rows": rows,
                "change": rows - previous,
                "operation": type(tx.operation).__name__ if tx is not None else "?",
            }
        )
        previous = rows
    return out


def compact(uri: str, *, keep_days: float = 7.0, lock_wait_s: float = 0.0) -> dict[str, int]:
    """Compact fragments (dataset and manifest) and clean up old versions, holding
    the writer lock (a running ingest makes this wait up to ``lock_wait_s``, then
    refuse, naming it)."""
    open_dataset(local_path(uri))  # a missing or foreign dataset fails before the lock
    with TileStore.for_writing(uri, lock_wait_s=lock_wait_s) as store:
        return store.compact(keep_days=keep_days)


class TileStore:
    """The one owner of a ris_ray dataset: its tiles and its manifest.

    Open it for reading and maintenance (``TileStore(uri)``) or for an ingest
    run (:meth:`for_ingest`: checks the run's parameters against the dataset
    and stages tiles). It commits finished files together with their manifest
    records, prunes files that are gone, compacts, refreshes indices and
    reports the version. :class:`~ris_ray.manifest.Manifest` is its helper for
    the manifest table; nothing else writes either table.
    """

    def __init__(self, uri: str) -> None:
        self.uri = local_path(uri)
        self.manifest = Manifest(self.uri)
        self._writer: TileWriter | None = None
        self._held = contextlib.ExitStack()  # the writer lock, while held

    @classmethod
    def for_writing(cls, uri: str, *, lock_wait_s: float = 0.0) -> TileStore:
        """A store holding the dataset's writer lock (:func:`ris_ray.lock.dataset_lock`:
        a local lock file or an object-store lease, waiting up to ``lock_wait_s``)
        until :meth:`close`: ingest, compact and index builds take it; readers
        (``TileStore(uri)``, ``ris serve``) never do. Raises
        :class:`~ris_ray.errors.LockedError` naming the holder."""
        store = cls(uri)
        store._held.enter_context(dataset_lock(uri, lock_wait_s))
        return store

    @classmethod
    def for_ingest(
        cls,
        uri: str,
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
            store._writer = TileWriter(store.uri, params, rebuild=rebuild, fingerprint=fingerprint)
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
        ds = open_dataset(self.uri)
        before = ds.count_rows()
        ds.delete(sql_in("source", list(gone)))
        self.manifest.delete(gone)
        return int(before - lance_dataset(self.uri).count_rows())

    def compact(self, *, above: int = 0, keep_days: float | None = None) -> dict[str, int]:
        """Compact the dataset and its manifest when the dataset has more than
        ``above`` fragments; with ``keep_days``, also remove versions older than
        that. Returns fragment counts before/after and what cleanup removed."""
        ds = open_dataset(self.uri)
        before = len(ds.get_fragments())
        out = {"fragments_before": before, "versions_removed": 0, "bytes_removed": 0}
        if before > above:
            ds.optimize.compact_files()
            self.manifest.compact()
        if keep_days is not None:
            older = timedelta(days=keep_days)
            stats = lance_dataset(self.uri).cleanup_old_versions(older_than=older)
            self.manifest.cleanup(older)
            out.update(
                versions_removed=int(stats.old_versions), bytes_removed=int(stats.bytes_removed)
            )
        out["fragments_after"] = len(lance_dataset(self.uri).get_fragments())
        return out

    def refresh_indices(self) -> bool:
        """Fold rows added since the last build into the dataset's indexes, if any."""
        ds = open_dataset(self.uri)
        if not ds.describe_indices():
            return False
        ds.optimize.optimize_indices()
        return True

    @property
    def version(self) -> int | None:
        """The dataset's latest version (``None``: no dataset yet)."""
        return int(lance_dataset(self.uri).version) if _exists(self.uri) else None

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
