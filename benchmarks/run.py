"""ris_ray benchmark suite: every stage side by side, in one run.

    .venv/bin/pip install -c constraints.txt -e ".[bench]"
    .venv/bin/python benchmarks/run.py              # full (about 10 min on 2 cores)
    .venv/bin/python benchmarks/run.py --quick      # smaller sizes (about 3 min)
    .venv/bin/python benchmarks/run.py --only tiling,cores,plumbing   # stages alone

Prints one table per stage and writes ``bench-out/results.json``. Ratios are
measured within one run, on the same data, so they hold on a loaded machine;
absolute numbers are this machine's. Not part of the test suite.

Stages: tiling (before/after issue 11 vs a bare rasterio read of the same
windows), CPU cores per GPU per source compression, the plumbing ceiling
(the Ray ingest with a zero-cost embedder vs the tiling tasks alone, CPU per
process and object-store bytes per tile; benchmarks/plumbing.py), embedder
alone (batch sizes; GPU fp32 baseline vs the shipped path when CUDA exists),
end to end (``ingest`` vs the slowest stage; 1x/2x/4x input scaling with peak
RSS), query (Lance exact scan cold/warm vs numpy and FAISS flat, float16,
IVF_PQ), exact scan with a dropped page cache (float32 vs float16 vs a raw
read; root only), storage (bytes per tile, before/after) and retrieval quality (recall under
shifts and photometric change).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import re
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from ris_ray.ingest.inputs import discover  # noqa: E402
from ris_ray.model.embed import Embedder  # noqa: E402
from ris_ray.raster.tiling import TileSpec, plan_windows, probe, read_patch, read_tiles  # noqa: E402

Row = dict[str, Any]


def _median_ms(fn: Callable[[], Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000.0)
    return statistics.median(times)


MARKDOWN: list[str] = []


def _table(title: str, rows: list[Row]) -> None:
    """Print a plain-text table and keep a Markdown copy for ``results.md``."""
    print(f"\n## {title}")
    if not rows:
        return
    cols = list(dict.fromkeys(c for r in rows for c in r))
    MARKDOWN.extend([f"\n**{title}**\n", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)])
    MARKDOWN.extend("| " + " | ".join(_fmt(r.get(c)) for c in cols) + " |" for r in rows)
    width = {c: max(len(c), *(len(_fmt(r.get(c))) for r in rows)) for c in cols}
    print("  ".join(c.ljust(width[c]) for c in cols))
    for r in rows:
        print("  ".join(_fmt(r.get(c)).ljust(width[c]) for c in cols))


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"
    return "" if v is None else str(v)


# ------------------------------------------------------------------ 1. tiling


def _plans(data: Path, target: int) -> list[tuple[Any, Any]]:
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
        plans = _plans(data, target)
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
    for info, j in _plans(data, 2048):
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


def bench_query(sizes: list[int], work: Path, ann_at: int | None) -> list[Row]:
    import faiss
    import lance

    from ris_ray.sample import synthetic_fingerprints, write_fingerprint_dataset
    from ris_ray.search.index import build_index
    from ris_ray.search.query import search
    from ris_ray.search.scan import FlatScan

    rows: list[Row] = []
    k, n_queries = 10, 5
    for n in sizes:
        x = synthetic_fingerprints(n, seed=n)
        qs = x[np.linspace(0, n - 1, n_queries).astype(int)] + 0.05
        db = work / f"q{n}.lance"
        # float32, so the Lance rows compare with FAISS on the same values
        # (stage 4b compares the float16 default against it)
        write_fingerprint_dataset(str(db), x, fingerprint="float32")

        def lance_scan(q: np.ndarray, ds: Any = None) -> list[int]:
            ds = ds or lance.dataset(str(db))
            nb, _ = search(ds, q, k, exact=True)
            return [int(t.tile_id, 16) for t in nb]

        cold = statistics.median(_median_ms(lambda q=q: lance_scan(q), 1) for q in qs)
        ds = lance.dataset(str(db))
        warm_lance = statistics.median(_median_ms(lambda q=q: lance_scan(q, ds), 1) for q in qs)
        scan = FlatScan(x)
        warm = statistics.median(_median_ms(lambda q=q: scan.search(q, k), 3) for q in qs)
        brute = statistics.median(
            _median_ms(lambda q=q: np.argpartition(((x - q) ** 2).sum(axis=1), k)[:k], 1)
            for q in qs
        )
        flat = faiss.IndexFlatL2(x.shape[1])
        flat.add(x)
        fa = statistics.median(_median_ms(lambda q=q: flat.search(q[None], k), 3) for q in qs)
        threads = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)  # one query: FAISS is often fastest single-threaded
        fa1 = statistics.median(_median_ms(lambda q=q: flat.search(q[None], k), 3) for q in qs)
        faiss.omp_set_num_threads(threads)
        same = all(
            lance_scan(q, ds)
            == scan.search(q, k)[0].tolist()
            == flat.search(q[None], k)[1][0].tolist()
            for q in qs
        )
        half = FlatScan(x.astype(np.float16).astype(np.float32))
        recall16 = np.mean(
            [len(set(half.search(q, k)[0]) & set(scan.search(q, k)[0])) / k for q in qs]
        )
        rows.append(
            {
                "N": n,
                "lance cold ms": cold,
                "lance warm ms": warm_lance,
                "in-memory scan ms": warm,
                "numpy brute ms": brute,
                "faiss flat ms": fa,
                "faiss flat 1 thread ms": fa1,
                "scan/best faiss": warm / min(fa, fa1),
                "same top-k": same,
                "fp16 recall@10": float(recall16),
            }
        )
        if ann_at == n:
            info = build_index(str(db))
            ds = lance.dataset(str(db))
            hits, t_ann, t_exact = 0, [], []
            for q in qs:
                t0 = time.perf_counter()
                approx, _ = search(ds, q, k)
                t_ann.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                exact, _ = search(ds, q, k, exact=True)
                t_exact.append(time.perf_counter() - t0)
                hits += len({a.tile_id for a in approx} & {e.tile_id for e in exact})
            rows.append(
                {
                    "N": f"{n} IVF_PQ ({info['partitions']}p, built {info['seconds']} s)",
                    "lance warm ms": statistics.median(t_ann) * 1000,
                    "scan/best faiss": None,
                    "same top-k": None,
                    "fp16 recall@10": None,
                    "ann recall@10": hits / (k * len(qs)),
                    "speed-up vs exact": statistics.median(t_exact) / statistics.median(t_ann),
                }
            )
        shutil.rmtree(db, ignore_errors=True)
    return rows


def _drop_caches() -> bool:
    """Empty the page cache (root only): ``sync; echo 3 > /proc/sys/vm/drop_caches``."""
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError:
        return False
    return True


def bench_cold_scan(n: int, work: Path, queries: int = 3) -> list[Row]:
    """Exact Lance scan of ``n`` rows with a truly cold page cache, float32 vs
    float16 fingerprints, beside a raw read of the same data files
    (``cat files > /dev/null`` after another drop). Needs root."""
    import subprocess

    import lance

    from ris_ray.sample import synthetic_fingerprints, write_fingerprint_dataset
    from ris_ray.search.query import search

    if not _drop_caches():
        return [{"fingerprint": "skipped: cannot drop the page cache (not root)"}]
    x = synthetic_fingerprints(n, seed=n)
    qs = x[np.linspace(0, n - 1, queries).astype(int)] + 0.05
    rows: list[Row] = []
    for fp in ("float32", "float16"):
        db = work / f"cold-{fp}.lance"
        write_fingerprint_dataset(str(db), x, fingerprint=fp)
        files = sorted(str(p) for p in (db / "data").glob("*.lance"))
        scan_ms, raw_ms = [], []
        for q in qs:
            _drop_caches()
            t0 = time.perf_counter()
            search(lance.dataset(str(db)), q, 10, exact=True)
            scan_ms.append((time.perf_counter() - t0) * 1000)
            _drop_caches()
            t0 = time.perf_counter()
            subprocess.run(["cat", *files], stdout=subprocess.DEVNULL, check=True)
            raw_ms.append((time.perf_counter() - t0) * 1000)
        ds = lance.dataset(str(db))
        search(ds, qs[0], 10, exact=True)
        warm = statistics.median(
            _median_ms(lambda q=q: search(ds, q, 10, exact=True), 1) for q in qs
        )
        rows.append(
            {
                "N": n,
                "fingerprint": fp,
                "data MB": _data_bytes(db) / 1e6,
                "cold exact scan ms": statistics.median(scan_ms),
                "cold raw read ms": statistics.median(raw_ms),
                "scan / raw read": statistics.median(scan_ms) / statistics.median(raw_ms),
                "warm exact scan ms": warm,
            }
        )
        shutil.rmtree(db, ignore_errors=True)
    return rows


# ------------------------------------------------------------------ 6. storage


def _data_bytes(uri: Path) -> int:
    """Bytes of a Lance dataset's data files (``data/*.lance``), without the
    manifests, transactions and the ingest manifest beside them."""
    return sum(p.stat().st_size for p in (uri / "data").glob("*.lance"))


def bench_storage(db: Path, data: Path, work: Path) -> list[Row]:
    """Bytes per tile in the data files of a real ingest (``db``: shared data,
    shipped defaults) beside the same rows as earlier code stored them,
    written the same way: "before" issue 11 (96 px JPEG q85 thumbnails from
    ``legacy_read_tiles``, float32 fingerprints) and "previous" (64 px
    thumbnails made in the tiling task, ``tiler_read_tiles``; float16)."""
    import lance
    from legacy_tiling import legacy_read_tiles, tiler_read_tiles

    from ris_ray.store.schema import cast_fingerprints

    ds = lance.dataset(str(db))
    table = ds.to_table()
    spec = TileSpec(256, 256, 0.5, ds.schema.metadata[b"ris_ray.model"].decode())
    versions: list[tuple[str, Path, Any]] = []
    for name, read, fingerprint in (
        ("before", lambda i, j: legacy_read_tiles(i, j, spec, 96), "float32"),
        ("previous", lambda i, j: tiler_read_tiles(i, j, spec), "float16"),
    ):
        thumbs: dict[tuple[str, int, int], bytes] = {}
        for info, j in _plans(data, 2048):
            batch, _ = read(info, j)
            keys = zip(batch.source, batch.row.tolist(), batch.col.tolist(), strict=True)
            thumbs.update(zip((_tile_key(*k) for k in keys), batch.thumbnail, strict=True))
        old = cast_fingerprints(table, fingerprint)
        i = old.schema.get_field_index("thumbnail")
        where = zip(*(old[c].to_pylist() for c in ("source", "row", "col")), strict=True)
        column = pa_binary([thumbs.get(_tile_key(*k)) for k in where])
        old = old.set_column(i, old.schema.field(i), column)
        uri = work / f"storage-{name}.lance"
        lance.write_dataset(old, str(uri), data_storage_version=ds.data_storage_version)
        versions.append((name, uri, old))
    rows: list[Row] = []
    for name, uri, t in (*versions, ("after", db, table)):
        n = t.num_rows
        fp = t.schema.field("fingerprint").type.value_type
        rows.append(
            {
                "code": name,
                "rows": n,
                "data bytes/tile": _data_bytes(uri) / n,
                "thumbnail bytes/tile": sum(len(b or b"") for b in t["thumbnail"].to_pylist()) / n,
                "fingerprint": f"{fp}[512]",
                "float32 tile (786432 B) / ours": 786432 / (_data_bytes(uri) / n),
            }
        )
    return rows


def _tile_key(source: str, row: int, col: int) -> tuple[str, int, int]:
    """A tile by file name (without the end-to-end stage's ``copyN_`` prefix) and origin."""
    return re.sub(r"^copy\d+_", "", Path(source).name), row, col


def pa_binary(values: list[bytes | None]) -> Any:
    import pyarrow as pa

    return pa.array(values, pa.binary())


# ------------------------------------------------------------------ quality


def bench_quality(db: Path, weights: list[str]) -> list[Row]:
    """Recall@1/@10 of perturbed queries; relevant = the stored tile overlapping most."""
    import lance
    from PIL import Image, ImageEnhance

    from ris_ray.search.scan import FlatScan

    rows: list[Row] = []
    ds = lance.dataset(str(db))
    meta = ds.to_table(columns=["source", "row", "col"]).to_pylist()
    scan = FlatScan.from_dataset(ds)

    def jpeg(px: np.ndarray) -> np.ndarray:
        buf = io.BytesIO()
        Image.fromarray(px).save(buf, format="JPEG", quality=75)
        return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))

    def bright(f: float) -> Callable[[np.ndarray], np.ndarray]:
        return lambda px: np.asarray(ImageEnhance.Brightness(Image.fromarray(px)).enhance(f))

    infos: dict[str, Any] = {}
    for w in weights:
        emb = Embedder(w, device="cpu")
        if emb.model_id != ds.schema.metadata[b"ris_ray.model"].decode():
            continue  # the dataset's vectors come from another model
        perturb: dict[str, tuple[int, Callable[[np.ndarray], np.ndarray] | None]] = {
            "shift 16 px": (16, None),
            "shift 32 px": (32, None),
            "shift 64 px": (64, None),
            "brightness +10%": (0, bright(1.1)),
            "brightness -10%": (0, bright(0.9)),
            "JPEG q75": (0, jpeg),
        }
        for name, (shift, fn) in perturb.items():
            queries, relevant = [], []
            for i, m in enumerate(meta):
                if m["source"] not in infos:
                    infos[m["source"]] = probe(m["source"])
                info = infos[m["source"]]
                c = m["col"] + shift if m["col"] + shift + 256 <= info.width else m["col"] - shift
                r = m["row"] + shift if m["row"] + shift + 256 <= info.height else m["row"] - shift
                if c < 0 or r < 0:
                    continue
                px = read_patch(m["source"], (c, r, 256, 256), 256)
                queries.append(fn(px) if fn else px)
                relevant.append(_most_overlap(meta, m["source"], r, c, i))
            vecs = emb.embed(np.stack(queries))
            top = [scan.search(v, 10)[0] for v in vecs]
            rows.append(
                {
                    "weights": emb.model_id,
                    "perturbation": name,
                    "queries": len(queries),
                    "recall@1": np.mean([t[0] == rel for t, rel in zip(top, relevant)]),
                    "recall@10": np.mean([rel in t for t, rel in zip(top, relevant)]),
                }
            )
    return rows


