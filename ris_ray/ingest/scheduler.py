"""The ingest scheduler: what to run next, and what each finished task means.

No Ray here: the scheduler hands out :class:`~ris_ray.ingest.planning.Work`
items (probe a file, tile a window, embed a batch), keeps a ledger of the
work in flight under integer tickets, and takes back one event per finished
item:

- :meth:`Scheduler.probed` the :class:`~ris_ray.raster.reading.RasterInfo` (or
  :class:`~ris_ray.core.records.Failure`) of each file of a probe (its windows are
  planned and queued; ``probe_files`` files per probe task),
- :meth:`Scheduler.tiled` the :class:`~ris_ray.core.records.TileStats` (or
  :class:`~ris_ray.core.records.Failure`) of each window of a tiling task (a
  non-empty batch is queued for an embedder; ``task_tiles`` planned tiles
  per task: small windows, e.g. of small files, travel several to a task),
- :meth:`Scheduler.embedded` the rows an embedder produced per window,
- :meth:`Scheduler.cut_and_embedded` the stats and rows per window of a task
  that cut its windows and had them embedded itself (``max_task_tiles``: the
  cut-and-embed path, where pixels and rows never pass the driver and its
  events come per task of up to that many tiles),
- :meth:`Scheduler.failed` a :class:`~ris_ray.core.records.Failure`, whatever the
  kind of work.

A file *settles* when its last window is handled; the driver stages it for
the next commit (:meth:`Scheduler.take_settled`).

The scheduler composes three small parts, one per concern:
:mod:`~ris_ray.ingest.planning` (the work items; files into windows, windows
into tasks), :mod:`~ris_ray.ingest.backpressure` (the queues, how much is in
flight, when an embed call is filled and due, the read-ahead while the
embedders start) and :mod:`~ris_ray.ingest.files` (each file's report and
outcome). Their records are re-exported here.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from ris_ray.core.records import Failure, TileStats
from ris_ray.ingest.backpressure import Backpressure
from ris_ray.ingest.files import FileBook, FileReport, FileState, Settled
from ris_ray.ingest.planning import (
    Embed,
    Part,
    Probe,
    Tile,
    Window,
    Work,
    plan_file,
    take_group,
)
from ris_ray.raster.reading import RasterInfo
from ris_ray.raster.tiling import TileSpec

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


#: Embed calls a window may crash (an embedder actor or its node lost) before
#: the crash counts against its file, as Ray's ``max_task_retries``.
CRASH_RETRIES = 3
#: How long a crashed embedder is passed over while others can take calls (see
#: :meth:`~ris_ray.ingest.backpressure.Backpressure.crashed`).
SUSPECT_S = 10.0


class Scheduler:
    """Per-file state and the ledger of work in flight for one ingest run.

    The per-file state is :attr:`book` (a :class:`~ris_ray.ingest.files.FileBook`),
    the queues and counts in flight :attr:`flow` (a
    :class:`~ris_ray.ingest.backpressure.Backpressure`, which takes the
    settings from ``max_inflight`` on; see there)."""

    def __init__(
        self,
        paths: list[str],
        spec: TileSpec,
        min_valid: float,
        window_px: int,
        max_inflight: int,
        n_embedders: int,
        embed_slots: int = 2,
        probe_files: int = 1,
        embed_tiles: int = 256,
        hold_s: float = 0.0,
        task_tiles: int = 1,
        ready: bool = True,
        startup_tiles: int = 0,
        clock: Callable[[], float] = time.monotonic,
        groups: tuple[int, ...] = (),
        max_task_tiles: int = 0,
    ) -> None:
        self.paths = paths
        self.spec = spec
        self.window_px = window_px
        self.probe_files = probe_files
        self.book = FileBook(paths, min_valid)
        self.flow = Backpressure(
            max_inflight=max_inflight,
            n_embedders=n_embedders,
            embed_slots=embed_slots,
            embed_tiles=embed_tiles,
            hold_s=hold_s,
            task_tiles=task_tiles,
            ready=ready,
            startup_tiles=startup_tiles,
            clock=clock,
            groups=groups,
            max_task_tiles=max_task_tiles,
        )
        self._ledger: dict[int, Work] = {}
        self._to_probe: deque[str] = deque(paths)
        self._tickets = 0

    # ------------------------------------------------------------ queries

    @property
    def files(self) -> dict[str, FileState]:
        return self.book.files

    @property
    def reports(self) -> list[FileReport]:
        return self.book.reports

    @property
    def tiles_planned(self) -> int:
        return self.book.tiles_planned

    @property
    def tiles_done(self) -> int:
        return self.book.tiles_done

    @property
    def files_done(self) -> int:
        return self.book.files_done

    @property
    def n_groups(self) -> int:
        """The embedder groups (nodes with embedders; 1 on one node)."""
        return self.flow.n_groups

    @property
    def ready(self) -> bool:
        """The embedders take work (:meth:`embedders_ready` was called)."""
        return self.flow.ready

    @property
    def done(self) -> bool:
        """Nothing queued and nothing in flight."""
        return not (self._to_probe or self.flow.queued or self._ledger)

    @property
    def in_flight(self) -> dict[int, Work]:
        return dict(self._ledger)

    def embedders_ready(self) -> None:
        """The embedders take work from now on (see :mod:`~ris_ray.ingest.backpressure`)."""
        self.flow.embedders_ready()

    def embedder_lost(self, actor: int) -> None:
        """Embedder ``actor``'s node left the cluster: its calls in flight will
        fail and go to other embedders (see :meth:`Backpressure.embedder_lost
        <ris_ray.ingest.backpressure.Backpressure.embedder_lost>`), never
        counting against their files."""
        self.flow.embedder_lost(actor)

    def take_settled(self) -> list[Settled]:
        """Files settled since the last call, in the order they settled."""
        return self.book.take_settled()

    def next_deadline(self) -> float | None:
        """When waiting windows fall due for a call at the latest (the clock's
        time; None when none wait or no embedder has a free slot: then only an
        outcome changes anything): the caller should ask again by then."""
        return self.flow.next_deadline()

    # ------------------------------------------------------------ work out

    def _issue(self, work: Work) -> Work:
        self._ledger[work.ticket] = work
        return work

    def _ticket(self) -> int:
        self._tickets += 1
        return self._tickets

    def next_work(self) -> list[Work]:
        """Everything that may start now: every probe, calls due for embedders
        with a free slot (least loaded first), windows while there is room;
        a tiling task cuts for one embedder group, and that group's embedders
        take its tiles."""
        out: list[Work] = []
        while self._to_probe:
            n = min(self.probe_files, len(self._to_probe))
            paths = tuple(self._to_probe.popleft() for _ in range(n))
            out.append(self._issue(Probe(self._ticket(), paths)))
        while self.flow.call_due():
            actor, parts = self._take_parts()
            out.append(self._issue(Embed(self._ticket(), parts, actor)))
        while self.flow.tile_due():
            windows, group = self.flow.take_windows()
            tile = Tile(self._ticket(), windows, group)
            self.flow.tile_started(tile)
            out.append(self._issue(tile))
        return out

    def _take_parts(self) -> tuple[int, tuple[Part, ...]]:
        """The embedder and waiting windows of one call (:meth:`Backpressure.next_call
        <ris_ray.ingest.backpressure.Backpressure.next_call>`)."""
        return self.flow.next_call()

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
                self.book.unreadable(path, result)
            else:
                self._plan(path, result)

    def _plan(self, path: str, info: RasterInfo) -> None:
        """Plan a probed file's windows (skipping absent sparse blocks)."""
        plan = plan_file(info, self.spec, self.window_px)
        if self.book.planned(path, info, plan):
            self.flow.add_windows(Window(path, info, j) for j in plan.readable)

    def _take_tile(self, ticket: int) -> Tile:
        work: Tile = self._take(ticket, Tile)
        self.flow.tile_over(work)
        return work

    def _take_embed(self, ticket: int) -> Embed:
        work: Embed = self._take(ticket, Embed)
        self.flow.embed_over(work)
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
                self.book.window_failed(window.path, result)
                continue
            self.book.low_valid(window.path, result.n_low_valid)
            if result.n_tiles:
                self.flow.queue_part(window.path, batch, result.n_tiles, work.group, result.node)
            else:
                self.book.window_done(window.path)

    def cut_and_embedded(
        self,
        ticket: int,
        stats: Sequence[TileStats | Failure],
        rows: Sequence[int | Failure | None],
    ) -> None:
        """A cut-and-embed task is over: ``stats[i]`` for its window ``i`` and
        ``rows[i]`` the tiles its embedder call wrote (a :class:`Failure` when
        the call failed; None for a window with no tiles or that failed)."""
        self._check_count(ticket, len(stats))
        if len(rows) != len(stats):
            raise ValueError(f"ticket {ticket}: {len(rows)} row counts for {len(stats)} windows")
        work = self._take_tile(ticket)
        for window, result, written in zip(work.windows, stats, rows, strict=True):
            path = window.path
            if isinstance(result, Failure):
                self.book.window_failed(path, result)
                continue
            self.book.low_valid(path, result.n_low_valid)
            if isinstance(written, Failure):
                self.book.embed_failed(path, written)
            elif result.n_tiles and written is not None:
                self.book.written(path, written)
            else:
                self.book.window_done(path)

    def embedded(self, ticket: int, rows: Sequence[int]) -> None:
        """An embedder returned ``rows[i]`` tiles of the call's window ``i``
        (the driver staged them)."""
        self._check_count(ticket, len(rows))
        work = self._take_embed(ticket)
        for part, n in zip(work.parts, rows, strict=True):
            self.book.written(part.path, n)

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
                self.book.unreadable(path, failure)
            return
        if isinstance(work, Embed):
            self._take_embed(ticket)
            if self.flow.is_lost(work.actor):  # its node left: another embedder takes it
                self.flow.requeue(work)
                return
            if failure.kind == "crash" and all(p.tries < CRASH_RETRIES for p in work.parts):
                self.flow.crashed(work, SUSPECT_S)  # its node may be going: again, elsewhere
                return
            if len(work.parts) > 1:  # each window again, alone, first in line
                self.flow.retry_alone(work)
                return
            for part in work.parts:
                self.book.embed_failed(part.path, failure)
            return
        self._take_tile(ticket)  # the task itself failed: all its windows
        redo = self.flow.max_task_tiles and failure.kind == "crash"
        if redo and all(w.tries < CRASH_RETRIES for w in work.windows):
            self.flow.redo_windows(work.windows)  # a cut-and-embed task: again, first in line
            return
        for window in work.windows:
            self.book.window_failed(window.path, failure)
