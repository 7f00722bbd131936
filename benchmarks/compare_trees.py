"""Run the plumbing and end-to-end stages of one source tree, for before/after
comparisons of two commits on the same machine, back to back.

    git worktree add /tmp/before <commit>
    PYTHONPATH=/tmp/before .venv/bin/python benchmarks/compare_trees.py /tmp/before before.json
    PYTHONPATH=$PWD .venv/bin/python benchmarks/compare_trees.py . after.json

``PYTHONPATH`` must name the same tree, and the script changes into it
before Ray starts: Ray puts the driver's working directory first on its
workers' ``sys.path``, so from another checkout the workers would run that
checkout's ``ris_ray`` (tasks, actors) under this tree's driver. Each tree
runs its own ``benchmarks/`` code (``bench_plumbing``, ``bench_tiling``,
``bench_embedder``, ``bench_end_to_end``) on ``../shared/data`` beside it.
Writes the rows as JSON and prints them.
Not used by ris_ray itself.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any


def main() -> None:
    tree, out_path = Path(sys.argv[1]).resolve(), Path(sys.argv[2]).resolve()
    os.chdir(tree)  # Ray workers import from the driver's working directory first
    sys.path[:0] = [str(tree), str(tree / "benchmarks")]
    import run  # the tree's own benchmarks/run.py
    from plumbing import bench_plumbing

    try:
        from bench_common import synthetic_ortho
    except ImportError:  # a tree from before the benchmarks' split
        from plumbing import synthetic_ortho  # type: ignore[attr-defined,no-redef]

    import ris_ray

    print("ris_ray from", ris_ray.__file__, flush=True)
    data = tree.parent / "shared" / "data"
    work = Path(tempfile.mkdtemp(prefix="compare-trees-"))
    out: dict[str, Any] = {"plumbing_data": bench_plumbing(data, work)}
    ortho = synthetic_ortho(work / "ortho" / "ortho.tif")
    out["plumbing_ortho"] = bench_plumbing(ortho.parent, work, scales=(1, 4))
    _, pixels = run.bench_tiling(data, repeat=1)
    out["embedder"] = run.bench_embedder(pixels, [8])
    rate = next(r["tiles/s"] for r in out["embedder"] if "(auto)" in str(r["device"]))
    out["e2e"], _ = run.bench_end_to_end(data, [1, 2, 4], rate, work)
    out_path.write_text(json.dumps(out, indent=1, default=str))
    for stage, rows in out.items():
        print("##", stage)
        for row in rows:
            print({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()})


if __name__ == "__main__":
    main()
