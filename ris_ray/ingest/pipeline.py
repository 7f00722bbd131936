"""The ingest job: files -> windows -> tiles -> fingerprints -> Lance.

Streaming design on Ray core, bounded at every stage:

1. ``probe_task`` (CPU task per file, or per few files when there are many:
   :func:`probe_files`; :mod:`ris_ray.ingest.tasks`) reads the header
   and, for non-uint8 data, a decimated sample for the stretch.
2. ``tile_task`` (CPU task per window, or per few small windows up to
   :data:`TASK_TILES` tiles: small files) opens the file itself, reads only
   its windows and cuts each into a :class:`~ris_ray.core.records.TileBatch`.
3. :class:`~ris_ray.ingest.actors.EmbedActor` (one per GPU, ``num_gpus=1``; one CPU
   actor without GPUs, one per node on a cluster) turns a batch into rows in the store schema, one
   Arrow IPC message per window (:class:`~ris_ray.store.schema.EncodedRows`).
   Pixel batches go from tiling task to actor through the object store; the
   driver only sees these small messages. On a cluster each tiling task runs
   on the node of the embedders that take its tiles
   (:mod:`~ris_ray.ingest.placement`), so pixels stay on their node; the
   report counts the bytes that did (:mod:`~ris_ray.ingest.locality`).
4. The :class:`~ris_ray.store.tilestore.TileStore` stages the messages as they arrive,
   undecoded, and commits whole files, with their manifest records, every
   ``commit_every_s`` seconds and at the end.

What runs next, and what each result means, is the Ray-free
:class:`~ris_ray.ingest.scheduler.Scheduler` (planning, backpressure, per-file
state); the thin Ray loop around it is :mod:`~ris_ray.ingest.rayloop` (submit
the work it asks for, ``ray.wait``, feed each outcome back as one event, drop
embedders whose node left); this module runs it. Failures are per
window and come back as :class:`~ris_ray.core.records.Failure` values; Ray retries
tasks and restarts actors on worker crashes. Connecting to Ray and starting
the embedders is :mod:`~ris_ray.ingest.cluster`; the run's report, progress
and manifest records are :mod:`~ris_ray.ingest.report`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import ray

from ris_ray.core.config import IngestConfig
from ris_ray.core.errors import RasterReadError, RisError
from ris_ray.core.location import Location
from ris_ray.core.objstore import ObjectInfo
from ris_ray.core.records import FileIdent
from ris_ray.ingest import preflight
from ris_ray.ingest.actors import EmbedActor
from ris_ray.ingest.cluster import connect, disconnect, make_actors
from ris_ray.ingest.files import FileReport
from ris_ray.ingest.inputs import discover_objects, scopes
from ris_ray.ingest.rayloop import RayLoop
from ris_ray.ingest.report import IngestReport, Progress, file_record
from ris_ray.ingest.scheduler import Scheduler
from ris_ray.model.embed import Embedder
from ris_ray.model.weights import ResolvedWeights, resolve_weights
from ris_ray.raster.dataset import display_path, file_identity
from ris_ray.raster.tiling import TileSpec
from ris_ray.store.manifest import FileRecord
from ris_ray.store.schema import DatasetParams
from ris_ray.store.tilestore import TileStore

__all__ = ["FileReport", "IngestReport", "connect", "disconnect", "ingest", "probe_files"]

log = logging.getLogger(__name__)


EMBED_INFLIGHT_PER_ACTOR = 2
#: Most files one probe task reads the headers of (many small files: fewer driver calls).
PROBE_FILES = 16
#: Share of the cluster's object store that tiles cut while the embedders
#: start may fill (read-ahead, :mod:`~ris_ray.ingest.backpressure`).
STARTUP_STORE_SHARE = 0.25
#: Most planned tiles one tiling task cuts when its windows are small (small
#: files: ~16 tiles each); a window of more is a task of its own. Ray's own
#: work per task (about 1 ms of driver CPU) then spreads over more tiles.
TASK_TILES = 64
#: Most planned tiles one cut-and-embed task takes (rows written by the
#: embedders: :func:`~ris_ray.ingest.tasks.cut_embed_task`): the waiting tiles
#: spread over the task slots, between :data:`TASK_TILES` and this. The driver's
#: work (about 1 ms a task) then spreads over up to this many tiles.
FUSED_TASK_TILES = 2048
#: Longest a cut window waits for others to fill an embedder call
#: (:attr:`~ris_ray.core.config.IngestConfig.tiles_per_call` tiles). The wait costs
#: no throughput: calls that fill go out at once, and a window waits only
#: while the embedders have free slots, i.e. keep up with tiling.
EMBED_HOLD_S = 0.25


# ---------------------------------------------------------------- the run


def _stat(path: str, objects: dict[str, ObjectInfo]) -> FileIdent | None:
    """The identity of ``path``: a store object's from the listing in ``objects``
    (size, last-modified, ETag; no request), else :func:`file_identity` (local
    stat, or one HEAD); ``None`` when it has none or cannot be read."""
    info = objects.get(path)
    if info is not None:
        return FileIdent(info.size, info.last_modified_ns, info.etag)
    try:
        return file_identity(path)
    except RasterReadError:
        return None


Ident = FileIdent | None


def ingest(
    cfg: IngestConfig,
    *,
    on_event: Callable[[str], None] | None = None,
    actor_cls: type[EmbedActor] = EmbedActor,
) -> IngestReport:
    """Run the ingest job described by ``cfg`` and return its report.

    First, before Ray starts or a pixel is read: :func:`ris_ray.ingest.preflight.check_db`
    (``--db`` writable); then :func:`_ingest`, whose
    :meth:`~ris_ray.store.tilestore.TileStore.for_ingest` takes the dataset's writer lock
    (:mod:`ris_ray.store.lock`, waiting up to ``cfg.lock_wait_s``) before it looks at
    the dataset and holds it until the store is closed. A disk that fills up
    mid-run ends in :class:`~ris_ray.ingest.preflight.StorageFullError` (exit 2) with
    the last committed version intact.

    ``actor_cls`` is the embedder actor class (library use only, no CLI
    option): a subclass of :class:`~ris_ray.ingest.actors.EmbedActor` with the same
    constructor, e.g. the benchmark's zero-cost embedder that measures the
    plumbing ceiling through the same output path.
    """
    preflight.check_db(cfg.db)
    try:
        return _ingest(cfg, on_event=on_event, actor_cls=actor_cls)
    except Exception as exc:
        if isinstance(exc, RisError) or not preflight.is_disk_full(exc):
            raise
        raise preflight.StorageFullError(
            f"--db {cfg.db}: no space left on the device while writing; the last "
            f"committed version ({_last_version(cfg.db)}) is intact; free space and "
            "re-run (only uncommitted files are redone)"
        ) from None


def _last_version(db: str | Location) -> int | None:
    try:
        return TileStore(db).version
    except (RisError, OSError, ValueError):
        return None


def _ingest(
    cfg: IngestConfig,
    *,
    on_event: Callable[[str], None] | None,
    actor_cls: type[EmbedActor],
) -> IngestReport:
    """The ingest run proper (see :func:`ingest`).

    Incremental: files already in the dataset's manifest with the same size
    and modification time (store objects: size and ETag, from the listing)
    are not read again; new, changed and previously
    failed files are. With ``cfg.rebuild`` everything is re-read and the
    dataset is replaced in one commit; with ``cfg.prune`` tiles of manifest
    files under the inputs that no longer exist are deleted.

    Connects to Ray (embedded unless ``cfg.address``/``RAY_ADDRESS``) only when
    there is work. Per-file failures are recorded in the report, not raised;
    configuration problems (missing input, unusable weights, incompatible
    dataset) raise :class:`~ris_ray.core.errors.RisError` before any pixel is read.
    """
    say = on_event or (lambda msg: None)
    t0 = time.monotonic()
    paths, objects = discover_objects(cfg.inputs)
    weights = resolve_weights(cfg.weights)
    params = DatasetParams(cfg.tile_size, cfg.step, weights.model_id)
    store = TileStore.for_ingest(  # the writer lock, then the params check
        cfg.db, params, rebuild=cfg.rebuild, lock_wait_s=cfg.lock_wait_s
    )
    try:
        report = IngestReport(
            db=store.uri, model=weights.model_id, weights=weights.description, device="-"
        )
        idents = {p: _stat(p, objects) for p in paths}  # the one stat of each file this run
        todo = _changed(cfg, paths, idents, store, report, say)
        if todo:
            # Build the model once here so missing weights fail before Ray starts work.
            Embedder(weights, device="cpu", precision="fp32").check(cfg.tile_size)
            say(f"weights: {weights.description}")
            started = connect(cfg.address)
            try:
                _run(cfg, todo, idents, weights, params, store, report, say, t0, actor_cls)
            finally:
                if started:
                    disconnect()
        _maintain(cfg, store, report, say)
        report.version = store.version
    finally:
        store.close()
    report.wall_s = time.monotonic() - t0
    return report


def _changed(
    cfg: IngestConfig,
    paths: list[str],
    idents: dict[str, Ident],
    store: TileStore,
    report: IngestReport,
    say: Callable[[str], None],
) -> list[str]:
    """The files to read (new, changed or failed before); unchanged ones go in
    the report, and manifest files under the inputs that are gone in ``report.missing``."""
    known = store.known_files()
    todo: list[str] = []
    for path in paths:
        ident = idents[path]
        rec = known.get(display_path(path))
        if (
            rec is not None
            and ident is not None
            and rec.status != "failed"
            and rec.same_file(*ident)
        ):
            report.files.append(FileReport(display_path(path), "unchanged"))
        else:
            todo.append(path)
    shown = {display_path(p) for p in paths}
    covered = scopes(cfg.inputs)  # as stored; an input naming one object covers it only
    report.missing = sorted(
        p for p in known if p not in shown and any(s.covers(p) for s in covered)
    )
    gone = report.missing
    say(
        f"{len(todo)} new or changed files, {len(paths) - len(todo)} unchanged"
        + (f", {len(gone)} gone" if gone else "")
    )
    return todo


def _maintain(
    cfg: IngestConfig, store: TileStore, report: IngestReport, say: Callable[[str], None]
) -> None:
    """After the run: prune files that are gone, compact, refresh indices."""
    gone = report.missing
    if cfg.prune and gone:
        report.pruned_tiles = store.prune(gone)
        report.pruned_files = len(gone)
        say(f"pruned {len(gone)} files that no longer exist")
    if report.commits and cfg.compact_fragments:
        store.compact(above=cfg.compact_fragments)
    if report.commits or report.pruned_files:
        store.refresh_indices()


def _run(
    cfg: IngestConfig,
    paths: list[str],
    idents: dict[str, Ident],
    weights: ResolvedWeights,
    params: DatasetParams,
    store: TileStore,
    report: IngestReport,
    say: Callable[[str], None],
    t0: float,
    actor_cls: type[EmbedActor] = EmbedActor,
) -> None:
    """Read, embed and store ``paths`` on Ray (connected) with ``actor_cls`` embedders."""
    spec = TileSpec(cfg.tile_size, cfg.step, cfg.min_valid, weights.model_id)
    actors, plan, target = make_actors(
        cfg, weights, params, store.fingerprint, say, actor_cls, store.fragment_target()
    )
    report.rows_written_by = "driver" if target is None else "embedders"
    report.ray_gcs_address = ray.get_runtime_context().gcs_address
    report.nodes = plan.n_nodes
    on = f" on {plan.n_nodes} nodes" if plan.cluster else ""
    say(f"embedders: {len(actors)} starting{on}; files to read: {len(paths)}")
    resources = ray.cluster_resources()
    cpus = max(1, int(resources.get("CPU", 1)))
    store_bytes = resources.get("object_store_memory", 0.0)
    sched = Scheduler(
        paths,
        spec,
        min_valid=cfg.min_valid,
        window_px=cfg.window_px,
        max_inflight=cfg.max_tasks_in_flight or (cpus if target is not None else max(4, 2 * cpus)),
        n_embedders=len(actors),
        embed_slots=EMBED_INFLIGHT_PER_ACTOR,
        probe_files=probe_files(len(paths), cpus),
        embed_tiles=cfg.tiles_per_call,
        hold_s=EMBED_HOLD_S,
        task_tiles=TASK_TILES,
        ready=False,
        startup_tiles=int(STARTUP_STORE_SHARE * store_bytes / (3 * cfg.tile_size**2)),
        groups=plan.groups,
        max_task_tiles=FUSED_TASK_TILES if target is not None else 0,
    )
    report.files.extend(sched.reports)
    real = {display_path(p): p for p in paths}

    def record(shown: str, version: int | None) -> FileRecord:
        return file_record(sched.files[real[shown]].report, version, idents[real[shown]])

    def ready(device: str) -> None:
        report.device = device
        say(f"embedders: {len(actors)} x {device}")

    loop = RayLoop(cfg, sched, actors, spec, store, record, ready, idents, plan, say, target)
    progress = Progress(cfg.progress, len(paths))
    cpu0 = time.process_time()
    try:
        loop.run(progress, t0)
        report.driver_loop_cpu_s = time.process_time() - cpu0
        if cfg.strict and any(f.status == "failed" for f in sched.reports):
            report.committed = False  # --strict: a failed file means nothing is published
        elif store.rebuild:
            store.commit_rebuild(record, [display_path(p) for p in paths])
        else:
            loop.publish()
    finally:
        progress.stop()
        for actor in actors:
            ray.kill(actor)
    report.commits = store.commits
    report.steady_tiles_per_s = loop.steady.rate
    report.pixel_bytes_local, report.pixel_bytes_crossed = loop.where.local, loop.where.crossed


def probe_files(n_files: int, cpus: int) -> int:
    """Files per probe task: enough for two tasks per CPU, at most :data:`PROBE_FILES`."""
    return max(1, min(PROBE_FILES, n_files // (2 * cpus)))
