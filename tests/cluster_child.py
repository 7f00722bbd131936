"""The simulated-cluster runs of ``tests/test_placement.py``, in a child process.

One ``ray.cluster_utils.Cluster`` (a head of 1 CPU, no GPU, and 2 worker
nodes of 3 CPUs and 1 logical GPU each) serves four zero-cost ingests in
turn, so the suite starts a cluster once:

1. ``gpu``: ``GEN`` x4 on the GPU nodes;
2. ``cpu``: the same with ``--device cpu``;
3. ``remove1``: ``CAPTURES`` with a slow embedder, one node removed just
   after the first commit;
4. ``remove_last``: the same with the last node removed: nothing is left.

Usage: ``python tests/cluster_child.py WORK GEN CAPTURES``; writes
``WORK/rows.json`` (scenario -> row) and prints the ingests' events.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from plumbing import _inputs
from scale import Faults, ingest_on, simulated_cluster

SLOW = {"after_s": 0.2, "embed_ms": 250, "commit_every_s": 0.3, "call_tiles": 8}


def main(work: Path, gen: Path, captures: Path) -> None:
    src = _inputs(gen, 4, work)
    rows = {}
    with simulated_cluster(nodes=2, cpus=3, head_cpus=1, gpus=1, fast_health_checks=True) as sim:
        rows["gpu"] = ingest_on(sim, src, work / "gpu.lance", "auto")
        rows["cpu"] = ingest_on(sim, src, work / "cpu.lance", "cpu")
        rows["remove1"] = ingest_on(
            sim, captures, work / "remove1.lance", "auto", Faults(remove=1, **SLOW)
        )
        rows["remove_last"] = ingest_on(
            sim, captures, work / "remove_last.lance", "auto", Faults(remove=1, **SLOW)
        )
    (work / "rows.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main(*(Path(a) for a in sys.argv[1:4]))
