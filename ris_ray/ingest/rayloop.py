"""The Ray loop of an ingest run: submit what the scheduler asks for,
``ray.wait``, feed each outcome back as one event (see
:mod:`ris_ray.ingest.pipeline` for the run around it).

It also watches the cluster: an embedder whose node left the cluster is
killed for good (pinned to that node, it may find nowhere to restart, and its
calls would wait forever) and its windows go to the other embedders
(:meth:`~ris_ray.ingest.scheduler.Scheduler.embedder_lost`); with none left
the run ends in one line (:class:`~ris_ray.core.errors.EmbedderLostError`),
the files committed so far kept.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import ray

from ris_ray.core.config import IngestConfig
from ris_ray.core.errors import EmbedderLostError, EmbedderStartError
from ris_ray.core.objstore import worker_settings
from ris_ray.core.records import Failure, FileIdent
from ris_ray.ingest.locality import Locality
from ris_ray.ingest.placement import Placement, cluster_nodes, lost_embedders
from ris_ray.ingest.planning import Embed, Probe, Tile, Work
from ris_ray.ingest.report import Progress, SteadyRate
from ris_ray.ingest.scheduler import Scheduler
from ris_ray.ingest.tasks import (
    CallPlan,
    CutEmbedded,
    cut_and_embed,
    error_text,
    probe_task,
    tile_windows,
)
from ris_ray.raster.dataset import display_path
from ris_ray.raster.tiling import TileSpec
from ris_ray.store.fragments import FragmentTarget, Written
from ris_ray.store.manifest import FileRecord
from ris_ray.store.tilestore import TileStore

__all__ = ["NODE_CHECK_S", "RayLoop", "outcome"]

#: How often the loop asks Ray which nodes are alive (on a cluster only).
NODE_CHECK_S = 2.0
#: Seconds to wait for the node of an embedder that has answered a call.
NODE_ANSWER_S = 10.0

Ident = FileIdent | None


class RayLoop:
    """Submit what the scheduler asks for, ``ray.wait``, feed each outcome back.

    Tiling starts at once, while the embedder actors start (torch import,
    model load, CUDA init take seconds): the first actor's ``device()`` is
    waited on with the rest; its answer makes the scheduler send batches to
    the embedders (until then tiling reads ahead) and goes to ``on_ready``.
    An actor that fails to start raises here, as ``ray.get`` does.
    """

    def __init__(
        self,
        cfg: IngestConfig,
        sched: Scheduler,
        actors: list[Any],
        spec: TileSpec,
        store: TileStore,
        record: Callable[[str, int | None], FileRecord],
        on_ready: Callable[[str], None],
        idents: dict[str, Ident],
        plan: Placement,
        say: Callable[[str], None] = lambda msg: None,
        target: FragmentTarget | None = None,
    ) -> None:
        self.cfg, self.sched, self.actors, self.spec = cfg, sched, actors, spec
        self.plan, self.say = plan, say
        #: Where the embedders write the rows; set, tiling tasks call the embedders
        #: themselves (:func:`~ris_ray.ingest.tasks.cut_embed_task`): one event per task.
        self.target = target
        self.nodes_checked = time.monotonic()
        self.where = Locality()
        self.node_refs: list[Any] = [a.node.remote() for a in actors]  # asked once each
        self.nodes: dict[int, str] = {}  # embedder -> its node, once answered
        self.store, self.record, self.idents = store, record, idents
        self.on_ready = on_ready
        self.settings = worker_settings()  # to the tasks as an argument: never in Ray's logs
        self.starting: Any | None = actors[0].device.remote()  # None once answered
        self.called_actors = False  # a cut-and-embed task was submitted
        self.call_plans: dict[tuple[object, ...], Any] = {}  # CallPlan refs (_call_plan)
        self.refs: dict[Any, Work] = {}
        self.batches: dict[int, list[Any]] = {}  # tile ticket -> its windows' batch refs
        self.unstaged: list[str] = []  # settled files with nothing to publish
        self.last_commit = time.monotonic()
        self.steady = SteadyRate()

    def run(self, progress: Progress, t0: float) -> None:
        sched = self.sched
        while not sched.done:
            self._watch_nodes()
            for work in sched.next_work():
                self.refs[self._submit(work)] = work
            waiting = list(self.refs) + ([self.starting] if self.starting is not None else [])
            deadline = sched.next_deadline()
            timeout = 1.0 if deadline is None else min(1.0, deadline - time.monotonic())
            ready = _ready(waiting, max(timeout, 0.0))
            if self.starting is not None and self.starting in ready:
                self._started(self.starting)
            done = [ref for ref in ready if ref in self.refs]
            for ref, value in zip(done, _outcomes(done), strict=True):
                self._feed(self.refs.pop(ref), value)
                self._stage()
                if self._commit_due():
                    self.publish()
            progress.update(sched.tiles_done, sched.tiles_planned, sched.files_done, t0)
        # Answered with the last batch (no wait if still starting), except after
        # cut-and-embed tasks: they called the actors, so a failure to start is
        # the run's error, not each window's.
        if self.starting is not None and (
            self.called_actors or ray.wait([self.starting], timeout=0)[0]
        ):
            self._started(self.starting)

    def _watch_nodes(self) -> None:
        """Every :data:`NODE_CHECK_S` on a cluster: kill the embedders whose node
        left and hand their work to the others (see the module docs)."""
        if not self.plan.cluster or time.monotonic() - self.nodes_checked < NODE_CHECK_S:
            return
        self.nodes_checked = time.monotonic()
        flow = self.sched.flow
        alive = {n.node_id for n in cluster_nodes()}
        gone = [i for i in lost_embedders(self.plan, alive) if not flow.is_lost(i)]
        for i in gone:
            self.sched.embedder_lost(i)
            ray.kill(self.actors[i], no_restart=True)  # its calls in flight fail: redone
            self.say(
                f"warning: embedder {i}'s node {self.plan.nodes[i]} left the cluster; "
                f"{flow.live_embedders} embedders go on"
            )
        if gone and not flow.live_embedders:
            version = self.store.version
            kept = f"dataset version {version}" if version is not None else "none yet"
            raise EmbedderLostError(
                f"every embedder's node left the Ray cluster mid-run; the files committed "
                f"so far are kept ({kept}); re-run when nodes are back: only files not "
                "committed are read again"
            )
        if gone and self.starting is not None and flow.is_lost(0):  # ask one that is left
            live = next(i for i in range(flow.n_embedders) if not flow.is_lost(i))
            self.starting = self.actors[live].device.remote()

    def _started(self, ref: Any) -> None:
        """The first actor answered ``device()`` (``ref``); :class:`EmbedderStartError`
        when it could not start (its constructor raised, on every restart)."""
        self.starting = None
        try:
            device = ray.get(ref)
        except ray.exceptions.RayActorError as exc:
            lines = [x.strip() for x in str(exc).splitlines() if x.strip()]
            cause = lines[-1] if lines else type(exc).__name__
            raise EmbedderStartError(
                f"the embedder actor could not start ({cause}); "
                "its traceback is above: check --device, --precision and the GPU's free memory"
            ) from None
        self.sched.embedders_ready()
        self.steady.start()
        self.on_ready(device)

    def _submit(self, work: Work) -> Any:
        if isinstance(work, Probe):
            idents = [self.idents.get(path) for path in work.paths]
            probe: Any = probe_task  # Ray's stubs type 3 parameters at most
            return probe.remote(list(work.paths), self.cfg.bands, idents, self.settings)
        if isinstance(work, Tile):
            windows = [(w.info, w.job) for w in work.windows]
            node = self.plan.tiling_node(work.group)
            if self.target is not None:
                self.called_actors = True
                how = self._call_plan(work.group)
                return cut_and_embed(windows, self.spec, self.settings, how, work.ticket, node)
            stats_ref, self.batches[work.ticket] = tile_windows(
                windows, self.spec, self.settings, node
            )
            return stats_ref
        return self.actors[work.actor].embed.remote(*(part.batch for part in work.parts))

    def _call_plan(self, group: int) -> Any:
        """The ref of the :class:`CallPlan` of ``group``'s tasks, put once per
        set of live embedders."""
        actors, own = self._embedders_for(group)
        key = (tuple(i for i, _ in actors), own)
        if key not in self.call_plans:
            assert self.target is not None
            plan = CallPlan(actors, own, 0, self.cfg.tiles_per_call, self.target)
            self.call_plans[key] = ray.put(plan)
        return self.call_plans[key]

    def _embedders_for(self, group: int) -> tuple[tuple[tuple[int, Any], ...], int]:
        """The live embedders a cut-and-embed task of ``group`` calls: the
        group's own first (how many: the second value), then the others (its
        fallback when all of its own are gone)."""
        live = [i for i in range(len(self.actors)) if not self.sched.flow.is_lost(i)]
        own = [i for i in live if self.plan.groups[i] == group]
        order = own + [i for i in live if i not in own]
        return tuple((i, self.actors[i]) for i in order), len(own)

    def _feed(self, work: Work, value: Any) -> None:
        batches = self.batches.pop(work.ticket, [])
        if isinstance(value, Failure):
            if self.target is not None:  # a cut-and-embed task: its calls may have written
                self.store.call_lost()
            self.sched.failed(work.ticket, value)
        elif isinstance(work, Probe):
            self.sched.probed(work.ticket, value)
        elif isinstance(work, Tile) and isinstance(value, CutEmbedded):
            self._cut_and_embedded(work, value)
        elif isinstance(work, Tile):
            self.sched.tiled(work.ticket, value, batches)
        else:
            assert isinstance(work, Embed)
            node = self._node_of(work.actor)
            pixel_bytes = 3 * self.spec.tile**2
            for part, encoded in zip(work.parts, value, strict=True):
                self.where.embedded(part.node, node, part.n_tiles * pixel_bytes)
                self.store.add_encoded(display_path(part.path), encoded)
            rows = [encoded.rows for encoded in value]
            self.steady.mark(sum(rows))
            self.sched.embedded(work.ticket, rows)

    def _cut_and_embedded(self, work: Tile, value: CutEmbedded) -> None:
        """A cut-and-embed task's report: its fragments to the store, its
        counts to the scheduler and the locality counter."""
        pixel_bytes = 3 * self.spec.tile**2
        if value.crashed:
            self.store.call_lost()  # a lost attempt may have written a fragment first
        for call in value.calls:
            if not isinstance(call.result, Written):
                self.store.call_lost()  # it may have written a fragment first
                continue
            paths = [display_path(work.windows[w].path) for w in call.windows]
            self.store.add_written(paths, call.result)
            node = self._node_of(call.actor, wait_s=NODE_ANSWER_S)  # it answered this call
            for w in call.windows:
                cut = value.stats[w]
                if not isinstance(cut, Failure):
                    self.where.embedded(cut.node, node, cut.n_tiles * pixel_bytes)
        rows = value.rows()
        self.steady.mark(sum(r for r in rows if isinstance(r, int)))
        self.sched.cut_and_embedded(work.ticket, value.stats, rows)

    def _node_of(self, actor: int, wait_s: float = 0.0) -> str:
        """The node of embedder ``actor`` (asked once; empty while unknown). The
        driver's own calls go after that question, so its answer comes first;
        a cut-and-embed task's call is another caller's, whose answer can come
        first: then wait up to ``wait_s`` for the (instant) reply."""
        ref = self.node_refs[actor]
        if actor not in self.nodes and ray.wait([ref], timeout=wait_s)[0]:
            node = outcome(ref)
            self.nodes[actor] = node if isinstance(node, str) else ""
        return self.nodes.get(actor, "")

    def _stage(self) -> None:
        for settled in self.sched.take_settled():
            if settled.staged:
                self.store.finish(display_path(settled.path))
            else:
                self.unstaged.append(display_path(settled.path))  # keep earlier tiles

    def _commit_due(self) -> bool:
        return (
            not (self.cfg.strict or self.store.rebuild)
            and bool(self.store.pending or self.unstaged)
            and time.monotonic() - self.last_commit >= self.cfg.commit_every_s
        )

    def publish(self) -> None:
        self.store.commit(self.record, self.unstaged)
        self.unstaged = []
        self.last_commit = time.monotonic()


def _ready(refs: list[Any], timeout: float) -> list[Any]:
    """The refs of ``refs`` that are ready: waits up to ``timeout`` s for one,
    then takes every other one already done (one loop turn for all of them)."""
    if not refs:
        time.sleep(timeout)
        return []
    ready, rest = ray.wait(refs, num_returns=1, timeout=timeout)
    if ready and rest:
        ready += ray.wait(rest, num_returns=len(rest), timeout=0)[0]
    return ready


def _outcomes(refs: list[Any]) -> list[Any]:
    """:func:`outcome` of each ref; one ``ray.get`` for all when none failed."""
    try:
        return list(ray.get(refs)) if refs else []
    except Exception:
        return [outcome(ref) for ref in refs]


def outcome(ref: Any) -> Any:
    """``ray.get``, with task and actor crashes returned as a :class:`Failure`."""
    try:
        return ray.get(ref)
    except (
        ray.exceptions.RayTaskError,
        ray.exceptions.RayActorError,
        ray.exceptions.WorkerCrashedError,
        ray.exceptions.NodeDiedError,  # a task of max_retries=0 whose node left
        ray.exceptions.ObjectLostError,
    ) as exc:
        return Failure(error_text(exc), kind="crash")
