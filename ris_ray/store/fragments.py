"""Rows written where they are made: uncommitted Lance fragments, committed whole files at a time.

Lance's distributed write (``lance.fragment.write_fragments`` in the
workers, one ``LanceDataset.commit`` by a coordinator): an embedder actor
writes each call's rows as one data fragment straight to the dataset's own
storage (:class:`FragmentTarget`: a local path or ``s3://``, with the
location's storage options) and hands back a :class:`Written` record (the
fragment's metadata as JSON, rows per window); the rows never reach the
driver. :class:`PendingFragments` is the driver's ledger of those fragments
until they are committed, with the rule that keeps a file atomic:

    a fragment is committed when every source file it holds rows of is
    finished, and a finished file only together with all its fragments.

So a set of files goes out in one commit exactly when it is closed under
"shares a fragment with" (:meth:`PendingFragments.take`). A fragment that is
never committed (``--strict`` with a failed file, an interrupted run, a
call that crashed after writing) is a data file no version references;
:func:`remove_unreferenced` deletes those (the ingest's writer lock is held,
so no other writer's files are in flight).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Final, Literal

import pyarrow as pa

from ris_ray.core.location import Location
from ris_ray.store.lance_io import open_lance

__all__ = [
    "FragmentTarget",
    "PendingFragments",
    "Written",
    "remove_unreferenced",
]

# Imports lance lazily: a tiling worker imports this module (it may write a
# fragment) but most never do.

#: ``cleanup_old_versions``' age limit when only unreferenced files should go:
#: no version is that old, so every version is kept.
_KEEP_ALL_VERSIONS: Final = timedelta(days=365 * 100)


@dataclass(frozen=True)
class Written:
    """What one embedder call wrote: ``rows[i]`` rows of its ``i``-th window, in
    ``fragments`` (Lance ``FragmentMetadata`` as JSON; none when no rows)."""

    rows: tuple[int, ...]
    fragments: tuple[str, ...]

    @property
    def total(self) -> int:
        return sum(self.rows)


@dataclass(frozen=True)
class FragmentTarget:
    """Where and how embedders write fragments: the dataset's ``location``
    (its settings travel with it, as an argument, never in an environment),
    the dataset ``schema`` and Lance's write ``mode`` ("append": checked
    against the existing dataset's fields; "overwrite": a new or rebuilt
    dataset, fresh field ids)."""

    location: Location
    schema: pa.Schema
    mode: Literal["append", "overwrite"]

    def write(self, batches: Sequence[pa.RecordBatch]) -> tuple[str, ...]:
        """``batches`` (in :attr:`schema`) as one uncommitted fragment; its metadata
        as JSON (empty when there are no rows)."""
        if not any(b.num_rows for b in batches):
            return ()
        return self.write_reader(pa.Table.from_batches(list(batches), schema=self.schema))

    def write_reader(self, data: pa.Table | pa.RecordBatchReader) -> tuple[str, ...]:
        """``data`` as uncommitted fragments (one, unless past Lance's file size
        limits); their metadata as JSON."""
        file_format = _file_format()  # before lance: its settings
        from lance.fragment import write_fragments

        written = write_fragments(
            data,
            self.location.url,
            schema=self.schema,
            mode=self.mode,
            data_storage_version=file_format,
            storage_options=self.location.storage_options,
        )
        return tuple(json.dumps(f.to_json()) for f in written)


def _file_format() -> str:
    """Lance's file format for ris_ray datasets (importing
    :mod:`ris_ray.store.dataset` sets Lance's logging before lance loads)."""
    from ris_ray.store.dataset import LANCE_FILE_FORMAT

    return LANCE_FILE_FORMAT


@dataclass
class _Pending:
    metadata: str
    sources: frozenset[str]
    rows: int


@dataclass
class PendingFragments:
    """The driver's ledger of written, uncommitted fragments and the source
    files they hold rows of (see the module docs for the commit rule)."""

    _fragments: list[_Pending] = field(default_factory=list)
    rows_by_source: dict[str, int] = field(default_factory=dict)

    def add(self, sources: Sequence[str], written: Written) -> None:
        """Record a call's fragments; ``sources[i]`` is the file of its ``i``-th window."""
        holding = frozenset(s for s, n in zip(sources, written.rows, strict=True) if n)
        for s, n in zip(sources, written.rows, strict=True):
            if n:
                self.rows_by_source[s] = self.rows_by_source.get(s, 0) + n
        for i, metadata in enumerate(written.fragments):
            rows = written.total if i == 0 else 0  # counted once per call
            self._fragments.append(_Pending(metadata, holding, rows))

    def __len__(self) -> int:
        return len(self._fragments)

    def committable(self, finished: Iterable[str]) -> set[str]:
        """The largest set of ``finished`` sources whose fragments hold rows of
        finished sources only: drop, until none is left to drop, every source
        that shares a fragment with a source not in the set."""
        ok = set(finished)
        changed = True
        while changed:
            changed = False
            for frag in self._fragments:
                if frag.sources & ok and not frag.sources <= ok:
                    ok -= frag.sources
                    changed = True
        return ok

    def take(self, sources: set[str]) -> tuple[list[Any], int]:
        """Remove and return the fragments of ``sources`` (a :meth:`committable`
        set) as ``FragmentMetadata``, and their rows."""
        from lance.fragment import FragmentMetadata

        out, kept, rows = [], [], 0
        for frag in self._fragments:
            if frag.sources and frag.sources <= sources:
                out.append(FragmentMetadata.from_json(frag.metadata))
                rows += frag.rows
            else:
                kept.append(frag)
        self._fragments = kept
        for s in sources:
            self.rows_by_source.pop(s, None)
        return out, rows

    def clear(self) -> int:
        """Forget every uncommitted fragment; returns how many there were."""
        n, self._fragments = len(self._fragments), []
        self.rows_by_source.clear()
        return n


def remove_unreferenced(location: Location) -> int:
    """Delete the data files no version of the dataset at ``location`` references
    (fragments written but never committed), keeping every version; returns
    the bytes removed (0 when there is no dataset). Hold the writer lock."""
    try:
        ds = open_lance(location)
    except ValueError:
        return 0
    stats = ds.cleanup_old_versions(older_than=_KEEP_ALL_VERSIONS, delete_unverified=True)
    return int(stats.bytes_removed)
