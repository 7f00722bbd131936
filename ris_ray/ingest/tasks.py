"""The Ray tasks that read rasters: probing files and cutting windows into tiles.

They live apart from :mod:`ris_ray.ingest.pipeline` so that a tiling worker imports
only rasterio, numpy and Pillow (unpickling a task imports its module; the
pipeline module would pull in torch, about 0.5 GB per worker for nothing).
Application errors come back as :class:`~ris_ray.core.records.Failure` values, so
a bad file never fails the run; worker crashes are retried by Ray
(``max_retries``), except a cut-and-embed task's: its calls may have written
fragments, so the driver redoes it and cleans up (:func:`cut_embed_task`).
"""

from __future__ import annotations

import functools
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import ray

from ris_ray.core.errors import RisError
from ris_ray.core.objstore import S3Settings, install
from ris_ray.core.records import Failure, FileIdent, TileBatch, TileStats
from ris_ray.ingest.placement import on_node
from ris_ray.raster.dataset import display_path
from ris_ray.raster.reading import RasterInfo, probe, read_tiles
from ris_ray.raster.tiling import TileSpec, WindowJob
from ris_ray.store.fragments import FragmentTarget, Written
from ris_ray.store.schema import EncodedRows, decode_rows, schema_id

__all__ = [
    "CALLS_AHEAD",
    "TASK_RETRIES",
    "CallOutcome",
    "CallPlan",
    "CutEmbedded",
    "cut_and_embed",
    "cut_embed_task",
    "error_text",
    "probe_task",
    "tile_task",
    "tile_windows",
]

TASK_RETRIES = 3
#: Embedder calls a cut-and-embed task keeps in flight while it cuts the next.
CALLS_AHEAD = 2
#: Tries of one embedder call in a cut-and-embed task when embedders crash or
#: leave (each on the next embedder of its list), as the driver's own.
CALL_TRIES = 4


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


@dataclass(frozen=True)
class CallOutcome:
    """One embedder call of a cut-and-embed task: the index of the embedder
    that answered (of the driver's list), the task's windows it carried, and
    what it wrote (a :class:`Failure` when it could not be embedded)."""

    actor: int
    windows: tuple[int, ...]
    result: Written | Failure


@dataclass(frozen=True)
class CutEmbedded:
    """What a cut-and-embed task reports: ``stats[i]`` of its window ``i`` and
    its embedder calls. No pixels, no rows: the embedders wrote them."""

    stats: list[TileStats | Failure]
    calls: list[CallOutcome]
    crashed: int = 0  # call attempts lost with their embedder (retried or not)

    def rows(self) -> list[int | Failure | None]:
        """Per window: the rows written, the call's :class:`Failure`, or None
        (no call: no tiles, or the window failed)."""
        out: list[int | Failure | None] = [None] * len(self.stats)
        for call in self.calls:
            for k, w in enumerate(call.windows):
                r = call.result
                out[w] = r if isinstance(r, Failure) else r.rows[k]
        return out


@dataclass(frozen=True)
class CallPlan:
    """How a cut-and-embed task has its tiles embedded: ``actors`` ((index in
    the driver's list, handle) each), of which the first ``own`` are its
    node's, taken in turn from ``start``; calls of about ``call_tiles``
    tiles; rows an embedder returns instead of writing them (an actor class
    that ignores its ``target``) are written by the task to ``target``. The driver
    puts one in the object store per set of live embedders and sends its
    ref with each task's own ``start`` (:func:`cut_and_embed`)."""

    actors: tuple[tuple[int, Any], ...]
    own: int
    start: int
    call_tiles: int
    target: FragmentTarget


@dataclass
class _Call:
    windows: tuple[int, ...]
    batches: Any  # the object ref of their batches, one list (put once, sent again on a retry)
    order: int  # index into the task's embedders of this try
    tries: int = 0
    ref: Any = None
    actor: int = 0