def _most_overlap(meta: list[Row], source: str, r: int, c: int, default: int) -> int:
    best, best_area = default, -1
    for j, m in enumerate(meta):
        if m["source"] != source:
            continue
        area = max(0, 256 - abs(m["row"] - r)) * max(0, 256 - abs(m["col"] - c))
        if area > best_area:
            best, best_area = j, area
    return best


# ------------------------------------------------------------------ main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--out", type=Path, default=REPO / "bench-out")
    ap.add_argument("--quick", action="store_true", help="smaller sizes, no 1M query stage")
    ap.add_argument(
        "--only",
        default="",
        help="comma list of stages that need no other stage: tiling, cores, plumbing",
    )
    args = ap.parse_args()
    if not args.data.is_dir():
        sys.exit(f"benchmark data not found at {args.data} (use --data DIR)")
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="ris-bench-"))
    results: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "args": {"quick": args.quick, "data": str(args.data)},
    }
    try:
        if args.only:
            _only(args.only.split(","), args.data, work, results)
        else:
            _all(args, work, results)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    out = args.out / "results.json"
    out.write_text(
        json.dumps(results, indent=2, default=lambda o: o.item() if hasattr(o, "item") else str(o))
    )
    (args.out / "results.md").write_text("\n".join(MARKDOWN) + "\n")
    print(f"\nresults: {out} (tables: {args.out / 'results.md'})")


