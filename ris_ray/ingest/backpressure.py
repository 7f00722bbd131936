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
    """The queues between the stages and the work in flight (see the module docs)."""

    max_inflight: int
    n_embedders: int
    embed_slots: int = 2
    embed_tiles: int = 256
    hold_s: float = 0.0
    task_tiles: int = 1
    ready: bool = True
    startup_tiles: int = 0
    clock: Callable[[], float] = time.monotonic
    _windows: deque[Window] = field(init=False, default_factory=deque)
    _to_embed: deque[Part] = field(init=False, default_factory=deque)
    _load: list[int] = field(init=False)
    _tiling: int = field(init=False, default=0)  # Tile tasks in flight
    _tiling_tiles: int = field(init=False, default=0)  # their planned tiles
    _queued_tiles: int = field(init=False, default=0)  # tiles in _to_embed

    def __post_init__(self) -> None:
        self._load = [0] * self.n_embedders

    # ------------------------------------------------------------ queries

    @property
    def queued(self) -> bool:
        """Windows wait to be read or to be embedded."""
        return bool(self._windows or self._to_embed)

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

    def call_due(self) -> bool:
        """An embed call may go out now: windows wait, an embedder has a free
        slot and the call is due."""
        return bool(self._to_embed) and min(self._load) < self.embed_slots and self._embed_due()

    def tile_due(self) -> bool:
        """A tiling task may start now: windows wait and there is room."""
        return bool(self._windows) and self._room_for_window()

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

    # ------------------------------------------------------------ work out

    def next_actor(self) -> int:
        """The least loaded embedder, which takes one more call."""
        actor = self._load.index(min(self._load))
        self._load[actor] += 1
        return actor

    def take_parts(self) -> tuple[Part, ...]:
        """Waiting windows for one call, oldest first: up to ``embed_tiles``
        tiles, at least one window; a window retried alone goes alone."""
        parts = take_group(self._to_embed, call_tiles, self.embed_tiles)
        self._queued_tiles -= sum(p.n_tiles for p in parts)
        return tuple(parts)

    def take_windows(self) -> tuple[Window, ...]:
        """Windows for one tiling task, in order, up to ``task_tiles`` planned
        tiles (at least one window)."""
        return tuple(take_group(self._windows, window_tiles, self.task_tiles))

    def tile_started(self, work: Tile) -> None:
        """A tiling task is in flight."""
        self._tiling += 1
        self._tiling_tiles += work.n_tiles

    # ------------------------------------------------------------ work in

    def add_windows(self, windows: Iterable[Window]) -> None:
        """Queue a planned file's windows for reading."""
        self._windows.extend(windows)

    def tile_over(self, work: Tile) -> None:
        """A tiling task is no longer in flight."""
        self._tiling -= 1
        self._tiling_tiles -= work.n_tiles

    def embed_over(self, work: Embed) -> None:
        """An embed call is no longer in flight: its embedder has a slot again."""
        self._load[work.actor] -= 1

    def queue_part(self, path: str, batch: Any, n_tiles: int) -> None:
        """Queue a window's cut tiles (``batch``) for an embedder."""
        part = Part(path, batch, n_tiles, self.clock())
        self._to_embed.append(part)
        self._queued_tiles += n_tiles

    def retry_alone(self, work: Embed) -> None:
        """Each window of a failed call again, alone, first in line."""
        self._to_embed.extendleft(replace(p, alone=True) for p in reversed(work.parts))
        self._queued_tiles += work.n_tiles
