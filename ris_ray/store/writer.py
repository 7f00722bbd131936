"""Writing tiles atomically: stage per source file, publish whole files.

:class:`TileWriter` is the :class:`~ris_ray.store.tilestore.TileStore`'s
helper for the tile table: rows are staged per source file
(:mod:`ris_ray.store.staging`: in memory, spilled to disk past a budget) and
published in one Lance transaction per commit group (create / append /
``merge_insert`` keyed on ``tile_id``), so a reader sees either none or all
of a file's tiles and a re-run never duplicates a tile. (We do not use Ray
Data's ``write_lance``: in Ray 2.60 it breaks with pylance >= 6, and it
commits per dataset, not per source file.)
"""

from __future__ import annotations

import pyarrow as pa

from ris_ray.core.errors import ModelMismatchError
from ris_ray.core.location import Location
from ris_ray.core.sql import sql_in
from ris_ray.store.dataset import LANCE_FILE_FORMAT, dataset_exists, open_dataset
from ris_ray.store.lance_io import open_lance, write_lance
from ris_ray.store.schema import (
    FINGERPRINT_TYPES,
    DatasetParams,
    EncodedRows,
    dataset_params,
    fingerprint_dtype,
    fingerprint_type,
    schema_digest,
    schema_for,
)
from ris_ray.store.staging import Staging

__all__ = ["TileWriter"]


class TileWriter:
    """Stage tiles per source file (in memory, spilled to disk); publish whole files atomically.

    ``add(source, table)`` stages rows of a source (:mod:`ris_ray.store.staging`:
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
        uri: str | Location,
        params: DatasetParams,
        *,
        rebuild: bool = False,
        stage_dir: str | None = None,
        fingerprint: str = FINGERPRINT_TYPES[0],
    ) -> None:
        self.location = Location.parse(uri)
        self.uri = str(self.location)
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
        if dataset_exists(self.location):
            ds = open_dataset(self.location)
            if not rebuild:
                params.check_same(dataset_params(ds), self.uri)
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
        """Stage rows an embedder encoded (:class:`~ris_ray.store.schema.EncodedRows`)
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
            self.location,
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
            try:
                ds = write_lance(
                    self.staging.reader(sources),
                    self.location,
                    schema=self.schema,
                    data_storage_version=LANCE_FILE_FORMAT,
                )
            except (OSError, ValueError) as exc:
                if "already exists" not in str(exc):
                    raise
                return self._lost_create_race(sources)
        else:
            ds = open_lance(self.location)
            present = ds.count_rows(filter=sql_in("source", sources))
            if present == 0 and rows == 0:
                return None
            if present == 0:
                ds = write_lance(
                    self.staging.reader(sources), self.location, schema=self.schema, mode="append"
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
            ds = open_lance(self.location)
        self._after_commit(sources, rows, int(ds.version))
        return self._version

    def _lost_create_race(self, sources: list[str]) -> int | None:
        """Another writer created the dataset between our check and our create
        (one without the lock): check its parameters, then publish as an append."""
        ds = open_dataset(self.location)
        self.params.check_same(dataset_params(ds), self.uri)
        if fingerprint_type(ds) != self.fingerprint:
            raise ModelMismatchError(
                f"{self.uri}: created meanwhile by another writer with {fingerprint_type(ds)} "
                f"fingerprints; re-run to append to it"
            )
        self._version = ds.version
        return self._publish(sources)

    def _after_commit(self, sources: list[str], rows: int, version: int) -> None:
        for s in sources:
            self.staging.drop(s)
        self._version = version
        self.rows_committed += rows
        self.commits += 1

    def close(self) -> None:
        self.staging.close()