def _plumbing_stage(data: Path, work: Path, results: dict[str, Any]) -> None:
    from plumbing import bench_plumbing, bytes_per_tile, synthetic_ortho

    rows = bench_plumbing(data, work)
    _table("1c. plumbing ceiling: zero-cost embedder ingest vs tiling alone (Ray)", rows)
    results["plumbing"] = rows
    ortho = synthetic_ortho(work / "ortho" / "ortho.tif")
    rows = bench_plumbing(ortho.parent, work, scales=(1, 4))
    _table("1c'. the same on one synthetic 8192 px JPEG ortho (64-tile windows)", rows)
    results["plumbing_ortho"] = rows
    sizes = bytes_per_tile(data)
    labels = {
        "batch": "batch (tiling -> embedder)",
        "pixels": "of which pixels",
        "rows": "rows (embedder -> driver)",
    }
    rows = [{"object": labels[k], "bytes/tile": v} for k, v in sizes.items()]
    _table("1d. object-store bytes per tile (shared data)", rows)
    results["object_store_bytes"] = rows


def _only(stages: list[str], data: Path, work: Path, results: dict[str, Any]) -> None:
    for stage in stages:
        if stage == "tiling":
            rows, _ = bench_tiling(data)
            _table("1. tiling (one process, before/after side by side)", rows)
            results["tiling"] = rows
        elif stage == "cores":
            rows = bench_cores_per_gpu(data)
            _table("1b. CPU cores per GPU (tiling + transfer + writer, per compression)", rows)
            results["cores_per_gpu"] = rows
        elif stage == "plumbing":
            _plumbing_stage(data, work, results)
        else:
            sys.exit(f"--only {stage}: use tiling, cores or plumbing")


