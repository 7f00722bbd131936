"""The manifest: which source files a dataset already holds, and in what state.

It is a small Lance dataset nested in the tile dataset's directory
(``DB/_ris_manifest.lance``), so it travels with the dataset and Lance's own
cleanup leaves it alone. One row per source file:

``path, size, mtime_ns`` identify the file. A file whose size or
modification time differs from its row is *changed* and is re-ingested (its
old tiles are replaced atomically); this is the same rule ``make`` and
``rsync`` use, and it never reads pixels to decide. An object in a store
(``s3://...``) is identified by ``size`` and ``etag`` instead (``mtime_ns``
then holds its last-modified time): the ETag changes whenever the object is
replaced. Manifests written before the ``etag`` column existed are read as
they are (``etag`` null) and gain the column on their next update. ``status`` is
``ok``/``skipped``/``failed``; failed files are retried on the next run.

Consistency with the tiles: the tile commit comes first, the manifest commit
second. A run killed between the two leaves files that are in the tiles but
not in the manifest; the next run re-ingests them, and because tiles are
merged on their deterministic ``tile_id`` no duplicates can appear.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import Any

import pyarrow as pa

from ris_ray.core.errors import ObjectStoreError
from ris_ray.core.location import Location
from ris_ray.core.sql import sql_in
from ris_ray.store.lance_io import open_lance, write_lance

warnings.filterwarnings("ignore", "lance is not fork-safe")

__all__ = ["MANIFEST_NAME", "FileRecord", "Manifest", "manifest_uri"]

MANIFEST_NAME = "_ris_manifest.lance"

SCHEMA = pa.schema(
    [
        pa.field("path", pa.string(), nullable=False),
        pa.field("size", pa.int64(), nullable=False),
        pa.field("mtime_ns", pa.int64(), nullable=False),
        pa.field("status", pa.string(), nullable=False),
        pa.field("tiles", pa.int64(), nullable=False),
        pa.field("tiles_low_valid", pa.int64(), nullable=False),
        pa.field("reason", pa.string()),
        pa.field("dataset_version", pa.int64()),
        pa.field("ingested_at", pa.float64(), nullable=False),
        pa.field("etag", pa.string()),
    ]
)


def manifest_uri(db: str | Location) -> str:
    return Location.parse(db).join(MANIFEST_NAME).url


@dataclass(frozen=True)
class FileRecord:
    path: str
    size: int
    mtime_ns: int
    status: str
    tiles: int = 0
    tiles_low_valid: int = 0
    reason: str | None = None
    dataset_version: int | None = None
    ingested_at: float = 0.0
    etag: str | None = None

    def same_file(self, size: int, mtime_ns: int, etag: str | None = None) -> bool:
        """Same size and ETag when both sides have one (objects), else same size and mtime."""
        if etag is not None and self.etag is not None:
            return self.size == size and self.etag == etag
        return self.size == size and self.mtime_ns == mtime_ns


class Manifest:
    """Read and update the manifest of the dataset at ``db``."""

    def __init__(self, db: str | Location) -> None:
        self.location = Location.parse(db).join(MANIFEST_NAME)
        self.uri = self.location.url

    def _dataset(self) -> Any | None:
        try:
            return open_lance(self.location)
        except ObjectStoreError:
            raise
        except (ValueError, OSError):
            return None

    def load(self) -> dict[str, FileRecord]:
        ds = self._dataset()
        if ds is None:
            return {}
        return {row["path"]: FileRecord(**row) for row in ds.to_table().to_pylist()}

    def upsert(self, records: Iterable[FileRecord]) -> None:
        rows = [asdict(r) for r in records]
        if not rows:
            return
        now = time.time()
        for row in rows:
            row["ingested_at"] = row["ingested_at"] or now
        table = pa.Table.from_pylist(rows, schema=SCHEMA)
        ds = self._dataset()
        if ds is None:
            write_lance(table, self.location, schema=SCHEMA)
            return
        missing = [f for f in SCHEMA if f.name not in ds.schema.names]
        if missing:  # a manifest from before these columns: add them (all null)
            ds.add_columns(missing)
            ds = open_lance(self.location)
        (
            ds.merge_insert("path")
            .when_matched_update_all()
            .when_not_matched_insert_all()
            .execute(table)
        )

    def replace_all(self, records: Iterable[FileRecord]) -> None:
        rows = [asdict(r) for r in records]
        table = pa.Table.from_pylist(rows, schema=SCHEMA)
        write_lance(table, self.location, schema=SCHEMA, mode="overwrite")

    def delete(self, paths: Iterable[str]) -> None:
        paths = list(paths)
        ds = self._dataset()
        if ds is not None and paths:
            ds.delete(sql_in("path", paths))

    def cleanup(self, older_than: timedelta) -> None:
        """Remove manifest versions older than ``older_than``."""
        ds = self._dataset()
        if ds is not None:
            ds.cleanup_old_versions(older_than=older_than)

    def compact(self) -> None:
        ds = self._dataset()
        if ds is not None and len(ds.get_fragments()) > 1:
            ds.optimize.compact_files()
