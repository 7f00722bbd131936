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

from typing import Any

import pyarrow as pa

from ris_ray.core.errors import ModelMismatchError
from ris_ray.core.location import Location
from ris_ray.core.sql import sql_in
from ris_ray.store.dataset import LANCE_FILE_FORMAT, dataset_exists, open_dataset
from ris_ray.store.fragments import (
    FragmentTarget,
    PendingFragments,
    Written,
    remove_unreferenced,
)
from ris_ray.store.lance_io import commit_lance, open_lance, write_lance
from ris_ray.store.schema import (
    FINGERPRINT_TYPES,
    DatasetParams,
    EncodedRows,
    dataset_params,
    decode_rows,
    fingerprint_dtype,
    fingerprint_type,
    schema_digest,
    schema_for,
)
from ris_ray.store.staging import Staging

__all__ = ["TileWriter", "deletions"]


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

    Rows the embedders wrote themselves (:meth:`target`, :meth:`add_written`:
    uncommitted fragments, :mod:`ris_ray.store.fragments`) are published the
    same way, file by file, in one Lance transaction: ``Overwrite`` for a
    new or rebuilt dataset, ``Append`` when the files have no rows yet, else
    ``Update`` (the files' old rows deleted, their new fragments added).
    A file goes out with every fragment that holds its rows, a fragment only
    when all of its files are finished.
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
        #: Fragments embedders wrote and this writer has not committed yet.
        self.fragments = PendingFragments()
        #: A call that wrote rows may have been lost after writing (its data
        #: files then belong to no version): :meth:`close` removes them.
        self.orphans_possible = False

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
            decode_rows(rows, self.schema)
        except ValueError as exc:
            raise ValueError(f"{source}: {exc}") from None
        self.staging.add(source, rows.message, rows.rows)

    def target(self) -> FragmentTarget:
        """Where embedders write their rows for this writer (see :meth:`add_written`)."""
        new = self.rebuild or self._version is None
        where = self.location  # with this process's settings: the actors get them as an argument
        if where.is_object:
            where = where.with_settings(where.settings)
        return FragmentTarget(where, self.schema, "overwrite" if new else "append")

    def add_written(self, sources: list[str], written: Written) -> None:
        """Record the fragments an embedder call wrote (``sources[i]``: the file
        of its ``i``-th window); they are committed with their files."""
        self.fragments.add(sources, written)

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
        ok = self.fragments.committable(self._ready) if len(self.fragments) else set(self._ready)
        sources = [s for s in self._ready if s in ok]
        self._ready = [s for s in self._ready if s not in ok]
        if not sources:
            return None, []
        version = self._publish(sources)
        return version, sources

    def finalize(self) -> tuple[int | None, list[str]]:
        """Publish what is left; in rebuild mode, overwrite the dataset with all of it."""
        if not self.rebuild:
            return self.commit()
        sources, self._ready = self._ready, []
        fragments, rows = self._take_fragments(sources)
        if fragments:
            from lance import LanceOperation

            ds = commit_lance(self.location, LanceOperation.Overwrite(self.schema, fragments))
        else:
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
        fragments, written = self._take_fragments(sources)
        if fragments:
            return self._publish_fragments(sources, fragments, written)
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

    def _take_fragments(self, sources: list[str]) -> tuple[list[Any], int]:
        """The embedder-written fragments of ``sources`` and their rows, with the
        rows staged here for them (calls that returned rows: an actor restarted
        without its target) written as one more fragment; ``([], staged rows)``
        when the embedders wrote none."""
        from lance.fragment import FragmentMetadata

        fragments, rows = self.fragments.take(set(sources))
        staged = self.staging.rows(sources)
        if fragments and staged:
            reader = self.staging.reader(sources)
            fragments += [FragmentMetadata.from_json(m) for m in self.target().write_reader(reader)]
        return fragments, rows + staged

    def _publish_fragments(self, sources: list[str], fragments: list[Any], rows: int) -> int:
        """Commit embedder-written ``fragments`` (``rows`` rows) as the whole of
        ``sources``: one ``Overwrite`` (a new dataset), ``Append`` or ``Update``."""
        from lance import LanceOperation

        if self._version is None and not dataset_exists(self.location):
            ds = commit_lance(self.location, LanceOperation.Overwrite(self.schema, fragments))
        else:
            if self._version is None:  # created meanwhile, by a writer without the lock
                self._check_created_meanwhile()
            ds = open_lance(self.location)
            removed, updated = deletions(ds, sql_in("source", sources))
            if removed or updated:
                op: Any = LanceOperation.Update(
                    removed_fragment_ids=removed, updated_fragments=updated, new_fragments=fragments
                )
            else:
                op = LanceOperation.Append(fragments)
            ds = commit_lance(self.location, op, read_version=ds.version)
        self._after_commit(sources, rows, int(ds.version))
        return int(ds.version)

    def _check_created_meanwhile(self) -> None:
        ds = open_dataset(self.location)
        self.params.check_same(dataset_params(ds), self.uri)
        if fingerprint_type(ds) != self.fingerprint:
            raise ModelMismatchError(
                f"{self.uri}: created meanwhile by another writer with {fingerprint_type(ds)} "
                f"fingerprints; re-run to append to it"
            )
        self._version = ds.version

    def _lost_create_race(self, sources: list[str]) -> int | None:
        """Another writer created the dataset between our check and our create
        (one without the lock): check its parameters, then publish as an append."""
        self._check_created_meanwhile()
        return self._publish(sources)

    def _after_commit(self, sources: list[str], rows: int, version: int) -> None:
        for s in sources:
            self.staging.drop(s)
        self._version = version
        self.rows_committed += rows
        self.commits += 1

    def close(self) -> None:
        """Drop what is staged; remove the data files of fragments never committed."""
        self.staging.close()
        if self.fragments.clear() or self.orphans_possible:
            remove_unreferenced(self.location)


def deletions(ds: Any, predicate: str) -> tuple[list[int], list[Any]]:
    """The fragments of ``ds`` whose rows match ``predicate``, deleted: the ids of
    those left empty, and the others' metadata with a new deletion file (not
    committed: an ``Update`` operation takes both). Only fragments holding a
    match are touched (one scan of the row addresses: fragment id = address >> 32)."""
    addresses = ds.to_table(columns=[], filter=predicate, with_row_address=True)["_rowaddr"]
    ids = sorted({int(a) >> 32 for a in addresses.to_pylist()})
    removed, updated = [], []
    for fid in ids:
        after = ds.get_fragment(fid).delete(predicate)
        if after is None:
            removed.append(fid)
        else:
            updated.append(after)
    return removed, updated