def _all(args: Any, work: Path, results: dict[str, Any]) -> None:
    rows, pixels = bench_tiling(args.data)
    _table("1. tiling (one process, before/after side by side)", rows)
    results["tiling"] = rows

    rows = bench_cores_per_gpu(args.data)
    _table("1b. CPU cores per GPU (tiling + transfer + writer, per compression)", rows)
    results["cores_per_gpu"] = rows
    _plumbing_stage(args.data, work, results)

    rows = bench_embedder(pixels, [8, 32])
    _table("2. embedder alone", rows)
    results["embedder"] = rows
    # The slowest stage alone, as shipped: auto precision at the CPU pass size.
    from ris_ray.model.embed import CPU_MAX_BATCH

    embed_rate = next(
        r["tiles/s"] for r in rows if "(auto)" in r["device"] and r["batch"] == CPU_MAX_BATCH
    )

    scales = [1, 2] if args.quick else [1, 2, 4]
    rows, db = bench_end_to_end(args.data, scales, embed_rate, work)
    _table(f"3. end to end vs embedder alone ({embed_rate:.1f} tiles/s)", rows)
    results["end_to_end"] = rows

    sizes = [10_000, 100_000] if args.quick else [10_000, 100_000, 1_000_000]
    rows = bench_query(sizes, work, ann_at=sizes[-1])
    _table("4-5. query: exact scans side by side, float16, IVF_PQ", rows)
    results["query"] = rows

    rows = bench_cold_scan(sizes[-1], work)
    _table("4b. exact scan with a cold page cache: float32 vs float16 vs raw read", rows)
    results["cold_scan"] = rows

    rows = bench_storage(db, args.data, work)
    _table("6. storage", rows)
    results["storage"] = rows

    from ris_ray.model.embed import imagenet_cached

    weights = ["random", *(["imagenet"] if imagenet_cached() else [])]
    rows = bench_quality(db, weights)
    _table("retrieval quality (dataset built with random weights)", rows)
    results["quality"] = rows


if __name__ == "__main__":
    main()