@dataclass
class _Feeder:
    """The embedder calls of one cut-and-embed task, at most :data:`CALLS_AHEAD`
    in flight: new calls go in turn to the first ``own`` of ``actors`` (this
    node's, starting at ``start``); a call whose embedder crashed or left goes
    to the next of the whole list (other nodes' last); a call of several
    windows that raised goes again one window at a time."""

    how: CallPlan
    sent: int = 0
    crashed: int = 0  # call attempts lost with their embedder (each may have written)
    pending: deque[_Call] = field(default_factory=deque)
    done: list[CallOutcome] = field(default_factory=list)

    def call(self, held: list[tuple[int, TileBatch, int]]) -> None:
        """A new call of the ``held`` windows ((window, batch, tiles) each),
        their batches put in this node's object store as one object."""
        order = (self.how.start + self.sent) % max(1, self.how.own)
        self.sent += 1
        self.send(_Call(tuple(w for w, _, _ in held), ray.put([b for _, b, _ in held]), order))

    def send(self, call: _Call) -> None:
        index, actor = self.how.actors[call.order % len(self.how.actors)]
        # Not retried by Ray: a retry would hide an attempt that wrote a fragment first.
        embed = actor.embed_list.options(max_task_retries=0)
        call.actor, call.ref = index, embed.remote(call.batches)
        self.pending.append(call)
        while len(self.pending) > CALLS_AHEAD:
            self.finish(self.pending.popleft())

    def finish(self, call: _Call) -> None:
        try:
            written = ray.get(call.ref)
        except (ray.exceptions.RayActorError, ray.exceptions.ObjectLostError) as exc:
            self.crashed += 1
            call.tries += 1
            if call.tries < CALL_TRIES:
                call.order += 1  # the next embedder: this one crashed, or left with its node
                self.send(call)
            else:
                failure = Failure(error_text(exc), kind="crash")
                self.done.append(CallOutcome(call.actor, call.windows, failure))
        except ray.exceptions.RayTaskError as exc:
            if len(call.windows) == 1:
                self.done.append(CallOutcome(call.actor, call.windows, Failure(error_text(exc))))
                return
            batches = ray.get(call.batches)
            for w, b in zip(call.windows, batches, strict=True):  # one bad window fails alone
                self.send(_Call((w,), ray.put([b]), call.order, call.tries))
        else:
            if not isinstance(written, Written):  # rows, not written: write them here
                written = _write(self.how.target, written)
            self.done.append(CallOutcome(call.actor, call.windows, written))

    def drain(self) -> list[CallOutcome]:
        while self.pending:
            self.finish(self.pending.popleft())
        return self.done


def _write(target: FragmentTarget, encoded: Sequence[EncodedRows]) -> Written:
    """Rows an embedder returned (:class:`EncodedRows`, one per window) as one
    fragment, checked as the driver checks rows it stages
    (:meth:`~ris_ray.store.writer.TileWriter.add_encoded`)."""
    want = schema_id(target.schema)
    if any(e.schema != want for e in encoded):
        raise ValueError("an embedder returned rows in another schema than the dataset's")
    batches = [decode_rows(e, target.schema) for e in encoded]
    return Written(tuple(e.rows for e in encoded), target.write(batches))


@ray.remote(num_cpus=1, max_retries=0)
def cut_embed_task(
    windows: list[tuple[RasterInfo, WindowJob]],
    spec: TileSpec,
    settings: S3Settings | None,
    how: CallPlan,
    start: int,
) -> CutEmbedded:
    """Cut ``windows`` one after the other and have their tiles embedded as
    ``how`` says (from its embedder ``start``), the next window cut while
    calls are in flight. The
    embedders write the rows as Lance fragments; only counts and fragment
    metadata come back, so neither pixels nor rows pass the driver, and the
    driver handles one event per task instead of two per window.

    Not retried by Ray (``max_retries=0``): a crash comes back to the driver,
    which counts it, redoes the windows and removes fragments no commit took
    (:meth:`~ris_ray.store.tilestore.TileStore.call_lost`)."""
    install(settings)
    node = ray.get_runtime_context().get_node_id()
    feeder = _Feeder(replace(how, start=start))
    stats: list[TileStats | Failure] = []
    held: list[tuple[int, TileBatch, int]] = []  # (window, batch, tiles) not sent yet
    for i, (info, job) in enumerate(windows):
        try:
            batch, window_stats = read_tiles(info, job, spec)
        except Exception as exc:
            stats.append(Failure(error_text(exc)))
            continue
        stats.append(replace(window_stats, node=node))
        n = window_stats.n_tiles
        if held and sum(k for _, _, k in held) + n > how.call_tiles:
            feeder.call(held)  # full: at most call_tiles tiles, unless one window has more
            held = []
        if n:
            held.append((i, batch, n))
    if held:
        feeder.call(held)
    return CutEmbedded(stats, feeder.drain(), feeder.crashed)


@functools.cache
def _cut_embed_for(node: str | None) -> Any:
    if node is None:
        return cut_embed_task
    return cut_embed_task.options(scheduling_strategy=on_node(node))


def cut_and_embed(
    windows: list[tuple[RasterInfo, WindowJob]],
    spec: TileSpec,
    settings: S3Settings | None,
    how: Any,
    start: int,
    node: str | None = None,
) -> Any:
    """Submit :func:`cut_embed_task` (on ``node`` while it is alive; None:
    anywhere); ``how``: a :class:`CallPlan` or the ref of one (put once, so
    the actor handles and the schema are not pickled per task). The ref of
    its :class:`CutEmbedded`."""
    task: Any = _cut_embed_for(node)  # Ray's stubs type 3 parameters at most
    return task.remote(windows, spec, settings, how, start)
