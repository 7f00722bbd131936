"""The tile table: its Arrow schema, the dataset parameters, and batch -> table.

Lance-free (numpy and pyarrow only), so an embedder actor builds tables in
the store's schema without importing Lance (about 0.2 CPU-s less at every
actor start); :mod:`ris_ray.store` writes and reads them. A dataset's
parameters (tile size, stride, model id) live in the Arrow schema metadata
under ``ris_ray.*`` keys so a later run or a query can check it is compatible.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import pyarrow as pa

from ris_ray.config import FINGERPRINT_DIM
from ris_ray.errors import DatasetError, ModelMismatchError
from ris_ray.records import TileBatch

__all__ = [
    "FINGERPRINT_TYPES",
    "FORMAT_VERSION",
    "SCHEMA",
    "DatasetParams",
    "cast_fingerprints",
    "dataset_params",
    "fingerprint_dtype",
    "fingerprint_type",
    "schema_for",
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


def to_table(
    batch: TileBatch, params: DatasetParams, fingerprint: str = FINGERPRINT_TYPES[0]
) -> pa.Table:
    """Build an Arrow table in :func:`schema_for` ``(params, fingerprint)`` from a
    tile batch with fingerprints.

    This is the one place fingerprints are narrowed: float32 from the embedder
    is rounded to nearest float16 when ``fingerprint`` is ``"float16"`` (the
    type comes from :attr:`TileStore.fingerprint`, so it runs in the actor).
    """
    n = len(batch)
    if batch.fingerprint is None:
        raise ValueError("to_table: the batch has no fingerprints yet")
    dtype = fingerprint_dtype(fingerprint)
    fp = np.ascontiguousarray(batch.fingerprint, dtype=dtype).reshape(-1)

    def geo(name: str) -> pa.Array:
        values = np.asarray(getattr(batch, name), dtype=np.float64)
        return pa.array(values, mask=np.isnan(values), type=pa.float64())

    columns = {
        "tile_id": pa.array(list(batch.tile_id), pa.string()),
        "source": pa.array(list(batch.source), pa.string()),
        "row": pa.array(batch.row, pa.int32()),
        "col": pa.array(batch.col, pa.int32()),
        "width": pa.array(batch.width, pa.int32()),
        "height": pa.array(batch.height, pa.int32()),
        "crs": pa.array([batch.crs] * n, pa.string()),
        **{name: geo(name) for name in ("minx", "miny", "maxx", "maxy", "lon", "lat")},
        "valid_fraction": pa.array(batch.valid_fraction, pa.float32()),
        "model": pa.array([params.model] * n, pa.string()),
        "thumbnail": pa.array(list(batch.thumbnail), pa.binary()),
        "fingerprint": pa.FixedSizeListArray.from_arrays(
            pa.array(fp, pa.from_numpy_dtype(dtype)), FINGERPRINT_DIM
        ),
    }
    return pa.Table.from_pydict(columns, schema=schema_for(params, fingerprint))


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
