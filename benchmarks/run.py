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
import json
import os
import platform
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench_common import MARKDOWN, REPO, table
from ingest_bench import (
    bench_cores_per_gpu,
    bench_embedder,
    bench_end_to_end,
    bench_tiling,
)
from search_bench import bench_cold_scan, bench_quality, bench_query, bench_storage

__all__ = ["bench_embedder", "bench_end_to_end", "bench_tiling", "main"]


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
    from bench_common import synthetic_ortho
    from plumbing import bench_plumbing, bytes_per_tile

    rows = bench_plumbing(data, work)
    table("1c. plumbing ceiling: zero-cost embedder ingest vs tiling alone (Ray)", rows)
    results["plumbing"] = rows
    ortho = synthetic_ortho(work / "ortho" / "ortho.tif")
    rows = bench_plumbing(ortho.parent, work, scales=(1, 4))
    table("1c'. the same on one synthetic 8192 px JPEG ortho (64-tile windows)", rows)
    results["plumbing_ortho"] = rows
    sizes = bytes_per_tile(data)
    labels = {
        "batch": "batch (tiling -> embedder)",
        "pixels": "of which pixels",
        "rows": "rows (embedder -> driver)",
    }
    rows = [{"object": labels[k], "bytes/tile": v} for k, v in sizes.items()]
    table("1d. object-store bytes per tile (shared data)", rows)
    results["object_store_bytes"] = rows


def _only(stages: list[str], data: Path, work: Path, results: dict[str, Any]) -> None:
    for stage in stages:
        if stage == "tiling":
            rows, _ = bench_tiling(data)
            table("1. tiling (one process, before/after side by side)", rows)
            results["tiling"] = rows
        elif stage == "cores":
            rows = bench_cores_per_gpu(data)
            table("1b. CPU cores per GPU (tiling + transfer + writer, per compression)", rows)
            results["cores_per_gpu"] = rows
        elif stage == "plumbing":
            _plumbing_stage(data, work, results)
        else:
            sys.exit(f"--only {stage}: use tiling, cores or plumbing")


def _all(args: Any, work: Path, results: dict[str, Any]) -> None:
    rows, pixels = bench_tiling(args.data)
    table("1. tiling (one process, before/after side by side)", rows)
    results["tiling"] = rows

    rows = bench_cores_per_gpu(args.data)
    table("1b. CPU cores per GPU (tiling + transfer + writer, per compression)", rows)
    results["cores_per_gpu"] = rows
    _plumbing_stage(args.data, work, results)

    rows = bench_embedder(pixels, [8, 32])
    table("2. embedder alone", rows)
    results["embedder"] = rows
    # The slowest stage alone, as shipped: auto precision at the CPU pass size.
    from ris_ray.model.embed import CPU_MAX_BATCH

    embed_rate = next(
        r["tiles/s"] for r in rows if "(auto)" in r["device"] and r["batch"] == CPU_MAX_BATCH
    )

    scales = [1, 2] if args.quick else [1, 2, 4]
    rows, db = bench_end_to_end(args.data, scales, embed_rate, work)
    table(f"3. end to end vs embedder alone ({embed_rate:.1f} tiles/s)", rows)
    results["end_to_end"] = rows

    sizes = [10_000, 100_000] if args.quick else [10_000, 100_000, 1_000_000]
    rows = bench_query(sizes, work, ann_at=sizes[-1])
    table("4-5. query: exact scans side by side, float16, IVF_PQ", rows)
    results["query"] = rows

    rows = bench_cold_scan(sizes[-1], work)
    table("4b. exact scan with a cold page cache: float32 vs float16 vs raw read", rows)
    results["cold_scan"] = rows

    rows = bench_storage(db, args.data, work)
    table("6. storage", rows)
    results["storage"] = rows

    from ris_ray.model.embed import imagenet_cached

    weights = ["random", *(["imagenet"] if imagenet_cached() else [])]
    rows = bench_quality(db, weights)
    table("retrieval quality (dataset built with random weights)", rows)
    results["quality"] = rows


if __name__ == "__main__":
    main()
