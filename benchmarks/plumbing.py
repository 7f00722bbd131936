"""The plumbing ceiling (issue 11, item 2): the whole Ray ingest with a
zero-cost embedder against the tiling stage alone, on the same cores, in one run.

- :class:`ZeroCostEmbedActor` is an :class:`~ris_ray.ingest.actors.EmbedActor` whose
  own work costs nothing, as if the GPU and its host side were free: a
  constant fingerprint and one real JPEG thumbnail (of the first tile it
  sees) for every tile, so the same bytes per tile travel; the pixels are
  not touched. Everything else is the shipped path (``embed``: rows encoded
  in the store's fingerprint type; the driver's staging, Lance commit and
  manifest), passed to ``pipeline.ingest(cfg, actor_cls=...)``. This is
  the plumbing: Ray's calls and object store, the driver, the Lance writer.
- :class:`ConstantEmbedActor` adds the embedder actor's own host work that a
  GPU node pays on the same node's cores: it reads every ``T/size``-th pixel
  (standing in for the GPU's thumbnail reduce; the GPU upload reads the
  pixels too) and JPEG-encodes every thumbnail, as the shipped actor does.
- "tiling alone" runs the same ``tile_task`` Ray tasks on the same windows
  (grouped as ``ingest`` groups them: small windows up to
  :data:`~ris_ray.ingest.pipeline.TASK_TILES` tiles a task) in
  the same Ray instance, with the embedder's CPU slot held by an idle actor so
  both runs cut tiles in the same number of concurrent tasks; the driver
  takes each window's stats and drops the batch (it stays in the object store
  until freed, as a batch waiting for an embedder would).
- Ray is started with ``cores + 1`` logical CPUs: one slot for the embedder
  actor (on a GPU node the embedder has its own core), ``cores`` for tiling.
  Every process still shares the same ``cores`` physical cores.

Not used by ris_ray itself.
"""

from __future__ import annotations

import os
import pickle
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any, cast

import numpy as np

from ris_ray.core.config import FINGERPRINT_DIM
from ris_ray.ingest.actors import EmbedActor
from ris_ray.model import thumbnail
from ris_ray.model.weights import ResolvedWeights
from ris_ray.raster.reading import probe, read_tiles
from ris_ray.raster.tiling import TileSpec, plan_windows
from ris_ray.store.fragments import FragmentTarget
from ris_ray.store.schema import DatasetParams

__all__ = ["ConstantEmbedActor", "ZeroCostEmbedActor", "bench_plumbing", "shipped_bytes"]


