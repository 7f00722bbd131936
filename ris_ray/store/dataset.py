"""Reading a ris_ray dataset: open and check it, its size, facts and versions.

:func:`open_dataset` is the one way a reader opens a tile dataset: it says in
one line why a location holds none (missing, not Lance, not ris_ray);
:func:`dataset_info` and :func:`version_history` are what ``ris info`` shows.
Writes go through :class:`~ris_ray.store.tilestore.TileStore`.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Final

from ris_ray.core.config import FINGERPRINT_DIM
from ris_ray.core.errors import DatasetError, ObjectStoreError
from ris_ray.core.location import Location
from ris_ray.core.objstore import prefix_size
from ris_ray.store.lance_io import open_lance
from ris_ray.store.schema import dataset_params, fingerprint_type

# Lance logs a WARN line for every fragment written before the first commit.
os.environ.setdefault("LANCE_LOG", "error")
# Index statistics without the IVF centroids (megabytes at 4096 partitions).
os.environ.setdefault("LANCE_INCLUDE_VECTOR_CENTROIDS", "false")
# Lance warns at every fork; Ray forks only to exec its own processes.
warnings.filterwarnings("ignore", "lance is not fork-safe")
import lance  # noqa: E402

__all__ = [
    "LANCE_FILE_FORMAT",
    "RETRAIN_GROWTH",
    "dataset_exists",
    "dataset_info",
    "dataset_size_bytes",
    "index_info",
    "lance_dataset",
    "open_dataset",
    "trained_rows_key",
    "version_history",
]

#: Lance file format for new datasets. Its exact vector scan reads the
#: fixed-size-list fingerprints 2-4x faster than the default 2.2 here
#: (benchmarks/run.py, stage 4); appends keep a dataset's own format.
LANCE_FILE_FORMAT: Final = "2.0"


def dataset_exists(uri: str | Location) -> bool:
    """True when a Lance dataset is at ``uri`` (a store failure raises)."""
    loc = Location.parse(uri)
    if loc.is_remote:
        try:
            open_lance(loc)
        except ObjectStoreError:
            raise
        except (ValueError, OSError):
            return False
        return True
    return (Path(loc.url) / "_versions").is_dir()


def lance_dataset(uri: str | Location) -> Any:
    """The Lance dataset at ``uri`` (latest version), without ris_ray checks."""
    return open_lance(uri)


def open_dataset(uri: str | Location, version: int | None = None) -> Any:
    """Open a ris_ray Lance dataset, or raise :class:`DatasetError` saying why not."""
    uri = Location.parse(uri)
    if not dataset_exists(uri):
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


def dataset_size_bytes(uri: str | Location) -> int:
    """Bytes under a dataset: its directory, or its prefix in an object store
    (0 for other remote URIs)."""
    loc = Location.parse(uri)
    if loc.is_object:
        return prefix_size(loc)
    if loc.is_remote:
        return 0
    return sum(p.stat().st_size for p in Path(loc.url).rglob("*") if p.is_file())


def dataset_info(uri: str | Location) -> dict[str, Any]:
    """Facts about a dataset for ``ris info``."""
    loc = Location.parse(uri)
    ds = open_dataset(loc)
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
        "size_bytes": dataset_size_bytes(loc),
        "indexes": index_info(ds),
    }


#: Retrain a vector index (``ris index``) once the rows it covers have grown
#: past this many times the rows it was trained on: ingest folds new rows
#: into the existing partitions (``optimize_indices``), whose centroids then
#: describe less and less of the data, and partitions grow past ``sqrt(rows)``.
RETRAIN_GROWTH = 2.0


def trained_rows_key(index: str) -> str:
    """The dataset config key under which ``ris index`` keeps the rows ``index`` was trained on."""
    return f"ris.trained_rows.{index}"


def index_info(ds: Any) -> list[dict[str, Any]]:
    """Each vector index of ``ds``: its rows indexed and not (appended rows
    that ingest has not folded in yet: queries scan them exactly), their
    share, the rows it was trained on (``ris index`` records them in the
    dataset's config, :func:`trained_rows_key`; else its rows now) and
    whether it is due a retrain (:data:`RETRAIN_GROWTH`)."""
    out = []
    config = ds.config()
    for idx in ds.describe_indices():
        stats = ds.stats.index_stats(idx.name)
        kind = str(stats.get("index_type", ""))
        if not any(v in kind for v in ("IVF", "HNSW")):
            continue
        indexed, unindexed = int(stats["num_indexed_rows"]), int(stats["num_unindexed_rows"])
        trained = int(config.get(trained_rows_key(idx.name), indexed))
        total = indexed + unindexed
        out.append(
            {
                "name": idx.name,
                "type": kind,
                "indexed_rows": indexed,
                "unindexed_rows": unindexed,
                "unindexed_share": round(unindexed / total, 4) if total else 0.0,
                "trained_rows": trained,
                "retrain": total > RETRAIN_GROWTH * trained,
            }
        )
    return out


def version_history(uri: str | Location) -> list[dict[str, Any]]:
    """Every retained version: number, UTC time, rows, the change in rows and
    the Lance operation that made it (``Overwrite`` create/rebuild, ``Append``
    new files, ``Update`` replaced files, ``Delete`` prune, ``Rewrite``
    compaction)."""
    ds = open_dataset(Location.parse(uri))
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
