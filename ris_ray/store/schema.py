"""The tile table: its Arrow schema, the dataset parameters, and batch -> rows.

Lance-free (numpy and pyarrow only), so an embedder actor encodes rows in
the store's schema without importing Lance (about 0.2 CPU-s less at every
actor start), nor pandas (see :func:`to_record_batch`); :mod:`ris_ray.store.tilestore`
stages, writes and reads them. A dataset's
parameters (tile size, stride, model id) live in the Arrow schema metadata
under ``ris_ray.*`` keys so a later run or a query can check it is compatible.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import pyarrow as pa

from ris_ray.core.config import FINGERPRINT_DIM
from ris_ray.core.errors import DatasetError, ModelMismatchError
from ris_ray.core.records import TileBatch

__all__ = [
    "FINGERPRINT_TYPES",
    "FORMAT_VERSION",
    "SCHEMA",
    "DatasetParams",
    "EncodedRows",
    "cast_fingerprints",
    "dataset_params",
    "decode_rows",
    "encode_record_batch",
    "encode_rows",
    "fingerprint_dtype",
    "fingerprint_type",
    "schema_digest",
    "schema_for",
    "schema_id",
    "to_record_batch",
    "to_table",
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
        "fingerprint", pa.list_(pa.field("item", pa.float16()), FINGERPRINT_DIM), nullable=False
    ),
]
#: Row schema of new datasets, without dataset metadata (see :func:`schema_for`).
#: Fingerprints are float16 (1 KB per tile; recall@10 1.0 against float32 in
#: benchmarks/run.py); datasets written before keep their float32 column.
SCHEMA = pa.schema(_FIELDS)
#: The fingerprint element types a dataset may hold; the first is written by default.
FINGERPRINT_TYPES: Final = ("float16", "float32")


def fingerprint_type(ds: Any) -> str:
    """``"float16"`` or ``"float32"``: the element type of a dataset's fingerprint column."""
    t = ds.schema.field("fingerprint").type.value_type
    return "float16" if t == pa.float16() else "float32"


def fingerprint_dtype(name: str) -> np.dtype[Any]:
    """The numpy dtype for a :data:`FINGERPRINT_TYPES` name (distances are always
    computed in float32 or wider after reading)."""
    if name not in FINGERPRINT_TYPES:
        raise ValueError(f"fingerprint type {name!r}: use one of {FINGERPRINT_TYPES}")
    return np.dtype(name)


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


@functools.lru_cache(maxsize=8)
def schema_for(params: DatasetParams, fingerprint: str = FINGERPRINT_TYPES[0]) -> pa.Schema:
    """:data:`SCHEMA` with ``params`` as metadata and ``fingerprint`` elements."""
    value = pa.from_numpy_dtype(fingerprint_dtype(fingerprint))
    i = SCHEMA.get_field_index("fingerprint")
    field = pa.field("fingerprint", pa.list_(pa.field("item", value), FINGERPRINT_DIM), False)
    return SCHEMA.set(i, field).with_metadata(params.to_metadata())


def dataset_params(ds: Any) -> DatasetParams:
    meta = {k.decode(): v.decode() for k, v in (ds.schema.metadata or {}).items()}
    try:
        return DatasetParams(
            int(meta["ris_ray.tile_size"]), int(meta["ris_ray.stride"]), meta["ris_ray.model"]
        )
    except KeyError:
        raise DatasetError(f"{ds.uri}: missing ris_ray metadata; was it written by ris?") from None


@dataclass(frozen=True)
class EncodedRows:
    """One window's rows in a store schema as one Arrow IPC record-batch message:
    what an embedder actor returns. The driver stages the message as it is
    (:meth:`ris_ray.store.writer.TileWriter.add_encoded`), so no row is unpickled,
    cast or re-encoded on the way to Lance."""

    rows: int
    message: pa.Buffer
    schema: str  # :func:`schema_digest` of the ``(params, fingerprint)`` the rows are in


def to_record_batch(
    batch: TileBatch, params: DatasetParams, fingerprint: str = FINGERPRINT_TYPES[0]
) -> pa.RecordBatch:
    """A tile batch with fingerprints as a record batch in :func:`schema_for`
    ``(params, fingerprint)``.

    This is the one place fingerprints are narrowed: float32 from the embedder
    is rounded to nearest float16 when ``fingerprint`` is ``"float16"`` (the
    type comes from :attr:`TileStore.fingerprint`, so it runs in the actor).
    Columns are laid over numpy buffers (:func:`_numbers`, :func:`_strings`)
    rather than built with ``pa.array``, whose first call imports pandas
    (apache/arrow#34994: ~0.2 CPU-s and a heap the garbage collector scans
    in every embedder actor).
    """
    n = len(batch)
    if batch.fingerprint is None:
        raise ValueError("to_record_batch: the batch has no fingerprints yet")
    dtype = fingerprint_dtype(fingerprint)
    fp = np.ascontiguousarray(batch.fingerprint, dtype=dtype).reshape(-1)
    geo = {
        name: _numbers(getattr(batch, name), np.float64, nullable=True)
        for name in ("minx", "miny", "maxx", "maxy", "lon", "lat")
    }
    columns = {
        "tile_id": _strings(batch.tile_id),
        "source": _strings(batch.source),
        "row": _numbers(batch.row, np.int32),
        "col": _numbers(batch.col, np.int32),
        "width": _numbers(batch.width, np.int32),
        "height": _numbers(batch.height, np.int32),
        "crs": _strings([batch.crs] * n),
        **geo,
        "valid_fraction": _numbers(batch.valid_fraction, np.float32),
        "model": _strings([params.model] * n),
        "thumbnail": _strings(batch.thumbnail, pa.binary()),
        "fingerprint": pa.FixedSizeListArray.from_arrays(_numbers(fp, dtype), FINGERPRINT_DIM),
    }
    schema = schema_for(params, fingerprint)
    return pa.RecordBatch.from_arrays([columns[f.name] for f in schema], schema=schema)


