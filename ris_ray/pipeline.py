"""The ingest job: files -> windows -> tiles -> fingerprints -> Lance.

Streaming design on Ray core, bounded at every stage:

1. ``probe_task`` (CPU task per file) reads the header and, for non-uint8
   data, a decimated sample for the stretch. The driver plans windows
   (:func:`ris_ray.tiling.plan_windows`).
2. ``tile_task`` (CPU task per window) opens the file itself, reads only its
   window and cuts tiles. At most ``max_tasks_in_flight`` windows are read or
   waiting for an embedder at any time (backpressure: memory does not grow
   with input size).
3. ``EmbedActor`` (one per GPU, ``num_gpus=1``; one CPU actor without GPUs)
   holds an :class:`~ris_ray.embed.Embedder` and turns a tile batch into an
   Arrow table. Pixel batches go from tiling task to actor through the object
   store; the driver only sees small tables of fingerprints.
4. The driver's :class:`~ris_ray.store.TileWriter` writes fragments as
   results arrive and commits whole files in one Lance transaction every
   ``commit_every_s`` seconds and at the end.

Failures are per window: a window that cannot be read marks its file failed
(with the reason) and the run goes on. Ray retries tasks and restarts actors
on worker crashes (``max_retries`` / ``max_restarts``).
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import ray

from ris_ray import preflight, raylocal
from ris_ray.config import IngestConfig
from ris_ray.embed import Embedder, ResolvedWeights, default_num_threads, resolve_weights
from ris_ray.errors import InputError, RisError
from ris_ray.index import refresh_indices
from ris_ray.inputs import discover
from ris_ray.lock import dataset_lock
from ris_ray.manifest import FileRecord, Manifest
from ris_ray.sql import sql_in
from ris_ray.store import (
    DatasetParams,
    TileWriter,
    lance_dataset,
    local_path,
    open_dataset,
    to_table,
)
from ris_ray.tasks import TASK_RETRIES, error_text, probe_task, tile_task
from ris_ray.tiling import RasterInfo, TileSpec, WindowJob, display_path, plan_windows

__all__ = ["FileReport", "IngestReport", "connect", "disconnect", "ingest", "maybe_compact"]

log = logging.getLogger(__name__)


ACTOR_RESTARTS = 3
EMBED_INFLIGHT_PER_ACTOR = 2


# ---------------------------------------------------------------- reports


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


@dataclass
class IngestReport:
    """Summary of one ``ingest`` run (also written as JSON by the CLI)."""

    db: str
    model: str
    weights: str
    device: str
    files: list[FileReport] = field(default_factory=list)
    wall_s: float = 0.0
    version: int | None = None
    commits: int = 0
    missing: list[str] = field(default_factory=list)
    pruned_files: int = 0
    pruned_tiles: int = 0
    ray_gcs_address: str | None = None
    committed: bool = True  # False: --strict saw a failed file and published nothing
    steady_tiles_per_s: float = 0.0  # between the first and last embedded batch

    @property
    def tiles_written(self) -> int:
        return sum(f.tiles_written for f in self.files)

    @property
    def tiles_low_valid(self) -> int:
        return sum(f.tiles_low_valid for f in self.files)

    @property
    def tiles_empty(self) -> int:
        return sum(f.tiles_empty for f in self.files)

    @property
    def files_failed(self) -> list[FileReport]:
        return [f for f in self.files if f.status == "failed"]

    @property
    def files_read(self) -> list[FileReport]:
        """Files this run opened (everything but ``unchanged``)."""
        return [f for f in self.files if f.status != "unchanged"]

    @property
    def tiles_per_s(self) -> float:
        return self.tiles_written / self.wall_s if self.wall_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(
            tiles_written=self.tiles_written,
            files_read=len(self.files_read),
            tiles_low_valid=self.tiles_low_valid,
            tiles_empty=self.tiles_empty,
            files_failed=len(self.files_failed),
            tiles_per_s=round(self.tiles_per_s, 2),
        )
        return d


# ---------------------------------------------------------------- Ray parts


class EmbedActor:
    """A Ray actor holding one :class:`Embedder`; returns Arrow tables in the store schema."""

    def __init__(
        self,
        weights: ResolvedWeights,
        params: DatasetParams,
        device: str,
        precision: str,
        batch_size: int,
        threads: int,
    ) -> None:
        self.embedder = Embedder(
            weights, device=device, precision=precision, batch_size=batch_size, num_threads=threads
        )
        self.params = params

    def device(self) -> str:
        return f"{self.embedder.device} {str(self.embedder.dtype).removeprefix('torch.')}"

    def embed(self, batch: dict[str, Any], crs: str | None) -> Any:
        batch["fingerprint"] = self.embedder.embed(batch.pop("pixels"))
        return to_table(batch, self.params, crs)


def connect(address: str | None = None) -> bool:
    """Connect to Ray: ``address`` or ``RAY_ADDRESS`` if set, else start a fresh
    embedded local instance on loopback (:func:`ris_ray.raylocal.start`).
    Returns True when this call started Ray (the caller calls :func:`disconnect`)."""
    return raylocal.start(address)


def disconnect() -> None:
    """Shut down the Ray that :func:`connect` started."""
    raylocal.stop()


def _wait_for_gpus(wanted: int, timeout_s: float, say: Callable[[str], None]) -> int:
    """Ask the autoscaler for ``wanted`` GPUs and wait up to ``timeout_s`` for them.

    A fixed pool sized after the wait avoids the known Ray Data behaviour where
    an autoscaling GPU actor pool stays at one actor while nodes boot.
    Returns the number of GPUs present at the end.
    """
    from ray.autoscaler.sdk import request_resources

    have = int(ray.cluster_resources().get("GPU", 0))
    if have >= wanted:
        return have
    request_resources(bundles=[{"GPU": 1}] * wanted)
    say(f"waiting up to {timeout_s:.0f} s for {wanted} GPUs (have {have})")
    deadline = time.monotonic() + timeout_s
    while have < wanted and time.monotonic() < deadline:
        time.sleep(5.0)
        have = int(ray.cluster_resources().get("GPU", 0))
    return have


def _make_actors(
    cfg: IngestConfig,
    weights: ResolvedWeights,
    params: DatasetParams,
    say: Callable[[str], None],
) -> list[Any]:
    """One embedder per GPU (``num_gpus=1`` each), or one CPU embedder without GPUs.

    ``--device cuda --embedders N`` asks the autoscaler for N GPUs and waits
    ``cfg.gpu_wait_s`` for them; it fails if none appears.
    """
    gpus = int(ray.cluster_resources().get("GPU", 0))
    if cfg.device == "cuda":
        gpus = _wait_for_gpus(cfg.num_embedders or max(gpus, 1), cfg.gpu_wait_s, say)
        if gpus == 0:
            raise InputError(
                f"--device cuda: no GPU joined the cluster within {cfg.gpu_wait_s:.0f} s; "
                "check the GPU node type / quotas, or use --device cpu"
            )
    use_gpu = gpus > 0 and cfg.device != "cpu"
    n = min(cfg.num_embedders or gpus, gpus) if use_gpu else (cfg.num_embedders or 1)
    device = "cuda" if use_gpu else "cpu"
    threads = 1 if use_gpu else default_num_threads()
    cls = ray.remote(EmbedActor).options(
        num_gpus=1 if use_gpu else 0,
        num_cpus=1,
        max_restarts=ACTOR_RESTARTS,
        max_task_retries=TASK_RETRIES,
    )
    return [
        cls.remote(weights, params, device, cfg.precision, cfg.batch_size, threads)
        for _ in range(n)
    ]


# ---------------------------------------------------------------- the run


class _Progress:
    """Rich progress on stderr (tiles embedded of planned, files, tiles/s), or nothing."""

    def __init__(self, enabled: bool, n_files: int) -> None:
        self.enabled = enabled
        self.n_files = n_files
        if not enabled:
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self._p = Progress(
            TextColumn("[bold]ingest"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("tiles  {task.fields[files]}  {task.fields[rate]}"),
            TimeElapsedColumn(),
            transient=False,
        )
        self._task = self._p.add_task("tiles", total=None, files="", rate="")
        self._p.start()

    def update(self, tiles_done: int, tiles_planned: int, files_done: int, t0: float) -> None:
        if not self.enabled:
            return
        rate = tiles_done / max(time.monotonic() - t0, 1e-9)
        self._p.update(
            self._task,
            completed=tiles_done,
            total=max(tiles_planned, 1),
            files=f"files {files_done}/{self.n_files}",
            rate=f"{rate:.1f} tiles/s",
        )

    def stop(self) -> None:
        if self.enabled:
            self._p.stop()


def _stat(path: str) -> tuple[int, int] | None:
    """``(size, mtime_ns)`` of a local file, ``None`` for remote or unreadable paths."""
    if "://" in path or path.startswith("/vsi"):
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def _under(path: str, roots: list[str]) -> bool:
    return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)


def ingest(cfg: IngestConfig, *, on_event: Callable[[str], None] | None = None) -> IngestReport:
    """Run the ingest job described by ``cfg`` and return its report.

    First, before Ray starts or a pixel is read: :func:`ris_ray.preflight.check_db`
    (``--db`` writable) and the dataset lock (:mod:`ris_ray.lock`), held for
    the whole run; a disk that fills up mid-run ends in
    :class:`~ris_ray.preflight.StorageFullError` (exit 2) with the last
    committed version intact. The rest is :func:`_ingest`.
    """
    preflight.check_db(cfg.db)
    with dataset_lock(cfg.db, cfg.lock_wait_s):
        try:
            return _ingest(cfg, on_event=on_event)
        except Exception as exc:
            if isinstance(exc, RisError) or not preflight.is_disk_full(exc):
                raise
            raise preflight.StorageFullError(
                f"--db {cfg.db}: no space left on the device while writing; the last "
                f"committed version ({_last_version(cfg.db)}) is intact; free space and "
                "re-run (only uncommitted files are redone)"
            ) from None


def _last_version(db: str) -> int | None:
    try:
        return int(open_dataset(local_path(db)).version)
    except (RisError, OSError, ValueError):
        return None


def _ingest(cfg: IngestConfig, *, on_event: Callable[[str], None] | None = None) -> IngestReport:
    """The ingest run proper (see :func:`ingest`).

    Incremental: files already in the dataset's manifest with the same size
    and modification time are not read again; new, changed and previously
    failed files are. With ``cfg.rebuild`` everything is re-read and the
    dataset is replaced in one commit; with ``cfg.prune`` tiles of manifest
    files under the inputs that no longer exist are deleted.

    Connects to Ray (embedded unless ``cfg.address``/``RAY_ADDRESS``) only when
    there is work. Per-file failures are recorded in the report, not raised;
    configuration problems (missing input, unusable weights, incompatible
    dataset) raise :class:`~ris_ray.errors.RisError` before any pixel is read.
    """
    say = on_event or (lambda msg: None)
    t0 = time.monotonic()
    paths = discover(cfg.inputs)
    weights = resolve_weights(cfg.weights)
    params = DatasetParams(cfg.tile_size, cfg.step, weights.model_id)
    db = local_path(cfg.db)
    writer = TileWriter(db, params, rebuild=cfg.rebuild)  # checks compatibility first
    try:
        manifest = Manifest(db)
        known = {} if cfg.rebuild else manifest.load()
        report = IngestReport(
            db=db, model=weights.model_id, weights=weights.description, device="-"
        )
        todo: list[str] = []
        shown = {display_path(p) for p in paths}
        for path in paths:
            ident = _stat(path)
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
        roots = [os.path.realpath(i) for i in cfg.inputs if "://" not in i]  # as discover stores
        gone = sorted(p for p in known if _under(p, roots) and p not in shown)
        report.missing = gone
        say(
            f"{len(todo)} new or changed files, {len(paths) - len(todo)} unchanged"
            + (f", {len(gone)} gone" if gone else "")
        )
        if todo:
            # Build the model once here so missing weights fail before Ray starts work.
            Embedder(weights, device="cpu", precision="fp32").check(cfg.tile_size)
            say(f"weights: {weights.description}")
            started = connect(cfg.address)
            try:
                _run(cfg, todo, weights, params, writer, manifest, report, say, t0)
            finally:
                if started:
                    disconnect()
        if cfg.prune and gone:
            report.pruned_tiles = _prune(db, manifest, gone)
            report.pruned_files = len(gone)
            say(f"pruned {len(gone)} files that no longer exist")
        if report.commits and cfg.compact_fragments:
            maybe_compact(db, cfg.compact_fragments)
        if report.commits or report.pruned_files:
            refresh_indices(db)
        report.version = open_dataset(db).version if writer.version is not None else None
    finally:
        writer.close()
    report.wall_s = time.monotonic() - t0
    return report


def _prune(db: str, manifest: Manifest, gone: list[str]) -> int:
    """Delete the tiles and manifest rows of files that no longer exist."""
    ds = open_dataset(db)
    before = ds.count_rows()
    ds.delete(sql_in("source", gone))
    manifest.delete(gone)
    return int(before - lance_dataset(db).count_rows())


def _record(f: FileReport, version: int | None, ident: tuple[int, int] | None) -> FileRecord:
    size, mtime = ident or (-1, -1)
    return FileRecord(
        path=f.path,
        size=size,
        mtime_ns=mtime,
        status=f.status,
        tiles=f.tiles_written,
        tiles_low_valid=f.tiles_low_valid,
        reason=f.reason,
        dataset_version=version,
    )


def _run(
    cfg: IngestConfig,
    paths: list[str],
    weights: ResolvedWeights,
    params: DatasetParams,
    writer: TileWriter,
    manifest: Manifest,
    report: IngestReport,
    say: Callable[[str], None],
    t0: float,
) -> None:
    spec = TileSpec(cfg.tile_size, cfg.step, cfg.min_valid, weights.model_id, cfg.thumbnail_size)
    actors = _make_actors(cfg, weights, params, say)
    report.device = ray.get(actors[0].device.remote())
    report.ray_gcs_address = ray.get_runtime_context().gcs_address
    say(f"embedders: {len(actors)} x {report.device}; files to read: {len(paths)}")
    files = {p: FileReport(display_path(p)) for p in paths}  # real path -> report
    report.files.extend(files.values())
    real = {f.path: p for p, f in files.items()}  # stored (display) path -> real path
    idents = {p: _stat(p) for p in paths}
    infos: dict[str, RasterInfo] = {}
    outstanding: dict[str, int] = {}  # windows not yet fully handled, per file
    unstaged: list[str] = []  # settled files with nothing to publish (probe failures)
    cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    max_inflight = cfg.max_tasks_in_flight or max(4, 2 * cpus + 2 * len(actors))

    probes = {probe_task.remote(p, cfg.bands): p for p in paths}
    window_args = (spec.tile, spec.stride)
    windows: deque[tuple[str, WindowJob]] = deque()
    tiling: dict[Any, tuple[str, Any]] = {}  # stats ref -> (path, batch ref)
    to_embed: deque[tuple[str, Any, int]] = deque()  # (path, batch ref, n tiles)
    embedding: dict[Any, tuple[str, Any, int, int]] = {}  # table ref -> (path, batch, n, actor)
    load = [0] * len(actors)
    planned = done_tiles = files_done = 0
    last_commit = time.monotonic()
    progress = _Progress(cfg.progress, len(paths))
    steady = _SteadyRate()

    def publish() -> None:
        nonlocal last_commit
        version, sources = writer.commit()
        version = version if version is not None else writer.version
        done = [*(real[s] for s in sources), *unstaged]
        unstaged.clear()
        if not writer.rebuild:
            manifest.upsert(_record(files[p], version, idents[p]) for p in done)
        last_commit = time.monotonic()

    def settle(path: str) -> None:
        nonlocal files_done
        outstanding[path] -= 1
        if outstanding[path]:
            return
        f = files[path]
        files_done += 1
        if f.windows_failed:
            f.status = "failed"
        elif f.tiles_written == 0:
            f.status = "skipped"
            f.reason = f.reason or (
                f"no valid tiles: {f.tiles_low_valid} below --min-valid {cfg.min_valid}"
                + (f", {f.tiles_empty} in absent blocks" if f.tiles_empty else "")
            )
        else:
            f.status = "ok"
        writer.finish(files[path].path)

    try:
        while probes or windows or tiling or to_embed or embedding:
            # Feed tiling tasks while the pipeline has room (backpressure).
            while windows and len(tiling) + len(to_embed) + len(embedding) < max_inflight:
                path, job = windows.popleft()
                stats_ref, batch_ref = tile_task.remote(infos[path], job, spec)
                tiling[stats_ref] = (path, batch_ref)
            # Hand tile batches to the least-loaded embedder with a free slot.
            while to_embed and min(load) < EMBED_INFLIGHT_PER_ACTOR:
                path, batch_ref, n = to_embed.popleft()
                a = load.index(min(load))
                ref = actors[a].embed.remote(batch_ref, infos[path].crs)
                embedding[ref] = (path, batch_ref, n, a)
                load[a] += 1

            waiting = [*probes, *tiling, *embedding]
            ready, _ = ray.wait(waiting, num_returns=1, timeout=1.0)
            for ref in ready:
                if ref in probes:
                    path = probes.pop(ref)
                    result = _get(ref)
                    f = files[path]
                    if isinstance(result, (str, BaseException)):
                        f.status = "failed"
                        f.reason = result if isinstance(result, str) else error_text(result)
                        files_done += 1
                        unstaged.append(path)  # keep any tiles an earlier run stored
                        continue
                    infos[path] = result
                    jobs = plan_windows(
                        result.width,
                        result.height,
                        spec.tile,
                        spec.stride,
                        block_shape=result.block_shape,
                        target_px=cfg.window_px,
                    )
                    f.tiles_planned = sum(j.n_tiles for j in jobs)
                    readable = [j for j in jobs if result.window_has_data(j.window(*window_args))]
                    f.tiles_empty = f.tiles_planned - sum(j.n_tiles for j in readable)
                    jobs = readable
                    f.windows = len(jobs)
                    planned += f.tiles_planned - f.tiles_empty
                    if not jobs:
                        f.status = "skipped"
                        f.reason = (
                            f"{result.width}x{result.height} is smaller than one "
                            f"{spec.tile}x{spec.tile} tile"
                            if not f.tiles_planned
                            else f"all {f.tiles_planned} tiles lie in absent (sparse) blocks"
                        )
                        files_done += 1
                        writer.finish(f.path)  # drops tiles of an earlier, larger version
                        continue
                    outstanding[path] = len(jobs)
                    windows.extend((path, j) for j in jobs)
                elif ref in tiling:
                    path, batch_ref = tiling.pop(ref)
                    stats = _get(ref)
                    f = files[path]
                    if isinstance(stats, BaseException):
                        stats = {"error": f"{path}: {error_text(stats)}", "n_tiles": 0}
                    f.tiles_low_valid += int(stats.get("n_low_valid", 0))
                    if "error" in stats:
                        f.windows_failed += 1
                        f.reason = (
                            stats["error"]
                            if f.windows_failed == 1
                            else f"{f.windows_failed} windows failed; first: {f.reason}"
                        )
                        settle(path)
                    elif stats["n_tiles"]:
                        to_embed.append((path, batch_ref, stats["n_tiles"]))
                    else:
                        settle(path)
                else:
                    path, batch_ref, n, a = embedding.pop(ref)
                    load[a] -= 1
                    table = _get(ref)
                    if isinstance(table, BaseException):
                        f = files[path]
                        f.windows_failed += 1
                        f.reason = f"{path}: embedding failed ({error_text(table)})"
                    else:
                        writer.add(files[path].path, table)
                        files[path].tiles_written += table.num_rows
                        done_tiles += table.num_rows
                        steady.mark(table.num_rows)
                    settle(path)
            progress.update(done_tiles, planned, files_done, t0)
            if (
                not (cfg.strict or writer.rebuild)
                and (writer.pending_sources or unstaged)
                and time.monotonic() - last_commit >= cfg.commit_every_s
            ):
                publish()
        if cfg.strict and any(f.status == "failed" for f in files.values()):
            report.committed = False  # --strict: a failed file means nothing is published
        elif writer.rebuild:
            version, _ = writer.finalize()
            manifest.replace_all(_record(files[p], version, idents[p]) for p in paths)
        else:
            publish()
    finally:
        progress.stop()
        for actor in actors:
            ray.kill(actor)
    report.commits = writer.commits
    report.steady_tiles_per_s = steady.rate


class _SteadyRate:
    """Tiles/s between the first and the last embedded batch: the pipeline's
    throughput once it runs, without Ray start-up and model loading."""

    def __init__(self) -> None:
        self.first: float | None = None
        self.last = 0.0
        self.after_first = 0

    def mark(self, rows: int) -> None:
        now = time.monotonic()
        if self.first is None:
            self.first = now
        else:
            self.after_first += rows
        self.last = now

    @property
    def rate(self) -> float:
        span = self.last - (self.first or self.last)
        return self.after_first / span if span > 0 else 0.0


def maybe_compact(db: str, max_fragments: int) -> bool:
    """Compact the dataset (and its manifest) when it has more than ``max_fragments``
    fragments. Returns True when it compacted."""
    ds = lance_dataset(db)
    if len(ds.get_fragments()) <= max_fragments:
        return False
    ds.optimize.compact_files()
    Manifest(db).compact()
    return True


def _get(ref: Any) -> Any:
    """``ray.get`` that returns task errors instead of raising them."""
    try:
        return ray.get(ref)
    except (
        ray.exceptions.RayTaskError,
        ray.exceptions.RayActorError,
        ray.exceptions.WorkerCrashedError,
        ray.exceptions.ObjectLostError,
    ) as exc:
        return exc
