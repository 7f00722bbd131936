"""Planning: the work items of an ingest run, and how they are cut out.

A probed file's tile grid becomes read windows (:func:`plan_file`, skipping
the absent blocks of a sparse TIFF); windows travel to tiling tasks, and cut
windows to embedder calls, in groups up to a number of tiles
(:func:`take_group`). The items themselves (:class:`Probe`, :class:`Tile`,
:class:`Embed`) are what the :class:`~ris_ray.ingest.scheduler.Scheduler`
hands out under integer tickets. No Ray, no I/O.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from ris_ray.raster.reading import RasterInfo
from ris_ray.raster.tiling import TileSpec, WindowJob, plan_windows

__all__ = [
    "Embed",
    "FilePlan",
    "Part",
    "Probe",
    "Tile",
    "Window",
    "Work",
    "call_tiles",
    "plan_file",
    "take_group",
    "window_tiles",
]


_T = TypeVar("_T")


@dataclass(frozen=True)
class Probe:
    """Read the headers of ``paths`` (one task)."""

    ticket: int
    paths: tuple[str, ...]


@dataclass(frozen=True)
class Window:
    """One window of ``path`` to read and cut (``info``: the file's header)."""

    path: str
    info: RasterInfo
    job: WindowJob
    tries: int = 0  # tasks with it that crashed (cut-and-embed tasks: redone by the driver)


@dataclass(frozen=True)
class Tile:
    """Cut the tiles of ``windows`` in one task: one window, or several small
    ones (of one file or of several small files) up to ``task_tiles`` tiles."""

    ticket: int
    windows: tuple[Window, ...]
    group: int = 0  # the embedder group its tiles go to (the node that cuts them)

    @property
    def n_tiles(self) -> int:
        """The planned tiles of its windows."""
        return sum(w.job.n_tiles for w in self.windows)


@dataclass(frozen=True)
class Part:
    """One window's cut tiles waiting for an embedder: ``batch`` is an opaque
    handle (e.g. a Ray object ref) to ``n_tiles`` tiles of ``path``."""

    path: str
    batch: Any
    n_tiles: int
    since: float = 0.0  # when it began to wait (the scheduler's clock)
    alone: bool = False  # retried alone after a call of several windows failed
    group: int = 0  # the embedder group it waits for (that of its tiling task)
    tries: int = 0  # calls with it that crashed (an embedder or its node lost)
    node: str = ""  # the node that cut it (empty: unknown), for the locality counts


@dataclass(frozen=True)
class Embed:
    """Embed the batches of ``parts`` (one or more windows) in one call on embedder ``actor``."""

    ticket: int
    parts: tuple[Part, ...]
    actor: int

    @property
    def n_tiles(self) -> int:
        return sum(p.n_tiles for p in self.parts)


Work = Probe | Tile | Embed


@dataclass(frozen=True)
class FilePlan:
    """The windows of one probed file: ``tiles_planned`` (the whole grid),
    ``tiles_empty`` (under absent sparse blocks: never read), the ``readable``
    windows and, when there are none, why the file is skipped."""

    tiles_planned: int
    tiles_empty: int
    readable: tuple[WindowJob, ...]
    skip_reason: str | None = None


def plan_file(info: RasterInfo, spec: TileSpec, window_px: int) -> FilePlan:
    """Plan a probed file's windows (skipping absent sparse blocks)."""
    jobs = plan_windows(
        info.width,
        info.height,
        spec.tile,
        spec.stride,
        block_shape=info.block_shape,
        target_px=window_px,
    )
    tiles_planned = sum(j.n_tiles for j in jobs)
    shape = (spec.tile, spec.stride)
    readable = [j for j in jobs if info.window_has_data(j.window(*shape))]
    tiles_empty = tiles_planned - sum(j.n_tiles for j in readable)
    reason = None
    if not readable:
        reason = (
            f"{info.width}x{info.height} is smaller than one {spec.tile}x{spec.tile} tile"
            if not tiles_planned
            else f"all {tiles_planned} tiles lie in absent (sparse) blocks"
        )
    return FilePlan(tiles_planned, tiles_empty, tuple(readable), reason)


def take_group(queue: deque[_T], tiles: Callable[[_T], int], limit: int) -> list[_T]:
    """Take the first item of ``queue`` and the next ones while their ``tiles``
    sum to at most ``limit`` (one item at least, whatever its size)."""
    group = [queue.popleft()]
    total = tiles(group[0])
    while queue and total + tiles(queue[0]) <= limit:
        group.append(queue.popleft())
        total += tiles(group[-1])
    return group


def window_tiles(window: Window) -> int:
    """A window's planned tiles (its size in a tiling task)."""
    return window.job.n_tiles


def call_tiles(part: Part) -> int:
    """A part's tiles in a call; one retried alone counts as more than any call
    holds, so :func:`take_group` neither adds it to a call nor adds to its own."""
    return part.n_tiles if not part.alone else 1 << 62