class ConstantEmbedActor(EmbedActor):
    """Benchmark-only embedder: no model, a constant fingerprint per tile, and
    the shipped actor's host work on thumbnails (:meth:`EmbedActor.embed`
    JPEG-encodes them and encodes the rows).

    :meth:`infer` stands in for the device pass: the constant fingerprints,
    and for the thumbnails' pixels every ``T/size``-th pixel of each tile (a
    strided read of every page, standing in for the GPU's reduce; the GPU
    upload reads the pixels too); their encoding is the shipped CPU work.
    """

    def __init__(
        self,
        weights: ResolvedWeights,
        params: DatasetParams,
        device: str,
        precision: str,
        batch_size: int,
        threads: int,
        fingerprint: str = "float32",
        thumbnail: int = 64,
        target: FragmentTarget | None = None,
    ) -> None:
        self.params = params
        self.target = target
        self.fingerprint = fingerprint
        self.thumbnail = thumbnail
        self.pool = None
        self._one = np.full((1, FINGERPRINT_DIM), FINGERPRINT_DIM**-0.5, np.float32)

    def device(self) -> str:
        return "none (zero-cost: constant fingerprints)"

    def infer(self, pixels: list[np.ndarray], size: int) -> tuple[np.ndarray, np.ndarray]:
        n = sum(len(p) for p in pixels)
        fingerprints = np.broadcast_to(self._one, (n, FINGERPRINT_DIM))
        small = np.empty((n if size else 0, size, size, 3), np.uint8)
        start = 0
        for p in pixels if size else []:
            step = max(1, p.shape[-1] // size)
            small[start : start + len(p)] = p[:, :, ::step, ::step][:, :, :size, :size].transpose(
                0, 2, 3, 1
            )
            start += len(p)
        return fingerprints, small


class ZeroCostEmbedActor(ConstantEmbedActor):
    """Benchmark-only embedder whose own work is free: constant fingerprints and,
    for every tile, the one real JPEG thumbnail of the first tile it saw (so
    the rows carry the same bytes); the pixels are never read."""

    _jpeg: bytes | None = None

    def infer(self, pixels: list[np.ndarray], size: int) -> tuple[np.ndarray, np.ndarray]:
        if self._jpeg is None and size and pixels:
            self._jpeg = thumbnail.encode_all(super().infer(pixels[:1], size)[1][:1])[0]
        n = sum(len(p) for p in pixels)
        return np.broadcast_to(self._one, (n, FINGERPRINT_DIM)), np.empty((n, 0, 0, 3), np.uint8)

    def thumbnails(self, small: np.ndarray) -> list[bytes]:
        return [self._jpeg or b""] * len(small)


def shipped_bytes(obj: Any) -> int:
    """Bytes an object takes in Ray's object store: pickle protocol 5 with the
    large buffers (numpy arrays, Arrow buffers) out of band, as Ray stores them."""
    buffers: list[pickle.PickleBuffer] = []
    head = pickle.dumps(obj, protocol=5, buffer_callback=buffers.append)
    return len(head) + sum(b.raw().nbytes for b in buffers)


def _inputs(data: Path, scale: int, work: Path) -> Path:
    """``scale`` copies of the files under ``data`` under other names (real copies:
    ingest reads a file reached through several links once, by its real path)."""
    from ris_ray.ingest.inputs import discover

    src = work / f"plumbing-{data.name}-{scale}x"
    src.mkdir(exist_ok=True)
    for i in range(scale):
        for f in discover([str(data)]):
            copy = src / f"copy{i}_{Path(f).name}"
            if not copy.exists():
                shutil.copyfile(f, copy)
    return src


def _tiling_alone(src: Path, spec: TileSpec, inflight: int) -> dict[str, float]:
    """The tiling stage alone on Ray: the same ``probe_task`` per file (or few
    files) and ``tile_task`` per window (or few small windows) as ``ingest``;
    returns tiles, wall s and CPU."""
    from collections import deque

    import ray

    from ris_ray.ingest.pipeline import TASK_TILES
    from ris_ray.ingest.planning import take_group
    from ris_ray.ingest.tasks import probe_task, tile_windows

    hold = ray.remote(num_cpus=1)(_Hold).remote()  # the embedder's slot, idle
    ray.get(hold.ready.remote())
    sampler = _CpuSampler()
    t0 = time.perf_counter()
    plans = deque(_plans(src, probe_task))
    todo = []
    while plans:
        todo.append(take_group(plans, lambda plan: plan[1].n_tiles, TASK_TILES))
    pending: dict[Any, Any] = {}
    tiles, first, after_first, last = 0, None, 0, 0.0
    while todo or pending:
        while todo and len(pending) < inflight:
            stats_ref, batch_refs = tile_windows(todo.pop(0), spec)
            pending[stats_ref] = batch_refs
        ready, _ = ray.wait(list(pending), num_returns=1)
        for ref in ready:
            del pending[ref]  # the batch refs go with it: freed
            n = sum(stats.n_tiles for stats in ray.get(ref))
            tiles += n
            now = time.perf_counter()
            if first is None:
                first = now
            else:
                after_first += n
            last = now
    wall = time.perf_counter() - t0
    cpu = sampler.stop()
    ray.kill(hold)
    span = last - (first or last)
    steady = after_first / span if span > 0 else 0.0
    return {"tiles": tiles, "wall": wall, "steady": steady, **_cpu_keys(cpu)}


def _cpu_keys(cpu: dict[str, float]) -> dict[str, float]:
    return {f"cpu {k}": v for k, v in cpu.items()}


class _CpuSampler:
    """CPU seconds per process group (driver, tiling workers, embedder actor,
    raylet + object store, GCS, other Ray helpers) while a run lasts: polls
    this process and its descendants every ``interval`` s with psutil and
    keeps each process's last reading (processes that exit keep their last
    sample). The sampler's own CPU is taken out of the driver's."""

    def __init__(self, interval: float = 0.2) -> None:
        import threading

        import psutil

        self._me = psutil.Process()
        self._interval = interval
        self._seen: dict[int, tuple[str, float]] = {}
        self._start: dict[int, float] = {}
        self._stop = threading.Event()
        self._own = 0.0
        self._t0 = time.time()
        self._snap(self._start)
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _snap(self, into: dict[int, Any]) -> None:
        import psutil

        for p in [self._me, *self._me.children(recursive=True)]:
            try:
                t = p.cpu_times()
                cpu = t.user + t.system
                name = "driver" if p.pid == self._me.pid else " ".join(p.cmdline()[:2])
            except (psutil.Error, IndexError):
                continue
            if into is self._start or (
                p.pid not in self._start and p.create_time() < self._t0 - 0.1
            ):  # older than the run but missed at the start: count from now
                self._start[p.pid] = cpu
            if into is not self._start:
                old = self._seen.get(p.pid, ("", 0.0))[0]
                self._seen[p.pid] = (name if "ray::" in name or not old else old, cpu)

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            self._snap(self._seen)
        self._snap(self._seen)
        self._own = time.thread_time()

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join()
        out: dict[str, float] = {}
        for pid, (name, cpu) in self._seen.items():
            group = _group(name)
            out[group] = out.get(group, 0.0) + cpu - self._start.get(pid, 0.0)
        out["driver"] = out.get("driver", 0.0) - self._own
        return out


def _group(name: str) -> str:
    if name == "driver":
        return "driver"
    if "EmbedActor" in name:
        return "embedder actor"
    if any(t in name for t in ("tile_task", "cut_embed_task", "probe_task", "ray::IDLE")):
        return "tiling workers"
    if "raylet" in name:
        return "raylet+object store"
    if "gcs_server" in name:
        return "gcs"
    return "other ray"


def _wait_actor_gone(timeout: float = 15.0) -> None:
    """Wait until the killed embedder actor's process has exited, so its last
    CPU is not sampled in the next run."""
    import psutil

    deadline = time.monotonic() + timeout
    me = psutil.Process()
    while time.monotonic() < deadline:
        names = []
        for p in me.children(recursive=True):
            try:
                names.append(" ".join(p.cmdline()[:2]))
            except psutil.Error:
                continue
        if not any("EmbedActor" in n for n in names):
            return
        time.sleep(0.1)


class _Hold:
    def ready(self) -> bool:
        return True


def _ingest_once(
    src: Path, db: Path, actor_cls: type[EmbedActor], write_rows: str = "auto"
) -> dict[str, float]:
    from ris_ray.core.config import IngestConfig, WriteRows
    from ris_ray.ingest.pipeline import ingest

    cfg = IngestConfig(
        inputs=(str(src),),
        db=str(db),
        weights="random",
        progress=False,
        write_rows=cast(WriteRows, write_rows),
    )
    sampler = _CpuSampler()
    t0 = time.perf_counter()
    report = ingest(cfg, actor_cls=actor_cls)
    wall = time.perf_counter() - t0
    cpu = sampler.stop()
    shutil.rmtree(db, ignore_errors=True)
    _wait_actor_gone()
    return {
        "tiles": report.tiles_written,
        "wall": wall,
        "steady": report.steady_tiles_per_s,
        "loop": report.driver_loop_cpu_s,
        **_cpu_keys(cpu),
    }


def _bytes_per_tile(plans: list[tuple[Any, Any]], spec: TileSpec) -> dict[str, float]:
    """Object-store bytes per tile: tiling task -> embedder (the TileBatch with
    pixels) and embedder -> driver (the rows: one Arrow IPC message per
    window), serialized as Ray does."""
    params = DatasetParams(256, 256, spec.model)
    actor = ConstantEmbedActor(None, params, "", "", 0, 0, "float16")  # type: ignore[arg-type]
    batch_b = rows_b = tiles = pixel_b = 0
    for info, job in plans:
        batch, stats = read_tiles(info, job, spec)
        if not stats.n_tiles:
            continue
        tiles += stats.n_tiles
        batch_b += shipped_bytes(batch)
        pixel_b += int(batch.pixels.nbytes) if batch.pixels is not None else 0
        rows_b += shipped_bytes(actor.embed(batch))
    return {
        "batch": batch_b / tiles,
        "pixels": pixel_b / tiles,
        "rows": rows_b / tiles,
    }


def _plans(src: Path, probe_task: Any = None) -> list[tuple[Any, Any]]:
    """The windows ``ingest`` reads (default 2048 px windows, sparse blocks
    skipped); files probed here or, given ``probe_task``, on Ray, as many
    files per task as ``ingest`` probes (:func:`ris_ray.ingest.pipeline.probe_files`)."""
    import ray

    from ris_ray.ingest.inputs import discover
    from ris_ray.ingest.pipeline import probe_files

    paths = discover([str(src)])
    if probe_task is None:
        infos = [probe(p) for p in paths]
    else:
        n = probe_files(len(paths), int(ray.cluster_resources().get("CPU", 1)))
        groups = [paths[i : i + n] for i in range(0, len(paths), n)]
        refs = [probe_task.remote(g, None, [None] * len(g)) for g in groups]
        infos = [info for group in ray.get(refs) for info in group]
    plans = []
    for info in infos:
        jobs = plan_windows(info.width, info.height, 256, 256, block_shape=info.block_shape)
        plans += [(info, j) for j in jobs if info.window_has_data(j.window(256, 256))]
    return plans


Runs = dict[str, list[dict[str, float]]]

#: The runs of a round: tiling alone, then the ingest with each benchmark embedder.
#: (name, embedder class, who writes the rows: ``--write-rows``).
_KINDS: dict[str, tuple[str, type[EmbedActor] | None, str]] = {
    "alone": ("tiling alone (tile_task)", None, ""),
    "ingest": ("zero-cost ingest", ZeroCostEmbedActor, "embedders"),
    "driver": ("zero-cost ingest, rows written by the driver", ZeroCostEmbedActor, "driver"),
    "thumbs": ("zero-cost ingest + actor's thumbnail work", ConstantEmbedActor, "embedders"),
}


def _measure(data: Path, work: Path, scales: tuple[int, ...], rounds: int) -> dict[int, Runs]:
    """Per scale: ``rounds`` interleaved rounds of every :data:`_KINDS` run, after
    a warm-up of each (worker processes started, torch imported in the driver)."""
    import ray

    from ris_ray.model.weights import resolve_weights

    cores = os.cpu_count() or 1
    # workers cannot import benchmarks/: ship this module's classes by value
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(num_cpus=cores + 1, include_dashboard=False, logging_level="ERROR")
    spec = TileSpec(256, 256, 0.5, resolve_weights("random").model_id)
    inflight = max(4, 2 * (cores + 1))  # the ingest's default windows being read

    def once(
        src: Path, actor_cls: type[EmbedActor] | None, writer: str, name: str
    ) -> dict[str, float]:
        if actor_cls is None:
            return _tiling_alone(src, spec, inflight)
        return _ingest_once(src, work / f"plumbing-{name}.lance", actor_cls, writer)

    out: dict[int, Runs] = {}
    try:
        for scale in scales:
            src = _inputs(data, scale, work)
            for key, (_, cls, writer) in _KINDS.items():
                once(src, cls, writer, f"{scale}-{key}-warm")
            runs: Runs = {key: [] for key in _KINDS}
            for r in range(rounds):
                for key, (_, cls, writer) in _KINDS.items():
                    runs[key].append(once(src, cls, writer, f"{scale}-{key}-{r}"))
            out[scale] = runs
    finally:
        ray.shutdown()
    return out


_GROUPS = ("driver", "tiling workers", "embedder actor", "raylet+object store", "gcs", "other ray")


def _med(runs: list[dict[str, float]], key: str) -> float:
    return statistics.median(x.get(key, 0.0) for x in runs)


def _row(
    name: str, label: str, tiles: float, wall: float, cpu: dict[str, float], loop: float = 0.0
) -> dict[str, Any]:
    """One table row: ``cpu`` is CPU seconds per process group for ``tiles``,
    ``loop`` the driver's while tiles flowed (``IngestReport.driver_loop_cpu_s``)."""
    row: dict[str, Any] = {
        "run": name,
        "input": label,
        "tiles": int(tiles),
        "wall s": wall,
        "tiles/s": tiles / wall,
    }
    row.update({f"{g} CPU ms/1k": 1e6 * cpu.get(g, 0.0) / tiles for g in _GROUPS})
    row["all CPU ms/1k"] = sum(row[f"{g} CPU ms/1k"] for g in _GROUPS)
    row["driver loop CPU ms/1k"] = 1e6 * loop / tiles
    return row


def bench_plumbing(
    data: Path, work: Path, scales: tuple[int, int] = (16, 64), rounds: int = 3
) -> list[dict[str, Any]]:
    """Tiling alone vs the zero-cost ingest (and the ingest with the actor's
    thumbnail work) at two input sizes (``rounds`` interleaved rounds each,
    medians), and the marginal cost between them:
    ``(x[big] - x[small]) / (tiles[big] - tiles[small])``, i.e. the per-tile
    cost once fixed costs (actor start, model check, Lance create, commit,
    manifest) are taken out."""
    measured = _measure(data, work, scales, rounds)
    rows: list[dict[str, Any]] = []
    for scale, runs in measured.items():
        label = f"{scale}x {data.name}"
        by_kind = {
            key: _row(
                name,
                label,
                _med(runs[key], "tiles"),
                _med(runs[key], "wall"),
                {g: _med(runs[key], f"cpu {g}") for g in _GROUPS},
                _med(runs[key], "loop"),
            )
            for key, (name, _, _) in _KINDS.items()
        }
        rows += _with_ratios(by_kind, label)
    small, big = (measured[s] for s in scales)
    label = f"{scales[1]}x - {scales[0]}x"
    marginal = {
        key: _row(
            f"{name}, marginal",
            label,
            _med(big[key], "tiles") - _med(small[key], "tiles"),
            _med(big[key], "wall") - _med(small[key], "wall"),
            {g: _med(big[key], f"cpu {g}") - _med(small[key], f"cpu {g}") for g in _GROUPS},
            _med(big[key], "loop") - _med(small[key], "loop"),
        )
        for key, (name, _, _) in _KINDS.items()
    }
    return rows + _with_ratios(marginal, "marginal")


def _with_ratios(rows: dict[str, dict[str, Any]], label: str) -> list[dict[str, Any]]:
    """The rows of every kind, each ingest followed by its ratio to tiling alone."""
    out = [rows["alone"]]
    for key in ("ingest", "driver", "thumbs"):
        out += [rows[key], _ratio(rows[key], rows["alone"], label, _KINDS[key][0])]
    return out


def _ratio(ingest: dict[str, Any], alone: dict[str, Any], label: str, name: str) -> dict[str, Any]:
    """Throughput ratio (wall clock) and CPU ratio (all processes' CPU per tile,
    alone / ingest: the throughput ratio of a CPU-bound machine, steadier
    than wall clock when other jobs load it)."""
    return {
        "run": f"ratio: {name} / alone",
        "input": label,
        "tiles/s": ingest["tiles/s"] / alone["tiles/s"],
        "all CPU ms/1k": alone["all CPU ms/1k"] / ingest["all CPU ms/1k"],
    }


def bytes_per_tile(data: Path) -> dict[str, float]:
    """Object-store bytes per tile on the shared data (see :func:`_bytes_per_tile`)."""
    from ris_ray.model.weights import resolve_weights

    spec = TileSpec(256, 256, 0.5, resolve_weights("random").model_id)
    return _bytes_per_tile(_plans(data), spec)
