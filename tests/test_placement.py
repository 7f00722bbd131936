"""Placement: embedders spread over a cluster's nodes, tiles cut where they are embedded.

The pure rules (:func:`place_embedders`) on made-up nodes; then whole ingests
on a simulated cluster (``ray.cluster_utils.Cluster``: a head and worker
nodes on this host; the four runs share one cluster in a child process,
``tests/cluster_child.py``), checked against the run's own locality counters
and a single-node run of the same files; nodes removed mid-run
(``cluster.remove_node``) end with every tile once, or one line and the
committed files kept.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import lance
import pytest

from ris_ray.ingest.placement import NodeInfo, place_embedders
from ris_ray.model.embed import fixed_num_threads
from ris_ray.sample import landscape, write_geotiff

REPO = Path(__file__).resolve().parents[1]
HEAD = NodeInfo("head", 1, 0)
GPU_NODES = [NodeInfo("g1", 3, 1), NodeInfo("g2", 3, 2)]


def test_gpu_embedders_go_to_gpu_nodes_spread_and_grouped_by_node() -> None:
    plan = place_embedders([HEAD, *GPU_NODES], 3, use_gpu=True, threads=8)
    assert sorted(plan.nodes) == ["g1", "g2", "g2"]  # one per GPU, none on the head
    assert plan.nodes[:2] == ("g1", "g2")  # spread before doubling up
    assert plan.threads == (1, 1, 1) and plan.cluster and plan.n_nodes == 2
    for node, group in zip(plan.nodes, plan.groups, strict=True):
        assert plan.tiling_node(group) == node  # each group's tiles are cut on its node
    assert plan.warnings == ()
    two = place_embedders([HEAD, *GPU_NODES], 2, use_gpu=True, threads=8)
    assert two.nodes == ("g1", "g2")


def test_cpu_embedders_one_per_node_with_threads_sized_to_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("RIS_TORCH_THREADS", raising=False)
    nodes = [NodeInfo("head", 0, 0), NodeInfo("a", 8, 0), NodeInfo("b", 4, 0), NodeInfo("c", 1, 0)]
    plan = place_embedders(nodes, None, use_gpu=False, threads=99)
    assert plan.nodes == ("a", "b")  # a node needs a CPU to embed and one to cut
    assert plan.threads == (8, 4)
    assert plan.groups == (0, 1) and plan.pinned == ("a", "b")
    monkeypatch.setenv("RIS_TORCH_THREADS", "2")
    fixed = fixed_num_threads()
    plan = place_embedders(nodes, None, use_gpu=False, threads=99, fixed_threads=fixed)
    assert plan.threads == (2, 2)


def test_one_node_pins_nothing_and_keeps_the_threads() -> None:
    plan = place_embedders([NodeInfo("n", 16, 0)], None, use_gpu=False, threads=6)
    assert plan.nodes == (None,) and plan.threads == (6,) and not plan.cluster
    assert plan.tiling_node(0) is None and plan.n_nodes == 1
    gpu = place_embedders([NodeInfo("n", 16, 4)], 4, use_gpu=True, threads=1)
    assert gpu.nodes == (None,) * 4 and gpu.groups == (0,) * 4


def test_a_gpu_node_without_a_cpu_to_cut_with_is_said_once() -> None:
    nodes = [HEAD, NodeInfo("thin", 1, 1), NodeInfo("g1", 3, 1)]
    plan = place_embedders(nodes, 2, use_gpu=True, threads=1)
    assert plan.nodes == ("thin", "g1")
    assert plan.pinned == (None, "g1")  # its tiles are cut elsewhere...
    (warning,) = plan.warnings  # ...and the run says so
    assert "node thin has 1 CPUs for 1 embedder(s)" in warning
    assert "give it at least 2 CPUs" in warning


def test_more_embedders_than_the_nodes_hold_are_left_to_ray() -> None:
    plan = place_embedders([NodeInfo("a", 2, 0), NodeInfo("b", 2, 0)], 3, False, 4)
    assert plan.nodes == ("a", "b", None) and plan.groups == (0, 1, 2)
    assert plan.tiling_node(2) is None


def _tiles(db: Path) -> Counter[tuple[str, int, int]]:
    """(file name without the benchmark's ``copyN_`` prefix, row, col) of every row."""
    t = lance.dataset(str(db)).to_table(columns=["tile_id", "source", "row", "col"])
    assert len(set(t["tile_id"].to_pylist())) == t.num_rows  # no duplicates
    names = [re.sub(r"^copy\d+_", "", Path(s).name) for s in t["source"].to_pylist()]
    return Counter(zip(names, t["row"].to_pylist(), t["col"].to_pylist(), strict=True))


@pytest.fixture(scope="module")
def cluster_runs(
    gen_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict[str, dict[str, object]], str, Counter[tuple[str, int, int]]]:
    """The four runs of ``tests/cluster_child.py``: their folder, rows, output and
    the tiles of the captures they ingest."""
    work = tmp_path_factory.mktemp("cluster")
    want = _captures(work / "captures", 12)
    cmd = [sys.executable, str(REPO / "tests" / "cluster_child.py"), str(work), str(gen_dir)]
    run = subprocess.run(
        [*cmd, str(work / "captures")], timeout=900, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return work, json.loads((work / "rows.json").read_text()), run.stdout, want


Runs = tuple[Path, dict[str, dict[str, object]], str, Counter[tuple[str, int, int]]]


@pytest.mark.parametrize("scenario", ["gpu", "cpu"])
def test_tiles_are_embedded_on_the_node_that_cut_them(
    scenario: str, cluster_runs: Runs, gen_db: Path
) -> None:
    """GPU nodes: the head (1 CPU, no GPU) embeds and cuts nothing; ``--device
    cpu``: one embedder per node with 2 CPUs or more, not one for the cluster."""
    work, rows, _, _ = cluster_runs
    row = rows[scenario]
    assert row["embedder nodes"] == 2 and row["files failed"] == 0
    assert row["rows by"] == "embedders"  # --write-rows auto: several embedders, one host
    assert float(row["local %"]) >= 95.0, row  # type: ignore[arg-type]
    # The same tiles as the single-node run of the same files, each copy once.
    single = _tiles(gen_db)
    assert _tiles(work / f"{scenario}.lance") == Counter({k: n * 4 for k, n in single.items()})


def _captures(d: Path, n: int) -> Counter[tuple[str, int, int]]:
    """``n`` generated 512 x 1024 GeoTIFFs in ``d``; their 8 tiles each (as :func:`_tiles`)."""
    d.mkdir(parents=True, exist_ok=True)
    want: Counter[tuple[str, int, int]] = Counter()
    for i in range(n):
        write_geotiff(d / f"cap{i}.tif", landscape(512, 1024, 60 + i))
        want.update((f"cap{i}.tif", r, c) for r in (0, 256) for c in (0, 256, 512, 768))
    return want


def test_a_node_removed_mid_run_leaves_the_same_tiles(cluster_runs: Runs) -> None:
    """``cluster.remove_node`` while calls are in flight: its embedder is
    dropped, its windows go to the other node, each tile is written once."""
    work, rows, said, want = cluster_runs
    row = rows["remove1"]
    assert "left the cluster; 1 embedders go on" in said  # the removal came mid-run
    assert row["files failed"] == 0 and row["error"] is None
    assert _tiles(work / "remove1.lance") == want


def test_no_embedder_left_is_one_line_and_keeps_committed_files(cluster_runs: Runs) -> None:
    work, rows, _, want = cluster_runs
    error = str(rows["remove_last"]["error"])
    assert "every embedder's node left the Ray cluster mid-run" in error and "\n" not in error
    db = work / "remove_last.lance"
    kept = _tiles(db)  # the files committed before: whole, once each
    assert kept and all(want[key] == 1 for key in kept)
    assert set(Counter(name for name, _, _ in kept).values()) == {8}
    assert f"dataset version {lance.dataset(str(db)).version}" in error
