"""The ingest scheduler: what to run next, and what each finished task means.

No Ray here: the scheduler hands out :class:`Work` items (probe a file, tile a
window, embed a batch), keeps a ledger of the work in flight under integer
tickets, and takes back one event per finished item:

- :meth:`Scheduler.probed` the :class:`~ris_ray.raster.tiling.RasterInfo` (or
  :class:`~ris_ray.core.records.Failure`) of each file of a probe (its windows are
  planned and queued; ``probe_files`` files per probe task),
- :meth:`Scheduler.tiled` the :class:`~ris_ray.core.records.TileStats` (or
  :class:`~ris_ray.core.records.Failure`) of each window of a tiling task (a
  non-empty batch is queued for an embedder; ``task_tiles`` planned tiles
  per task: small windows, e.g. of small files, travel several to a task),
- :meth:`Scheduler.embedded` the rows an embedder produced per window,
- :meth:`Scheduler.failed` a :class:`~ris_ray.core.records.Failure`, whatever the
  kind of work.

A file *settles* when its last window is handled; the driver stages it for
the next commit (:meth:`Scheduler.take_settled`).

Embed calls are filled, as a batching server fills its batches: one call
takes the waiting windows up to ``embed_tiles`` tiles (at least one window),
and goes out once that many wait, when the oldest has waited ``hold_s``, or
when no window is being read (nothing more would come). Small windows (small
files: a few tiles each) thus travel several to a call: fewer calls per tile
for the driver and the actor, fuller batches on a GPU. When such a call
fails, each of its windows is tried again alone, so one bad window fails
only its own file.

Backpressure, every stage bounded: at most ``max_inflight`` tiling tasks
run (each reads one window, or small windows up to ``task_tiles`` tiles);
a task starts only while fewer than ``embed_tiles`` tiles per embedder wait
for one; each embedder holds at most ``embed_slots`` calls.
Until :meth:`Scheduler.embedders_ready` (the embedders start: a Ray worker,
torch, the model, CUDA take seconds) no call goes out and tiling reads
ahead up to ``startup_tiles`` tiles (a share of the object store), so the
embedders start on a full queue instead of the CPUs idling meanwhile.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from ris_ray.core.records import Failure, TileStats
from ris_ray.raster.dataset import display_path
from ris_ray.raster.tiling import RasterInfo, TileSpec, WindowJob, plan_windows

__all__ = [
    "Embed",
    "FileReport",
    "Part",
    "Probe",
    "Scheduler",
    "Settled",
    "Tile",
    "Window",
    "Work",
    "take_group",
]


_T = TypeVar("_T")


@dataclass
class FileReport:
    """What happened to one input file."""

    path: str
    status: str = "pending"  # ok | skipped | failed | unchanged
    tiles_planned: int = 0
    tiles_written: int = 0
    tiles_low_valid: int = 0
    tiles_empty: int = 0  # under absent blocks of a sparse TIFF: never read
    windows: int = 0
    windows_failed: int = 0
    reason: str | None = None


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


@dataclass(frozen=True)
class Tile:
    """Cut the tiles of ``windows`` in one task: one window, or several small
    ones (of one file or of several small files) up to ``task_tiles`` tiles."""

    ticket: int
    windows: tuple[Window, ...]

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
class Settled:
    """A file whose work is over; ``staged``: its tiles go out with the next
    commit (False: nothing was staged and earlier tiles stay, e.g. unreadable)."""

    path: str
    staged: bool


@dataclass
class _FileState:
    report: FileReport
    info: RasterInfo | None = None
    outstanding: int = 0  # windows not yet fully handled


@dataclass
class Scheduler:
    """Per-file state and the ledger of work in flight for one ingest run."""

    paths: list[str]
    spec: TileSpec
    min_valid: float
    window_px: int
    max_inflight: int
    n_embedders: int
    embed_slots: int = 2
    probe_files: int = 1
    embed_tiles: int = 256
    hold_s: float = 0.0
    task_tiles: int = 1
    ready: bool = True
    startup_tiles: int = 0
    clock: Callable[[], float] = time.monotonic
    tiles_planned: int = 0
    tiles_done: int = 0
    files_done: int = 0
    files: dict[str, _FileState] = field(init=False)
    _ledger: dict[int, Work] = field(init=False, default_factory=dict)
    _to_probe: deque[str] = field(init=False)
    _windows: deque[Window] = field(init=False, default_factory=deque)
    _to_embed: deque[Part] = field(init=False, default_factory=deque)
    _load: list[int] = field(init=False)
    _tiling: int = field(init=False, default=0)  # Tile tasks in flight
    _tiling_tiles: int = field(init=False, default=0)  # their planned tiles
    _queued_tiles: int = field(init=False, default=0)  # tiles in _to_embed
    _settled: list[Settled] = field(init=False, default_factory=list)
    _tickets: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self.files = {p: _FileState(FileReport(display_path(p))) for p in self.paths}
        self._to_probe = deque(self.paths)
        self._load = [0] * self.n_embedders

    # ------------------------------------------------------------ queries

    @property
    def reports(self) -> list[FileReport]:
        return [s.report for s in self.files.values()]

    @property
    def done(self) -> bool:
        """Nothing queued and nothing in flight."""
        return not (self._to_probe or self._windows or self._to_embed or self._ledger)

    @property
    def in_flight(self) -> dict[int, Work]:
        return dict(self._ledger)

    def _room_for_window(self) -> bool:
        """Another tiling task may start (see the module docs)."""
        if self._tiling >= self.max_inflight:
            return False
        queue = self.embed_tiles * self.n_embedders
        if self.ready:
            return self._queued_tiles < queue
        return self._tiling_tiles + self._queued_tiles < max(queue, self.startup_tiles)

    def embedders_ready(self) -> None:
        """The embedders take work from now on (see the module docs)."""
        self.ready = True

    def take_settled(self) -> list[Settled]:
        """Files settled since the last call, in the order they settled."""
        out, self._settled = self._settled, []
        return out

    # ------------------------------------------------------------ work out

    def _issue(self, work: Work) -> Work:
        self._ledger[work.ticket] = work
        return work

    def _ticket(self) -> int:
        self._tickets += 1
        return self._tickets

    def next_work(self) -> list[Work]:
        """Everything that may start now: every probe, calls due for embedders
        with a free slot (least loaded first), windows while there is room."""
        out: list[Work] = []
        while self._to_probe:
            n = min(self.probe_files, len(self._to_probe))
            paths = tuple(self._to_probe.popleft() for _ in range(n))
            out.append(self._issue(Probe(self._ticket(), paths)))
        while self._to_embed and min(self._load) < self.embed_slots and self._embed_due():
            actor = self._load.index(min(self._load))
            self._load[actor] += 1
            out.append(self._issue(Embed(self._ticket(), self._take_parts(), actor)))
        while self._windows and self._room_for_window():
            windows = take_group(self._windows, _window_tiles, self.task_tiles)
            tile = Tile(self._ticket(), tuple(windows))
            self._tiling += 1
            self._tiling_tiles += tile.n_tiles
            out.append(self._issue(tile))
        return out

    def _embed_due(self) -> bool:
        """A call should go out now (see the module docs)."""
        if not self.ready:
            return False
        if self._queued_tiles >= self.embed_tiles or not self._tiling:
            return True
        return self.clock() - self._to_embed[0].since >= self.hold_s

    def next_deadline(self) -> float | None:
        """When waiting windows fall due for a call at the latest (the clock's
        time; None when none wait or no embedder has a free slot: then only an
        outcome changes anything): the caller should ask again by then."""
        if not (self.ready and self._to_embed) or min(self._load) >= self.embed_slots:
            return None
        return self._to_embed[0].since + self.hold_s

    def _take_parts(self) -> tuple[Part, ...]:
        """Waiting windows for one call, oldest first: up to ``embed_tiles``
        tiles, at least one window; a window retried alone goes alone."""
        parts = take_group(self._to_embed, _call_tiles, self.embed_tiles)
        self._queued_tiles -= sum(p.n_tiles for p in parts)
        return tuple(parts)

    # ------------------------------------------------------------ events in

    def _take(self, ticket: int, kind: type) -> Any:
        work = self._ledger.get(ticket)
        if not isinstance(work, kind):
            raise KeyError(f"ticket {ticket} is not a {kind.__name__} in flight")
        del self._ledger[ticket]
        return work

    def probed(self, ticket: int, results: Sequence[RasterInfo | Failure]) -> None:
        """The headers of a probe's files are in, one result per file: a file
        that cannot be used fails at once (its earlier tiles stay); the others'
        windows are planned."""
        self._check_count(ticket, len(results))
        work = self._take(ticket, Probe)
        for path, result in zip(work.paths, results, strict=True):
            if isinstance(result, Failure):
                self._unreadable(path, result)
            else:
                self._plan(path, result)

    def _unreadable(self, path: str, failure: Failure) -> None:
        f = self.files[path].report
        f.status, f.reason = "failed", failure.reason
        self._settle_now(path, staged=False)

    def _plan(self, path: str, info: RasterInfo) -> None:
        """Plan a probed file's windows (skipping absent sparse blocks)."""
        state = self.files[path]
        state.info = info
        f = state.report
        jobs = plan_windows(
            info.width,
            info.height,
            self.spec.tile,
            self.spec.stride,
            block_shape=info.block_shape,
            target_px=self.window_px,
        )
        f.tiles_planned = sum(j.n_tiles for j in jobs)
        shape = (self.spec.tile, self.spec.stride)
        readable = [j for j in jobs if info.window_has_data(j.window(*shape))]
        f.tiles_empty = f.tiles_planned - sum(j.n_tiles for j in readable)
        f.windows = len(readable)
        self.tiles_planned += f.tiles_planned - f.tiles_empty
        if not readable:
            f.status = "skipped"
            f.reason = (
                f"{info.width}x{info.height} is smaller than one "
                f"{self.spec.tile}x{self.spec.tile} tile"
                if not f.tiles_planned
                else f"all {f.tiles_planned} tiles lie in absent (sparse) blocks"
            )
            self._settle_now(path, staged=True)  # drops tiles of an earlier version
            return
        state.outstanding = len(readable)
        self._windows.extend(Window(path, info, j) for j in readable)

    def _take_tile(self, ticket: int) -> Tile:
        work: Tile = self._take(ticket, Tile)
        self._tiling -= 1
        self._tiling_tiles -= work.n_tiles
        return work

    def _take_embed(self, ticket: int) -> Embed:
        work: Embed = self._take(ticket, Embed)
        self._load[work.actor] -= 1
        return work

    def tiled(
        self, ticket: int, stats: Sequence[TileStats | Failure], batches: Sequence[Any]
    ) -> None:
        """A tiling task is over, ``stats[i]`` and ``batches[i]`` for its window
        ``i``: queue each non-empty batch for an embedder, settle empty windows,
        count a window that failed against its file."""
        self._check_count(ticket, len(stats))
        if len(batches) != len(stats):
            raise ValueError(f"ticket {ticket}: {len(batches)} batches for {len(stats)} windows")
        work = self._take_tile(ticket)
        for window, result, batch in zip(work.windows, stats, batches, strict=True):
            if isinstance(result, Failure):
                self._window_failed(window.path, result)
                continue
            self.files[window.path].report.tiles_low_valid += result.n_low_valid
            if result.n_tiles:
                part = Part(window.path, batch, result.n_tiles, self.clock())
                self._to_embed.append(part)
                self._queued_tiles += result.n_tiles
            else:
                self._window_done(window.path)

    def embedded(self, ticket: int, rows: Sequence[int]) -> None:
        """An embedder returned ``rows[i]`` tiles of the call's window ``i``
        (the driver staged them)."""
        self._check_count(ticket, len(rows))
        work = self._take_embed(ticket)
        for part, n in zip(work.parts, rows, strict=True):
            self.files[part.path].report.tiles_written += n
            self.tiles_done += n
            self._window_done(part.path)

    def _check_count(self, ticket: int, n: int) -> None:
        """Refuse ``n`` results for a probe of another number of files, or an
        embed call of another number of windows (before the ledger changes)."""
        work = self._ledger.get(ticket)
        if isinstance(work, Probe):
            want, what = len(work.paths), "files"
        elif isinstance(work, Embed):
            want, what = len(work.parts), "windows"
        elif isinstance(work, Tile):
            want, what = len(work.windows), "windows"
        else:
            return
        if n != want:
            raise ValueError(f"ticket {ticket}: {n} results for {want} {what}")

    def failed(self, ticket: int, failure: Failure) -> None:
        """Any work item went wrong: an unreadable file fails at once (its
        earlier tiles stay); a failed window or batch counts against its file."""
        work = self._ledger.get(ticket)
        if work is None:
            raise KeyError(f"ticket {ticket} is not in flight")
        if isinstance(work, Probe):  # the task itself failed: all its files
            self._take(ticket, Probe)
            for path in work.paths:
                self._unreadable(path, failure)
            return
        if isinstance(work, Embed):
            self._take_embed(ticket)
            if len(work.parts) > 1:  # each window again, alone, first in line
                self._to_embed.extendleft(replace(p, alone=True) for p in reversed(work.parts))
                self._queued_tiles += work.n_tiles
                return
            for part in work.parts:
                f = self.files[part.path].report
                f.windows_failed += 1
                f.reason = f"{part.path}: embedding failed ({failure.reason})"
                self._window_done(part.path)
            return
        self._take_tile(ticket)  # the task itself failed: all its windows
        for window in work.windows:
            self._window_failed(window.path, failure)

    def _window_failed(self, path: str, failure: Failure) -> None:
        """A window of ``path`` could not be read or cut."""
        f = self.files[path].report
        f.windows_failed += 1
        crashed = failure.kind == "crash"
        reason = f"{path}: {failure.reason}" if crashed else failure.reason
        first = f.windows_failed == 1
        f.reason = reason if first else f"{f.windows_failed} windows failed; first: {f.reason}"
        self._window_done(path)

    # ------------------------------------------------------------ settling

    def _settle_now(self, path: str, *, staged: bool) -> None:
        self.files_done += 1
        self._settled.append(Settled(path, staged))

    def _window_done(self, path: str) -> None:
        state = self.files[path]
        state.outstanding -= 1
        if state.outstanding:
            return
        f = state.report
        if f.windows_failed:
            f.status = "failed"
        elif f.tiles_written == 0:
            f.status = "skipped"
            f.reason = f.reason or (
                f"no valid tiles: {f.tiles_low_valid} below --min-valid {self.min_valid}"
                + (f", {f.tiles_empty} in absent blocks" if f.tiles_empty else "")
            )
        else:
            f.status = "ok"
        self._settle_now(path, staged=True)


def take_group(queue: deque[_T], tiles: Callable[[_T], int], limit: int) -> list[_T]:
    """Take the first item of ``queue`` and the next ones while their ``tiles``
    sum to at most ``limit`` (one item at least, whatever its size)."""
    group = [queue.popleft()]
    total = tiles(group[0])
    while queue and total + tiles(queue[0]) <= limit:
        group.append(queue.popleft())
        total += tiles(group[-1])
    return group


def _window_tiles(window: Window) -> int:
    return window.job.n_tiles


def _call_tiles(part: Part) -> int:
    """A part's tiles in a call; one retried alone counts as more than any call
    holds, so :func:`take_group` neither adds it to a call nor adds to its own."""
    return part.n_tiles if not part.alone else 1 << 62
