"""The Ray tasks that read rasters: probing files and cutting windows into tiles.

They live apart from :mod:`ris_ray.ingest.pipeline` so that a tiling worker imports
only rasterio, numpy and Pillow (unpickling a task imports its module; the
pipeline module would pull in torch, about 0.5 GB per worker for nothing).
Application errors come back as :class:`~ris_ray.core.records.Failure` values, so
a bad file never fails the run; worker crashes are retried by Ray
(``max_retries``).
"""

from __future__ import annotations

import functools
from dataclasses import replace
from typing import Any

import ray

from ris_ray.core.errors import RisError
from ris_ray.core.objstore import S3Settings, install
from ris_ray.core.records import Failure, FileIdent, TileBatch, TileStats
from ris_ray.ingest.placement import on_node
from ris_ray.raster.dataset import display_path
from ris_ray.raster.reading import RasterInfo, probe, read_tiles
from ris_ray.raster.tiling import TileSpec, WindowJob

__all__ = ["TASK_RETRIES", "error_text", "probe_task", "tile_task", "tile_windows"]

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
    paths: list[str],
    bands: tuple[int, ...] | None,
    idents: list[FileIdent | None],
    settings: S3Settings | None = None,
) -> list[RasterInfo | Failure]:
    """Probe files, one result each (``idents``: their identities where the caller
    has them: no second stat or HEAD); an unusable file comes back as a
    :class:`Failure` naming it. Several small files per task spare the driver
    a Ray call each. ``settings``: the driver's object-store settings (an
    argument, not ``runtime_env`` variables, which Ray logs in clear)."""
    install(settings)
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


@ray.remote(num_cpus=1, max_retries=TASK_RETRIES)
def tile_task(
    windows: list[tuple[RasterInfo, WindowJob]],
    spec: TileSpec,
    settings: S3Settings | None = None,
) -> tuple[Any, ...]:
    """Cut the tiles of ``windows`` (one, or several small ones), one after the
    other. Returns ``(stats, batch_1, ..., batch_k)``: ``stats[i]`` for window
    ``i`` (a :class:`Failure` when it could not be read), ``batch_i`` its tiles
    (None if empty or failed), each its own Ray object, so an embedder call
    takes the windows it wants. Submit it with ``num_returns=k + 1``
    (:func:`tile_windows`); ``settings`` as for :func:`probe_task`."""
    install(settings)
    node = ray.get_runtime_context().get_node_id()  # where the pixels are: for the report
    stats: list[TileStats | Failure] = []
    batches: list[TileBatch | None] = []
    for info, job in windows:
        try:
            batch, window_stats = read_tiles(info, job, spec)
        except Exception as exc:
            stats.append(Failure(error_text(exc)))
            batches.append(None)
            continue
        stats.append(replace(window_stats, node=node))
        batches.append(batch if window_stats.n_tiles else None)
    return (stats, *batches)


@functools.cache
def _tile_task_for(k: int, node: str | None) -> Any:
    if node is None:
        return tile_task.options(num_returns=k + 1)
    return tile_task.options(num_returns=k + 1, scheduling_strategy=on_node(node))


def tile_windows(
    windows: list[tuple[RasterInfo, WindowJob]],
    spec: TileSpec,
    settings: S3Settings | None = None,
    node: str | None = None,
) -> tuple[Any, list[Any]]:
    """Submit :func:`tile_task` for ``windows`` (on ``node`` while it is alive,
    None: anywhere): the ref of its stats and the refs of its ``len(windows)`` batches."""
    refs = _tile_task_for(len(windows), node).remote(windows, spec, settings)
    return refs[0], list(refs[1:])
