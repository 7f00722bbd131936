"""Backpressure: how much work is in flight, and when the next item may start.

Embed calls are filled, as a batching server fills its batches: one call
takes the waiting windows up to ``embed_tiles`` tiles (at least one window),
and goes out once that many wait, when the oldest has waited ``hold_s``, or
when no window is being read (nothing more would come). Small windows (small
files: a few tiles each) thus travel several to a call: fewer calls per tile
for the driver and the actor, fuller batches on a GPU. When such a call
fails, each of its windows is tried again alone, so one bad window fails
only its own file.

Every stage is bounded: at most ``max_inflight`` tiling tasks run (each
reads one window, or small windows up to ``task_tiles`` tiles); a task
starts only while fewer than ``embed_tiles`` tiles per embedder wait for
one; each embedder holds at most ``embed_slots`` calls.
Until :meth:`Backpressure.embedders_ready` (the embedders start: a Ray
worker, torch, the model, CUDA take seconds) no call goes out and tiling
reads ahead up to ``startup_tiles`` tiles (a share of the object store), so
the embedders start on a full queue instead of the CPUs idling meanwhile.

On a cluster the embedders come in ``groups`` (those of one node,
:mod:`~ris_ray.ingest.placement`): each group has its own queue of cut
windows; a tiling task cuts windows for one group (of those with room, the
one with the fewest tiles per embedder, being cut, waiting or being
embedded; the driver runs it on that group's node) and its tiles go to that
group's embedders only, so pixels stay on the node that decoded them. An
embedder lost with its node takes no more calls; a group with none left
hands its waiting windows to the others (:meth:`Backpressure.embedder_lost`).
One group (the default) is the single-node case.

No Ray: :class:`Backpressure` holds the queues (windows to read, cut windows
to embed) and the counts in flight; the
:class:`~ris_ray.ingest.scheduler.Scheduler` asks it what may start.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from ris_ray.ingest.planning import Embed, Part, Tile, Window, call_tiles, take_group, window_tiles

__all__ = ["Backpressure"]


@dataclass
class Backpressure:
    """The queues between the stages and the work in flight (see the module docs).

    ``groups[i]`` is embedder ``i``'s group (default: one group of all)."""

    max_inflight: int
    n_embedders: int
    embed_slots: int = 2
    embed_tiles: int = 256
    hold_s: float = 0.0
    task_tiles: int = 1
    ready: bool = True
    startup_tiles: int = 0
    clock: Callable[[], float] = time.monotonic
    groups: tuple[int, ...] = ()
    max_task_tiles: int = 0
    _windows: deque[Window] = field(init=False, default_factory=deque)
    _window_tiles: int = field(init=False, default=0)  # planned tiles in _windows
    _to_embed: list[deque[Part]] = field(init=False)  # per group
    _load: list[int] = field(init=False)
    _members: list[list[int]] = field(init=False)  # group -> its embedders
    _tiling: int = field(init=False, default=0)  # Tile tasks in flight
    _tiling_tasks: list[int] = field(init=False)  # per group
    _tiling_tiles: list[int] = field(init=False)  # their planned tiles, per group
    _queued_tiles: list[int] = field(init=False)  # tiles in _to_embed, per group
    _embedding_tiles: list[int] = field(init=False)  # tiles in embed calls, per group
    _lost: set[int] = field(init=False, default_factory=set)  # embedders gone with their node
    _suspect: dict[int, float] = field(init=False, default_factory=dict)  # embedder -> until

    def __post_init__(self) -> None:
        groups = self.groups or (0,) * self.n_embedders
        n = max(groups, default=0) + 1
        if len(groups) != self.n_embedders or set(groups) != set(range(n)):
            raise ValueError(f"groups {groups}: one per embedder, numbered 0..k-1")
        self.groups = tuple(groups)
        self._load = [0] * self.n_embedders
        self._members = [[i for i, g in enumerate(groups) if g == k] for k in range(n)]
        self._to_embed = [deque() for _ in range(n)]
        self._tiling_tasks, self._tiling_tiles, self._queued_tiles = [0] * n, [0] * n, [0] * n
        self._embedding_tiles = [0] * n

    # ------------------------------------------------------------ queries

    @property
    def n_groups(self) -> int:
        return len(self._members)

    @property
    def live_embedders(self) -> int:
        """Embedders not lost (:meth:`embedder_lost`)."""
        return self.n_embedders - len(self._lost)

    def is_lost(self, actor: int) -> bool:
        return actor in self._lost

    def _alive(self, g: int) -> list[int]:
        """Group ``g``'s embedders that are not lost."""
        return [i for i in self._members[g] if i not in self._lost]

    def _clear(self, i: int) -> bool:
        """Embedder ``i`` is neither lost nor suspect (a call of it crashed: :meth:`crashed`)."""
        return i not in self._lost and self._suspect.get(i, 0.0) <= self.clock()

    @property
    def queued(self) -> bool:
        """Windows wait to be read or to be embedded."""
        return bool(self._windows) or any(self._to_embed)

    def _room(self, g: int) -> int:
        """Tiles group ``g`` may still take from tiling (see the module docs)."""
        members = len(self._alive(g))
        queue = self.embed_tiles * members
        if self.ready:
            return queue - self._queued_tiles[g]
        ahead = max(queue, self.startup_tiles * members // self.n_embedders)
        return ahead - self._tiling_tiles[g] - self._queued_tiles[g]

    def _tile_group(self) -> int | None:
        """The group the next tiling task cuts for: of those with room, the one
        with the fewest tiles waiting or being cut per embedder (None: none has
        room, or enough tasks are in flight)."""
        if self._tiling >= self.max_inflight:
            return None
        open_ = [g for g in range(self.n_groups) if self._alive(g) and self._room(g) > 0]
        return min(open_, key=self._share) if open_ else None

    def _share(self, g: int) -> float:
        """Tiles being cut for, waiting for or in the calls of group ``g``, per embedder."""
        tiles = self._tiling_tiles[g] + self._queued_tiles[g] + self._embedding_tiles[g]
        return tiles / max(1, len(self._alive(g)))

    def embedders_ready(self) -> None:
        """The embedders take work from now on (see the module docs)."""
        self.ready = True

    def _free(self, g: int) -> bool:
        return (
            min((self._load[i] for i in self._alive(g)), default=self.embed_slots)
            < self.embed_slots
        )

    def _due_group(self) -> int | None:
        """A group whose call may go out now: windows wait, one of its embedders
        has a free slot and the call is due (the longest waiting first)."""
        due = [g for g, q in enumerate(self._to_embed) if q and self._free(g) and self._due(g)]
        return min(due, key=lambda g: self._to_embed[g][0].since) if due else None

    def call_due(self) -> bool:
        """An embed call may go out now (:meth:`_due_group`)."""
        return self._due_group() is not None

    def tile_due(self) -> bool:
        """A tiling task may start now: windows wait and a group has room."""
        return bool(self._windows) and self._tile_group() is not None

    def _due(self, g: int) -> bool:
        """Group ``g``'s call should go out now (see the module docs)."""
        if not self.ready:
            return False
        if self._queued_tiles[g] >= self.embed_tiles or not self._tiling_tasks[g]:
            return True
        return self.clock() - self._to_embed[g][0].since >= self.hold_s

    def next_deadline(self) -> float | None:
        """When waiting windows fall due for a call at the latest (the clock's
        time; None when none wait or no embedder has a free slot: then only an
        outcome changes anything): the caller should ask again by then."""
        if not self.ready:
            return None
        times = [q[0].since for g, q in enumerate(self._to_embed) if q and self._free(g)]
        return min(times) + self.hold_s if times else None

    # ------------------------------------------------------------ work out

    def next_call(self) -> tuple[int, tuple[Part, ...]]:
        """The embedder and the windows of the next call (:meth:`call_due` first):
        the least loaded embedder of the due group takes one more call, with
        that group's waiting windows, oldest first, up to ``embed_tiles``
        tiles, at least one window; a window retried alone goes alone."""
        g = self._due_group()
        assert g is not None, "next_call() when no call is due"
        live = self._alive(g)
        clear = [i for i in live if self._clear(i)] or live  # a suspect one if it is all
        actor = min(clear, key=lambda i: self._load[i])
        self._load[actor] += 1
        parts = take_group(self._to_embed[g], call_tiles, self.embed_tiles)
        self._queued_tiles[g] -= sum(p.n_tiles for p in parts)
        self._embedding_tiles[g] += sum(p.n_tiles for p in parts)
        return actor, tuple(parts)

    def take_windows(self) -> tuple[tuple[Window, ...], int]:
        """Windows for one tiling task, in order, up to :meth:`task_limit` planned
        tiles (at least one window), and the group it cuts for (:meth:`tile_due` first)."""
        g = self._tile_group()
        assert g is not None, "take_windows() when no tiling task may start"
        windows = take_group(self._windows, window_tiles, self.task_limit())
        self._window_tiles -= sum(w.job.n_tiles for w in windows)
        return tuple(windows), g

    def task_limit(self) -> int:
        """Planned tiles one tiling task takes: ``task_tiles``; with
        ``max_task_tiles`` (tasks that cut and embed: the driver's work is per
        task), the waiting tiles spread over the task slots,
        ``clamp(ceil(waiting / max_inflight), task_tiles, max_task_tiles)``, so
        a long queue goes in few big tasks and a short one still in one per slot."""
        if not self.max_task_tiles:
            return self.task_tiles
        spread = -(-self._window_tiles // self.max_inflight)
        return max(self.task_tiles, min(self.max_task_tiles, spread))

    def tile_started(self, work: Tile) -> None:
        """A tiling task is in flight."""
        self._tiling += 1
        self._tiling_tasks[work.group] += 1
        self._tiling_tiles[work.group] += work.n_tiles

    # ------------------------------------------------------------ work in

    def add_windows(self, windows: Iterable[Window]) -> None:
        """Queue a planned file's windows for reading."""
        for w in windows:
            self._windows.append(w)
            self._window_tiles += w.job.n_tiles

    def redo_windows(self, windows: Iterable[Window]) -> None:
        """Windows of a task that crashed, again, first in line, a try counted
        against each (a cut-and-embed task is not retried by Ray: see
        :mod:`~ris_ray.ingest.tasks`)."""
        for w in reversed(list(windows)):
            self._windows.appendleft(replace(w, tries=w.tries + 1))
            self._window_tiles += w.job.n_tiles

    def tile_over(self, work: Tile) -> None:
        """A tiling task is no longer in flight."""
        self._tiling -= 1
        self._tiling_tasks[work.group] -= 1
        self._tiling_tiles[work.group] -= work.n_tiles

    def embed_over(self, work: Embed) -> None:
        """An embed call is no longer in flight: its embedder has a slot again."""
        self._load[work.actor] -= 1
        self._embedding_tiles[self.groups[work.actor]] -= work.n_tiles

    def queue_part(
        self, path: str, batch: Any, n_tiles: int, group: int = 0, node: str = ""
    ) -> None:
        """Queue a window's cut tiles (``batch``, cut on ``node``) for group
        ``group``'s embedders (another group's when all of ``group``'s are lost)."""
        self._enqueue(self._home(group), Part(path, batch, n_tiles, self.clock(), node=node))

    def retry_alone(self, work: Embed) -> None:
        """Each window of a failed call again, alone, first in its group's line."""
        self._put_back(replace(p, alone=True) for p in work.parts)

    def requeue(self, work: Embed) -> None:
        """The windows of a call whose embedder was lost, again, first in line."""
        self._put_back(work.parts)

    def crashed(self, work: Embed, suspect_s: float) -> None:
        """A call crashed (its actor, or its node, went): its embedder is suspect
        for ``suspect_s`` (its node may be going, and Ray tells a dead node only
        after its health checks fail): the call's windows go again, a try
        counted against each, to a clear embedder of the same group, else of
        the group with the fewest tiles per embedder that has one (else the
        same group); other calls prefer clear embedders meanwhile."""
        self._suspect[work.actor] = self.clock() + suspect_s
        g = self.groups[work.actor]
        groups = [h for h in range(self.n_groups) if any(self._clear(i) for i in self._alive(h))]
        if g not in groups and groups:
            g = min(groups, key=self._share)
        for p in reversed(work.parts):
            self._enqueue(g, replace(p, tries=p.tries + 1), first=True)

    def _put_back(self, parts: Iterable[Part]) -> None:
        for p in reversed(list(parts)):
            self._enqueue(self._home(p.group), p, first=True)

    def _enqueue(self, g: int, part: Part, first: bool = False) -> None:
        """``part`` into group ``g``'s queue: last, or ``first`` in line."""
        part = replace(part, group=g)
        if first:
            self._to_embed[g].appendleft(part)
        else:
            self._to_embed[g].append(part)
        self._queued_tiles[g] += part.n_tiles

    def _home(self, group: int) -> int:
        """``group``, or while all its embedders are lost the live group with
        the fewest tiles per embedder (``group`` when none is left)."""
        if self._alive(group):
            return group
        live = [g for g in range(self.n_groups) if self._alive(g)]
        return min(live, key=self._share) if live else group

    def embedder_lost(self, actor: int) -> None:
        """Embedder ``actor`` is gone for good (its node left the cluster): no
        call goes to it again; once its group has none left, the windows
        waiting for the group move to the other groups, and no tiling task
        cuts for it."""
        self._lost.add(actor)
        g = self.groups[actor]
        if self._alive(g) or not self.live_embedders:
            return
        waiting, self._to_embed[g] = list(self._to_embed[g]), deque()
        self._queued_tiles[g] = 0
        for p in waiting:
            self._enqueue(self._home(g), p)
