"""The Ray tasks that read rasters: probing files and cutting windows into tiles.

They live apart from :mod:`ris_ray.pipeline` so that a tiling worker imports
only rasterio, numpy and Pillow (unpickling a task imports its module; the
pipeline module would pull in torch, about 0.5 GB per worker for nothing).
Application errors come back as :class:`~ris_ray.records.Failure` values, so
a bad file never fails the run; worker crashes are retried by Ray
(``max_retries``).
"""

from __future__ import annotations

import ray

from ris_ray.errors import RisError
from ris_ray.raster import display_path
from ris_ray.records import Failure, FileIdent, TileBatch, TileStats
from ris_ray.tiling import RasterInfo, TileSpec, WindowJob, probe, read_tiles

__all__ = ["TASK_RETRIES", "error_text", "probe_task", "tile_task"]

TASK_RETRIES = 3


def error_text(exc: BaseException) -> str:
    """One line for a failure: our own message as is (also when a Ray task or
    actor raised it), else the exception type and its first line."""
    cause = getattr(exc, "cause", None)  # RayTaskError wraps the task's exception
    if isinstance(cause, RisError):
        return str(cause)
    if isinstance(exc, RisError):
        return str(exc)
    first = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {first}"


@ray.remote(num_cpus=1, max_retries=TASK_RETRIES)
def probe_task(
    paths: list[str], bands: tuple[int, ...] | None, idents: list[FileIdent | None]
) -> list[RasterInfo | Failure]:
    """Probe files, one result each (``idents``: their identities where the caller
    has them: no second stat or HEAD); an unusable file comes back as a
    :class:`Failure` naming it. Several small files per task spare the driver
    a Ray call each."""
    return [_probe_one(path, bands, ident) for path, ident in zip(paths, idents, strict=True)]


def _probe_one(
    path: str, bands: tuple[int, ...] | None, ident: FileIdent | None
) -> RasterInfo | Failure:
    try:
        return probe(path, bands, ident=ident)
    except Exception as exc:
        shown = display_path(path)
        text = error_text(exc)
        return Failure(text if shown in str(exc) else f"{shown}: {text}")


@ray.remote(num_cpus=1, max_retries=TASK_RETRIES, num_returns=2)
def tile_task(
    info: RasterInfo, job: WindowJob, spec: TileSpec
) -> tuple[TileStats | Failure, TileBatch | None]:
    """Cut one window's tiles. Returns ``(stats, batch)``; ``batch`` is None if empty
    or unreadable (then ``stats`` is the :class:`Failure`)."""
    try:
        batch, stats = read_tiles(info, job, spec)
    except Exception as exc:
        return Failure(error_text(exc)), None
    return stats, (batch if stats.n_tiles else None)
