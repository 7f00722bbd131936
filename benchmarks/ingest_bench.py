"""Benchmark stages of ingest: tiling, cores per GPU, the embedder alone, end to end.

Run through ``benchmarks/run.py``; see its docstring."""

from __future__ import annotations

import os
import shutil
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from bench_common import Row

from ris_ray.ingest.inputs import discover
from ris_ray.model.embed import Embedder
from ris_ray.raster.reading import probe, read_tiles
from ris_ray.raster.tiling import TileSpec, plan_windows

# ------------------------------------------------------------------ 1. tiling


def window_plans(data: Path, target: int) -> list[tuple[Any, Any]]:
    plans = []
    for p in discover([str(data)]):
        info = probe(p)
        jobs = plan_windows(
            info.width, info.height, 256, 256, block_shape=info.block_shape, target_px=target
        )
        plans += [(info, j) for j in jobs]
    return plans


def _bare(plans: list[tuple[Any, Any]]) -> None:
    import rasterio

    for info, j in plans:
        with rasterio.open(info.path) as src:
            src.read(list(info.bands.indexes), window=j.window(256, 256))


def _actor_thumbs(pixels: np.ndarray) -> list[bytes]:
    """What the embedder actor adds for 64 px thumbnails on a CPU node: the
    area reduce on the CPU, then the JPEG encode (:mod:`ris_ray.model.thumbnail`)."""
    from ris_ray.model.thumbnail import encode_all, shrink

    return encode_all(shrink(pixels, 64))


def bench_tiling(data: Path, repeat: int = 5) -> tuple[list[Row], np.ndarray]:
    """Decode + tile vs bare rasterio reads of the same windows (one process = one core).

    "before" is the pre-issue-11 loop, "previous" the tiling task as it was
    until thumbnails moved to the embedder actor (both in
    benchmarks/legacy_tiling.py), "after" the shipped ``read_tiles`` (no
    thumbnails: the actor makes them). The last two rows are not tiling but
    what the embedder actor adds per tile for the thumbnails from the batch
    it holds: area reduce + JPEG on a CPU node, the JPEG alone on a GPU node
    (the reduce runs on the GPU in the embedding pass). The variants run
    interleaved, ``repeat`` rounds; each row is the median round (wall and
    this process's CPU time).
    """
    from legacy_tiling import legacy_read_tiles, tiler_read_tiles

    from ris_ray.model.thumbnail import encode_all, shrink

    rows: list[Row] = []
    pixels: list[np.ndarray] = []
    spec = TileSpec(256, 256, 0.5, "bench")
    variants: dict[str, Callable[[Any, Any], Any]] = {
        "bare rasterio read": lambda i, j: None,
        "before: loop + to_rgb8 + 96 px JPEG": lambda i, j: legacy_read_tiles(i, j, spec, 96),
        "previous: read_tiles + 64 px JPEG in the task": lambda i, j: tiler_read_tiles(i, j, spec),
        "after: read_tiles (thumbnails in the embedder)": lambda i, j: read_tiles(i, j, spec),
        # not tiling: the embedder actor's extra work for the thumbnails, from
        # the (N, 3, T, T) batch it holds (the batches are cut beforehand)
        "(embedder, CPU node: reduce + JPEG, extra)": lambda i, j: _actor_thumbs(held[id(j)]),
        "(embedder, GPU node: JPEG only, extra)": lambda i, j: encode_all(small[id(j)]),
    }
    held: dict[int, np.ndarray] = {}
    small: dict[int, np.ndarray] = {}
    for label, target in (("2048 px windows", 2048), ("one window per tile", 256)):
        plans = window_plans(data, target)
        n_tiles = sum(j.n_tiles for _, j in plans)
        held = {id(j): read_tiles(i, j, spec)[0].pixels for i, j in plans}
        small = {k: shrink(v, 64) for k, v in held.items()}
        wall: dict[str, list[float]] = {k: [] for k in variants}
        cpu: dict[str, list[float]] = {k: [] for k in variants}
        for _ in range(repeat):
            for name, fn in variants.items():
                t0, c0 = time.perf_counter(), time.process_time()
                if name.startswith("bare"):
                    _bare(plans)
                else:
                    for info, j in plans:
                        fn(info, j)
                wall[name].append(time.perf_counter() - t0)
                cpu[name].append(time.process_time() - c0)
        bare_wall = statistics.median(wall["bare rasterio read"])
        bare_cpu = statistics.median(cpu["bare rasterio read"])
        for name in variants:
            w, c = statistics.median(wall[name]), statistics.median(cpu[name])
            rows.append(
                {
                    "windows": label,
                    "variant": name,
                    "tiles": n_tiles,
                    "tiles/s": n_tiles / w,
                    "ms/tile": 1000 * w / n_tiles,
                    "x bare (wall)": w / bare_wall,
                    "x bare (cpu)": c / bare_cpu,
                }
            )
        if target == 2048:
            pixels = [read_tiles(i, j, spec)[0].pixels for i, j in plans]
    return rows, np.concatenate(pixels)