def to_table(
    batch: TileBatch, params: DatasetParams, fingerprint: str = FINGERPRINT_TYPES[0]
) -> pa.Table:
    """:func:`to_record_batch` as a table."""
    return pa.Table.from_batches([to_record_batch(batch, params, fingerprint)])


def encode_rows(
    batch: TileBatch, params: DatasetParams, fingerprint: str = FINGERPRINT_TYPES[0]
) -> EncodedRows:
    """:func:`to_record_batch` as one IPC message (:class:`EncodedRows`)."""
    return encode_record_batch(to_record_batch(batch, params, fingerprint), params, fingerprint)


def encode_record_batch(
    rows: pa.RecordBatch, params: DatasetParams, fingerprint: str = FINGERPRINT_TYPES[0]
) -> EncodedRows:
    """``rows`` (in :func:`schema_for` ``(params, fingerprint)``) as one IPC message."""
    return EncodedRows(rows.num_rows, rows.serialize(), schema_digest(params, fingerprint))


def decode_rows(rows: EncodedRows, schema: pa.Schema) -> pa.RecordBatch:
    """The record batch of ``rows`` read in ``schema`` (zero-copy), checked:
    :class:`ValueError` when the message does not fit it or holds another
    number of rows than announced. (Check ``rows.schema`` first: a message
    of another schema may still read.)"""
    try:
        batch = pa.ipc.read_record_batch(rows.message, schema)
        batch.validate()
    except (pa.ArrowException, ValueError) as exc:
        raise ValueError(f"encoded rows unreadable: {exc}") from None
    if batch.num_rows != rows.rows:
        raise ValueError(f"{batch.num_rows} rows encoded, {rows.rows} announced")
    return batch


@functools.lru_cache(maxsize=8)
def schema_digest(params: DatasetParams, fingerprint: str = FINGERPRINT_TYPES[0]) -> str:
    """A short digest of :func:`schema_for` ``(params, fingerprint)`` (fields, types
    and metadata): IPC messages carry no schema, so the rows' schema travels as
    this beside them. Cached on its arguments, which hash in well under a
    microsecond (a ``pa.Schema`` takes ~7 us): it is looked up once per window."""
    return schema_id(schema_for(params, fingerprint))


def schema_id(schema: pa.Schema) -> str:
    """The digest :func:`schema_digest` gives, of any schema (uncached: ~20 us)."""
    return hashlib.sha1(schema.serialize().to_pybytes()).hexdigest()[:16]


def _validity(valid: np.ndarray) -> tuple[pa.Buffer | None, int]:
    """An Arrow validity bitmap (LSB first) of a boolean mask, and its null count."""
    nulls = int(valid.size - np.count_nonzero(valid))
    return (pa.py_buffer(np.packbits(valid, bitorder="little")) if nulls else None), nulls


def _numbers(values: Any, dtype: Any, *, nullable: bool = False) -> pa.Array:
    """A fixed-width Arrow array over ``values`` as ``dtype`` (no copy when it
    already is); with ``nullable``, NaN is null."""
    data = np.ascontiguousarray(values, dtype=dtype).reshape(-1)
    validity, nulls = _validity(~np.isnan(data)) if nullable else (None, 0)
    kind = pa.from_numpy_dtype(data.dtype)
    return pa.Array.from_buffers(kind, len(data), [validity, pa.py_buffer(data)], nulls)


def _strings(values: Any, kind: pa.DataType | None = None) -> pa.Array:
    """A string (or ``kind``: binary) Arrow array of ``str``/``bytes`` values, ``None`` null:
    32-bit offsets ``offsets[i + 1] = offsets[i] + len(values[i])`` over the joined bytes."""
    raw = [v.encode() if isinstance(v, str) else (v or b"") for v in values]
    offsets = np.zeros(len(raw) + 1, np.int32)
    np.cumsum([len(v) for v in raw], out=offsets[1:])
    validity, nulls = _validity(np.array([v is not None for v in values], bool))
    buffers = [validity, pa.py_buffer(offsets), pa.py_buffer(b"".join(raw))]
    return pa.Array.from_buffers(kind or pa.string(), len(raw), buffers, nulls)


def cast_fingerprints(table: pa.Table, fingerprint: str) -> pa.Table:
    """``table`` with its fingerprint column converted to ``fingerprint`` elements
    (through numpy: float32 -> float16 rounds to nearest, float16 -> float32 is exact)."""
    col = table.column("fingerprint").combine_chunks()
    dtype = fingerprint_dtype(fingerprint)
    if col.type.value_type == pa.from_numpy_dtype(dtype):
        return table
    values = col.values.to_numpy(zero_copy_only=False).astype(dtype)
    fixed = pa.FixedSizeListArray.from_arrays(pa.array(values), FINGERPRINT_DIM)
    i = table.schema.get_field_index("fingerprint")
    return table.set_column(i, pa.field("fingerprint", fixed.type, False), fixed)
