"""Staged rows: the encoded rows of source files an ingest has not committed yet.

Rows arrive as Arrow IPC record-batch messages (an embedder's
:class:`~ris_ray.store.schema.EncodedRows`, or a table's batches) and wait here,
per source file, until the file is committed or dropped. They stay in memory
while all sources together hold at most ``budget`` bytes; past it the
largest source spills to a file of its own on local disk (an Arrow IPC
stream), and its later rows go there too. So small files never touch the
disk (one create, write, read and unlink per file cost the driver ~0.3 ms
each), and memory stays bounded however large a file is.

Messages are copied into the driver's heap when kept in memory: a buffer
Ray hands over may point into its object store, and holding it would pin
the embedder's whole reply there.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import pyarrow as pa

__all__ = ["STAGING_BUDGET", "Staging"]

#: Bytes of staged rows kept in memory before the largest source spills to disk
#: (~26,000 tiles at ~2.5 KB each).
STAGING_BUDGET: Final = 64 * 2**20
#: The Arrow IPC stream's end-of-stream marker: continuation 0xFFFFFFFF, then a
#: zero metadata length (Arrow columnar format, "IPC Streaming Format").
_END_OF_STREAM: Final = b"\xff\xff\xff\xff\x00\x00\x00\x00"


@dataclass
class _Source:
    rows: int = 0
    messages: list[bytes] = field(default_factory=list)  # in memory, in order
    nbytes: int = 0  # of ``messages``
    path: Path | None = None  # spilled: every message is in this stream
    sink: pa.NativeFile | None = None  # spilled and open while the source may grow
    sealed: bool = False  # no more rows


class Staging:
    """Per-source staged rows in ``schema``, in memory up to ``budget`` bytes
    and spilled to files under ``spill_dir`` (a private temp dir, made on the
    first spill) beyond it. Call :meth:`close` to remove the files."""

    def __init__(
        self, schema: pa.Schema, *, budget: int = STAGING_BUDGET, spill_dir: str | None = None
    ) -> None:
        self.schema = schema
        self.budget = budget
        self._spill_parent = spill_dir
        self._dir: Path | None = None
        self._sources: dict[str, _Source] = {}
        self._memory = 0
        self.spills = 0

    def add(self, source: str, message: pa.Buffer, rows: int) -> None:
        """Stage one record-batch ``message`` of ``rows`` rows for ``source``."""
        staged = self._sources.setdefault(source, _Source())
        staged.rows += rows
        if staged.sink is not None:
            staged.sink.write(message)
            return
        data = message.to_pybytes()
        staged.messages.append(data)
        staged.nbytes += len(data)
        self._memory += len(data)
        while self._memory > self.budget:
            self._spill(max(self._sources.values(), key=lambda s: s.nbytes))

    def _spill(self, staged: _Source) -> None:
        """Move ``staged``'s messages to a new stream file, kept open for more."""
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="ris-stage-", dir=self._spill_parent))
        staged.path = self._dir / f"{self.spills:08d}.arrow"
        self.spills += 1
        staged.sink = pa.OSFile(str(staged.path), "wb")
        staged.sink.write(self.schema.serialize())
        for data in staged.messages:
            staged.sink.write(data)
        self._memory -= staged.nbytes
        staged.messages, staged.nbytes = [], 0
        if staged.sealed:
            self._close(staged)

    def seal(self, source: str) -> None:
        """``source`` gets no more rows: its spill file, if any, is closed."""
        staged = self._sources.get(source)
        if staged is not None:
            staged.sealed = True
            self._close(staged)

    @staticmethod
    def _close(staged: _Source) -> None:
        if staged.sink is not None:
            staged.sink.write(_END_OF_STREAM)
            staged.sink.close()
            staged.sink = None

    def drop(self, source: str) -> None:
        """Forget ``source``'s rows (committed or discarded)."""
        self.seal(source)
        staged = self._sources.pop(source, None)
        if staged is not None:
            self._memory -= staged.nbytes
            if staged.path is not None:
                staged.path.unlink(missing_ok=True)

    def rows(self, sources: list[str]) -> int:
        return sum(self._sources[s].rows for s in sources if s in self._sources)

    def reader(self, sources: list[str]) -> pa.RecordBatchReader:
        """The staged rows of the sealed ``sources``, in order, read lazily."""
        staged = [self._sources[s] for s in sources if s in self._sources]

        def batches() -> Iterator[pa.RecordBatch]:
            for s in staged:
                if s.path is not None:
                    with pa.OSFile(str(s.path), "rb") as f:
                        yield from pa.ipc.open_stream(f)
                for data in s.messages:
                    yield pa.ipc.read_record_batch(pa.py_buffer(data), self.schema)

        return pa.RecordBatchReader.from_batches(self.schema, batches())

    def close(self) -> None:
        for source in list(self._sources):
            self.drop(source)
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