def _compression(path: str) -> str:
    import rasterio

    with rasterio.open(path) as src:
        c = src.compression
    return c.name.upper() if c is not None else "NONE"


def _writer_cpu_s(batch: Any, fingerprint: str) -> float:
    """CPU seconds of what happens to a batch outside the model: Ray's pickle
    of the tiling result, the Arrow table in ``fingerprint`` elements and the
    staging write."""
    import dataclasses
    import pickle

    import pyarrow as pa

    from ris_ray.store.schema import DatasetParams, to_table

    c0 = time.process_time()
    blob = pickle.dumps(batch, protocol=5)
    pickle.loads(blob)
    rows = dataclasses.replace(batch, pixels=None)
    rows.fingerprint = np.ones((len(rows), 512), np.float32)
    table = to_table(rows, DatasetParams(256, 256, "m"), fingerprint)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    return time.process_time() - c0


def _encode_cpu_s(pixels: np.ndarray) -> float:
    """CPU seconds of the thumbnails' JPEG encode in a GPU node's embedder actor
    (the area reduce before it runs on the GPU, so it is not counted)."""
    from ris_ray.model.thumbnail import encode_all, shrink

    small = shrink(pixels, 64)
    c0 = time.process_time()
    encode_all(small)
    return time.process_time() - c0


def bench_cores_per_gpu(data: Path, repeat: int = 3) -> list[Row]:
    """CPU-ms per kept tile outside the embedder, per source compression, and
    the cores that keep one GPU fed at 5k / 20k / 50k tiles/s
    (``cores = rate * ms / 1000``). Before/previous/after as in
    :func:`bench_tiling`; "after" counts the thumbnails' JPEG encode in the
    embedder actor (a GPU node's CPU work; the reduce runs on the GPU)."""
    from legacy_tiling import legacy_read_tiles, tiler_read_tiles

    spec = TileSpec(256, 256, 0.5, "bench")
    by_comp: dict[str, list[tuple[Any, Any]]] = {}
    for info, j in window_plans(data, 2048):
        by_comp.setdefault(_compression(info.path), []).append((info, j))
    rows: list[Row] = []
    for comp, plans in sorted(by_comp.items()):
        for name, fn in (
            ("before", lambda i, j: legacy_read_tiles(i, j, spec, 96)),
            ("previous", lambda i, j: tiler_read_tiles(i, j, spec)),
            ("after", lambda i, j: read_tiles(i, j, spec)),
        ):
            cpu_s, kept = [], 0
            for _ in range(repeat):
                total, kept = 0.0, 0
                for info, j in plans:
                    c0 = time.process_time()
                    batch, _ = fn(info, j)
                    total += time.process_time() - c0
                    total += _writer_cpu_s(batch, "float16" if name == "after" else "float32")
                    if name == "after" and len(batch.tile_id):
                        total += _encode_cpu_s(batch.pixels)
                    kept += len(batch.tile_id)
                cpu_s.append(total)
            if kept == 0:
                continue
            ms = 1000 * statistics.median(cpu_s) / kept
            rows.append(
                {
                    "compression": comp,
                    "code": name,
                    "files": len({i.path for i, _ in plans}),
                    "kept tiles": kept,
                    "CPU ms/tile": ms,
                    "cores @5k/s": 5000 * ms / 1000,
                    "cores @20k/s": 20000 * ms / 1000,
                    "cores @50k/s": 50000 * ms / 1000,
                }
            )
    return rows


# ------------------------------------------------------------------ 2. embedder


def bench_embedder(pixels: np.ndarray, batch_sizes: list[int]) -> list[Row]:
    """CPU: float32 vs the shipped precision (``auto``: bf16 where the CPU has
    native bf16), at several forward-pass sizes. GPU rows when CUDA exists."""
    import torch

    rows: list[Row] = []
    for precision in ("fp32", "auto"):
        for bs in batch_sizes:
            emb = Embedder("random", batch_size=bs, device="cpu", precision=precision)
            emb.step = bs  # measure the pass size itself, past the shipped CPU cap
            emb.embed(pixels[:bs])  # warm-up (oneDNN primitive creation)
            t0 = time.perf_counter()
            emb.embed(pixels)
            dt = time.perf_counter() - t0
            dtype = str(emb.dtype).removeprefix("torch.")
            rows.append(
                {
                    "device": f"cpu {dtype} channels_last ({precision})",
                    "batch": bs,
                    "tiles": len(pixels),
                    "tiles/s": len(pixels) / dt,
                    "threads": torch.get_num_threads(),
                }
            )
    if torch.cuda.is_available():
        rows += _bench_gpu(pixels)
    else:
        rows.append(
            {
                "device": "cuda",
                "batch": None,
                "tiles": None,
                "tiles/s": None,
                "threads": "skipped: no CUDA device",
            }
        )
    return rows


