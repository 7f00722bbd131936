"""The Lance dataset: explicit schema, an atomic writer, and readers.

Layout: one Lance dataset per ``--db``; one row per tile. Dataset-wide
parameters (tile size, stride, model id) live in the Arrow schema metadata
under ``ris_ray.*`` keys so a later run or a query can check it is compatible.

Writing (:class:`TileWriter`) uses Lance's distributed-write API directly:
rows are written to fragments with :func:`lance.fragment.write_fragments`
(uncommitted data files, invisible to readers) and published with a single
:meth:`lance.LanceDataset.commit` per commit group. Fragments never mix files
and a file's fragments are committed together, so a reader sees either none
or all of a file's tiles. (We do not use Ray Data's ``write_lance``: in
Ray 2.60 it breaks with pylance >= 6, and it commits per dataset, not per
source file.)
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from ris_ray.embed import FINGERPRINT_DIM
from ris_ray.errors import DatasetError, ModelMismatchError

# Lance logs a WARN line for every fragment written before the first commit.
os.environ.setdefault("LANCE_LOG", "error")
# Lance warns at every fork; Ray forks only to exec its own processes.
warnings.filterwarnings("ignore", "lance is not fork-safe")
import lance  # noqa: E402
import lance.fragment  # noqa: E402

__all__ = [
    "SCHEMA",
    "DatasetParams",
    "TileWriter",
    "dataset_info",
    "dataset_params",
    "dataset_size_bytes",
    "open_dataset",
]

FORMAT_VERSION = "1"

_FIELDS = [
    pa.field("tile_id", pa.string(), nullable=False),
    pa.field("source", pa.string(), nullable=False),
    pa.field("row", pa.int32(), nullable=False),
    pa.field("col", pa.int32(), nullable=False),
    pa.field("width", pa.int32(), nullable=False),
    pa.field("height", pa.int32(), nullable=False),
    pa.field("crs", pa.string()),
    pa.field("minx", pa.float64()),
    pa.field("miny", pa.float64()),
    pa.field("maxx", pa.float64()),
    pa.field("maxy", pa.float64()),
    pa.field("lon", pa.float64()),
    pa.field("lat", pa.float64()),
    pa.field("valid_fraction", pa.float32(), nullable=False),
    pa.field("model", pa.string(), nullable=False),
    pa.field("thumbnail", pa.binary()),
    pa.field(
        "fingerprint", pa.list_(pa.field("item", pa.float32()), FINGERPRINT_DIM), nullable=False
    ),
]
#: Row schema without dataset metadata (see :func:`schema_for`).
SCHEMA = pa.schema(_FIELDS)
#: Columns that are cheap to read (everything but the fingerprint and thumbnail).
META_COLUMNS = [f.name for f in _FIELDS if f.name not in ("fingerprint", "thumbnail")]


@dataclass(frozen=True)
class DatasetParams:
    """The parameters every row of a dataset shares; runs must agree on them."""

    tile_size: int
    stride: int
    model: str

    def to_metadata(self) -> dict[str, str]:
        return {
            "ris_ray.format": FORMAT_VERSION,
            "ris_ray.tile_size": str(self.tile_size),
            "ris_ray.stride": str(self.stride),
            "ris_ray.model": self.model,
        }

    def check_same(self, other: DatasetParams, uri: str) -> None:
        if self != other:
            raise ModelMismatchError(
                f"{uri} holds tiles of {other.describe()}; this run uses {self.describe()}. "
                "Use the same settings, another --db, or --rebuild"
            )

    def describe(self) -> str:
        return f"model {self.model}, tile {self.tile_size}, stride {self.stride}"


def schema_for(params: DatasetParams) -> pa.Schema:
    return SCHEMA.with_metadata(params.to_metadata())


def _exists(uri: str) -> bool:
    if "://" in uri:
        try:
            lance.dataset(uri)
        except (ValueError, OSError):
            return False
        return True
    return (Path(uri) / "_versions").is_dir()


def open_dataset(uri: str, version: int | None = None) -> Any:
    """Open a ris_ray Lance dataset, or raise :class:`DatasetError` saying why not."""
    if not _exists(uri):
        raise DatasetError(
            f"{uri}: no Lance dataset here (create one with `ris ingest ... --db {uri}`)"
        )
    try:
        ds = lance.dataset(uri, version=version)
    except (ValueError, OSError) as exc:
        raise DatasetError(
            f"{uri}: cannot open Lance dataset ({str(exc).splitlines()[0]})"
        ) from None
    if "fingerprint" not in ds.schema.names or "tile_id" not in ds.schema.names:
        raise DatasetError(f"{uri}: a Lance dataset, but not a ris_ray one (no fingerprint column)")
    return ds


def dataset_params(ds: Any) -> DatasetParams:
    meta = {k.decode(): v.decode() for k, v in (ds.schema.metadata or {}).items()}
    try:
        return DatasetParams(
            int(meta["ris_ray.tile_size"]), int(meta["ris_ray.stride"]), meta["ris_ray.model"]
        )
    except KeyError:
        raise DatasetError(f"{ds.uri}: missing ris_ray metadata; was it written by ris?") from None


def dataset_size_bytes(uri: str) -> int:
    """Bytes on disk under a local dataset directory (0 for remote URIs)."""
    if "://" in uri:
        return 0
    return sum(p.stat().st_size for p in Path(uri).rglob("*") if p.is_file())


def to_table(batch: dict[str, Any], params: DatasetParams, crs: str | None) -> pa.Table:
    """Build an Arrow table in :data:`SCHEMA` from a columnar batch with fingerprints."""
    n = len(batch["tile_id"])
    fp = np.ascontiguousarray(batch["fingerprint"], dtype=np.float32).reshape(-1)

    def geo(name: str) -> pa.Array:
        values = np.asarray(batch[name], dtype=np.float64)
        return pa.array(values, mask=np.isnan(values), type=pa.float64())

    columns = {
        "tile_id": pa.array(list(batch["tile_id"]), pa.string()),
        "source": pa.array(list(batch["source"]), pa.string()),
        "row": pa.array(batch["row"], pa.int32()),
        "col": pa.array(batch["col"], pa.int32()),
        "width": pa.array(batch["width"], pa.int32()),
        "height": pa.array(batch["height"], pa.int32()),
        "crs": pa.array([crs] * n, pa.string()),
        **{name: geo(name) for name in ("minx", "miny", "maxx", "maxy", "lon", "lat")},
        "valid_fraction": pa.array(batch["valid_fraction"], pa.float32()),
        "model": pa.array([params.model] * n, pa.string()),
        "thumbnail": pa.array(list(batch["thumbnail"]), pa.binary()),
        "fingerprint": pa.FixedSizeListArray.from_arrays(
            pa.array(fp, pa.float32()), FINGERPRINT_DIM
        ),
    }
    return pa.Table.from_pydict(columns, schema=schema_for(params))


class TileWriter:
    """Write tiles to uncommitted fragments; publish whole files atomically.

    ``add(source, table)`` buffers rows per source and spills them to
    fragments once ``max_buffer_rows`` is reached; ``finish(source)`` marks the
    source complete; ``commit()`` publishes every completed source in one
    Lance transaction (``Overwrite`` for a new dataset, else ``Append``).
    ``discard(source)`` drops a source's rows (its already-written data files
    stay unreferenced and are removed by ``cleanup_old_versions``).
    """

    def __init__(self, uri: str, params: DatasetParams, *, max_buffer_rows: int = 8192) -> None:
        self.uri = uri
        self.params = params
        self.schema = schema_for(params)
        self.max_buffer_rows = max_buffer_rows
        self._buffers: dict[str, list[pa.Table]] = {}
        self._buffered_rows: dict[str, int] = {}
        self._fragments: dict[str, list[Any]] = {}
        self._ready: list[str] = []
        self.rows_committed = 0
        self.commits = 0
        if _exists(uri):
            ds = open_dataset(uri)
            params.check_same(dataset_params(ds), uri)
            self._version: int | None = ds.version
        else:
            self._version = None

    @property
    def version(self) -> int | None:
        """The dataset version this writer last saw or made (None: not created yet)."""
        return self._version

    def add(self, source: str, table: pa.Table) -> None:
        if table.num_rows == 0:
            self._buffers.setdefault(source, [])
            return
        self._buffers.setdefault(source, []).append(table)
        self._buffered_rows[source] = self._buffered_rows.get(source, 0) + table.num_rows
        if self._buffered_rows[source] >= self.max_buffer_rows:
            self._spill(source)

    def _spill(self, source: str) -> None:
        tables = self._buffers.get(source) or []
        if not tables:
            return
        data = pa.concat_tables(tables)
        target = self.uri if self._version is None else lance.dataset(self.uri)
        frags = lance.fragment.write_fragments(data, target, schema=self.schema)
        self._fragments.setdefault(source, []).extend(frags)
        self._buffers[source] = []
        self._buffered_rows[source] = 0

    def finish(self, source: str) -> None:
        """Mark ``source`` complete: its rows go out with the next :meth:`commit`."""
        self._ready.append(source)

    def discard(self, source: str) -> None:
        self._buffers.pop(source, None)
        self._buffered_rows.pop(source, None)
        self._fragments.pop(source, None)
        if source in self._ready:
            self._ready.remove(source)

    @property
    def pending_sources(self) -> int:
        return len(self._ready)

    def commit(self) -> int | None:
        """Publish all finished sources in one transaction; return the new version.

        Returns ``None`` (and commits nothing) when no finished source has rows.
        """
        ready, self._ready = self._ready, []
        for source in ready:
            self._spill(source)
        frags = [f for s in ready for f in self._fragments.pop(s, [])]
        for s in ready:
            self._buffers.pop(s, None)
            self._buffered_rows.pop(s, None)
        if not frags:
            return None
        if self._version is None:
            op = lance.LanceOperation.Overwrite(self.schema, frags)
            ds = lance.LanceDataset.commit(self.uri, op)
        else:
            ds = lance.LanceDataset.commit(
                self.uri, lance.LanceOperation.Append(frags), read_version=self._version
            )
        self._version = ds.version
        self.rows_committed += sum(f.physical_rows for f in frags)
        self.commits += 1
        return int(ds.version)


def iter_fingerprints(
    ds: Any, batch_rows: int = 65536, columns: Iterable[str] = ("tile_id",)
) -> Iterator[tuple[pa.RecordBatch, np.ndarray]]:
    """Stream ``(batch, fingerprints)`` pairs, ``batch_rows`` at a time (bounded memory)."""
    cols = [*columns, "fingerprint"]
    for batch in ds.to_batches(columns=cols, batch_size=batch_rows):
        fp = batch.column("fingerprint")
        values = fp.values.to_numpy(zero_copy_only=False).reshape(len(fp), FINGERPRINT_DIM)
        yield batch, values


def local_path(uri: str) -> str:
    """``uri`` as an absolute path when it is local (URIs pass unchanged)."""
    return uri if "://" in uri else os.path.abspath(uri)


def dataset_info(uri: str) -> dict[str, Any]:
    """Facts about a dataset for ``ris info``."""
    ds = open_dataset(local_path(uri))
    params = dataset_params(ds)
    sources = ds.to_table(columns=["source"]).column("source").unique()
    fp_type = ds.schema.field("fingerprint").type
    return {
        "uri": ds.uri,
        "rows": ds.count_rows(),
        "sources": len(sources),
        "model": params.model,
        "tile_size": params.tile_size,
        "stride": params.stride,
        "fingerprint": f"{fp_type.value_type}[{fp_type.list_size}]",
        "version": ds.version,
        "versions": len(ds.versions()),
        "fragments": len(ds.get_fragments()),
        "lance_format": ds.data_storage_version,
        "pylance": lance.__version__,
        "size_bytes": dataset_size_bytes(local_path(uri)),
    }