def _bench_gpu(pixels: np.ndarray) -> list[Row]:
    """fp32 eager NCHW baseline (normalise on CPU, float32 copy) vs the shipped path."""
    import torch

    from ris_ray.model.embed import build_model
    from ris_ray.model.weights import resolve_weights

    x = np.concatenate([pixels] * max(1, 2048 // len(pixels)))[:2048]
    rows: list[Row] = []
    model = build_model(resolve_weights("random")).cuda()
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1) * 255
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1) * 255

    def baseline() -> None:
        with torch.inference_mode():
            for s in range(0, len(x), 256):
                t = torch.from_numpy(x[s : s + 256]).float()  # tiles are band-first (N, 3, H, W)
                model(((t - mean) / std).cuda()).cpu()
        torch.cuda.synchronize()

    baseline()
    t0 = time.perf_counter()
    baseline()
    rows.append(
        {
            "device": "cuda fp32 eager (baseline)",
            "batch": 256,
            "tiles": len(x),
            "tiles/s": len(x) / (time.perf_counter() - t0),
            "threads": None,
        }
    )
    for precision in ("fp16", "bf16"):
        emb = Embedder("random", device="cuda", precision=precision, batch_size=256)
        emb.embed(x[:256])
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        emb.embed(x)
        torch.cuda.synchronize()
        rows.append(
            {
                "device": f"cuda {precision} channels_last uint8-in (shipped)",
                "batch": 256,
                "tiles": len(x),
                "tiles/s": len(x) / (time.perf_counter() - t0),
                "threads": None,
            }
        )
    return rows


# ------------------------------------------------------------------ 3. end to end


def _peak_rss_during(fn: Callable[[], Any]) -> tuple[Any, dict[str, float]]:
    """Run ``fn`` in a thread while sampling RSS of this process and its children.

    Peaks are kept per process and labelled by the titles the process had
    (a Ray worker is ``ray::IDLE`` before it becomes an actor or runs a task).
    """
    import psutil

    out: dict[str, Any] = {}
    t = threading.Thread(target=lambda: out.setdefault("r", fn()))
    rss: dict[int, float] = {}
    titles: dict[int, set[str]] = {}
    me = psutil.Process()
    t.start()
    while t.is_alive():
        for p in [me, *me.children(recursive=True)]:
            try:
                title = "driver" if p.pid == me.pid else p.cmdline()[0]
                value = p.memory_info().rss / 2**20
            except (psutil.Error, IndexError):
                continue
            rss[p.pid] = max(rss.get(p.pid, 0.0), value)
            titles.setdefault(p.pid, set()).add(title)
        time.sleep(0.05)
    t.join()
    peak = {"driver": 0.0, "tiling worker": 0.0, "embedder": 0.0}
    for pid, seen in titles.items():
        text = " ".join(seen)
        key = (
            "driver"
            if "driver" in seen
            else "embedder"
            if "EmbedActor" in text
            else "tiling worker"
            if "_task" in text
            else None
        )
        if key:
            peak[key] = max(peak[key], rss[pid])
    return out["r"], peak


def bench_end_to_end(
    data: Path, scales: list[int], embed_rate: float, work: Path
) -> tuple[list[Row], Path]:
    from ris_ray.core.config import IngestConfig
    from ris_ray.ingest import raylocal
    from ris_ray.ingest.pipeline import ingest

    raylocal.start(num_cpus=os.cpu_count())  # embedded, loopback only, like `ris ingest`
    rows: list[Row] = []
    first_db = work / "e2e-1x.lance"
    try:
        for scale in scales:
            src = work / f"input-{scale}x"
            src.mkdir()
            for i in range(scale):  # copies under other names: distinct sources, same pixels
                for f in discover([str(data)]):  # (real copies: links would be read once)
                    shutil.copyfile(f, src / f"copy{i}_{Path(f).name}")
            db = work / f"e2e-{scale}x.lance"
            cfg = IngestConfig(inputs=(str(src),), db=str(db), weights="random", progress=False)
            report, peak = _peak_rss_during(lambda cfg=cfg: ingest(cfg))
            rows.append(
                {
                    "input": f"{scale}x shared data",
                    "tiles": report.tiles_written,
                    "wall s": report.wall_s,
                    "tiles/s": report.tiles_per_s,
                    "steady tiles/s": report.steady_tiles_per_s,
                    "steady efficiency": report.steady_tiles_per_s / embed_rate,
                    "driver MiB": peak["driver"],
                    "tiling MiB": peak["tiling worker"],
                    "embedder MiB": peak["embedder"],
                }
            )
    finally:
        raylocal.stop()
    return rows, first_db


# ------------------------------------------------------------------ 4-5. query
