"""Placement on a simulated cluster: do pixels stay on the node that cut them?

``ray.cluster_utils.Cluster`` runs a head (``--head-cpus``, no GPU) and
``--nodes`` worker nodes (``--cpus`` logical CPUs and one logical GPU each;
none with ``--device cpu``) on this one host, and ``ris_ray.ingest`` runs
against it with the plumbing benchmark's
:class:`~plumbing.ZeroCostEmbedActor` (its own work costs nothing) on
``--scale`` copies of ``--data``. For each node count it reports:

- ``local %``: the share of pixel bytes embedded on the node that cut them,
  from the run's own counters (:mod:`ris_ray.ingest.locality`);
- ``lo B/tile``: bytes over loopback per tile (``/proc/net/dev``): the
  simulated nodes' object transfers, i.e. what would cross a network;
- ``driver ms/1k``: the driver process's CPU per 1000 tiles; ``driver loop
  ms/1k`` only while tiles flowed (``IngestReport.driver_loop_cpu_s``: no
  connection, actor start or last commit, which do not grow with the input);
- ``tiles/s``: the whole run's;
- ``rows by``: who wrote the rows (``--write-rows``: the embedders, or the driver).

CPUs are logical here and every node shares this host's cores: the table
proves placement and cost per tile, not speed.

    python benchmarks/scale.py --data ../shared/data --scale 8 --nodes 1 2 4 \
        --write-rows driver embedders   # who writes the rows, side by side
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bench_common  # noqa: F401  (the repository on sys.path)
from bench_common import table

__all__ = ["Faults", "SimCluster", "ingest_on", "lo_bytes", "run_one", "simulated_cluster"]


def lo_bytes() -> int:
    """Bytes received on the loopback interface so far (``/proc/net/dev``)."""
    for line in Path("/proc/net/dev").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name.strip() == "lo":
            return int(rest.split()[0])
    return 0


@dataclass(frozen=True)
class Faults:
    """Remove the last ``remove`` worker nodes ``after_s`` seconds after the
    ingest's first commit (``cluster.remove_node``: as a node dying); the
    embedder sleeps ``embed_ms`` per call so the run lasts that long."""

    remove: int = 0
    after_s: float = 3.0
    embed_ms: float = 0.0
    commit_every_s: float = 60.0
    call_tiles: int | None = None  # tiles per embedder call (None: the default)


def _actor(embed_ms: float) -> type[Any]:
    from plumbing import ZeroCostEmbedActor

    if not embed_ms:
        return ZeroCostEmbedActor

    class SlowZeroCost(ZeroCostEmbedActor):  # type: ignore[misc]
        def embed(self, *batches: Any) -> Any:
            time.sleep(embed_ms / 1000)
            return super().embed(*batches)

    return SlowZeroCost


def _remove_later(cluster: Any, nodes: list[Any], db: Path, after_s: float) -> threading.Thread:
    """Remove ``nodes`` ``after_s`` seconds after the ingest's first commit to ``db``."""

    def remove() -> None:
        while not any((db / "_versions").glob("*")):
            time.sleep(0.1)
        time.sleep(after_s)
        for node in nodes:
            print(f"removing node {node.node_id}", flush=True)
            cluster.remove_node(node, allow_graceful=False)

    thread = threading.Thread(target=remove, daemon=True)
    thread.start()
    return thread


def _say(msg: str) -> None:
    print(f"ingest: {msg}", flush=True)


@contextlib.contextmanager
def simulated_cluster(
    nodes: int, cpus: int, head_cpus: int, gpus: int, fast_health_checks: bool = False
) -> Iterator[SimCluster]:
    """A head (``head_cpus``, no GPU) and ``nodes`` worker nodes (``cpus`` and
    ``gpus`` each) on this host, with this process connected to it. Every
    node listens on 127.0.0.1 only, as the embedded Ray does
    (:mod:`ris_ray.ingest.raylocal`: a loopback node IP, kept by Ray's
    no-multi-node switch, which these same-host nodes do not need).
    ``fast_health_checks``: the head tells a removed node dead in about 2 s
    instead of Ray's default of about 15 s (for fault runs)."""
    import ray
    import ray._private.ray_constants as ray_constants
    from ray.cluster_utils import Cluster

    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # inherited by the nodes
    ray_constants.ENABLE_RAY_CLUSTER = False  # this process read it at import
    here = str(Path(__file__).resolve().parent)  # the workers import plumbing's actors
    paths = [here, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    loopback = {"node_ip_address": "127.0.0.1"}
    head: dict[str, Any] = {"num_cpus": head_cpus, "num_gpus": 0, **loopback}
    if fast_health_checks:
        head["_system_config"] = {
            "health_check_period_ms": 500,
            "health_check_timeout_ms": 500,
            "health_check_failure_threshold": 3,
        }
    cluster = Cluster(initialize_head=True, head_node_args=head)
    try:
        workers = [cluster.add_node(num_cpus=cpus, num_gpus=gpus, **loopback) for _ in range(nodes)]
        ray.init(address=cluster.address, logging_level="WARNING")
        cluster.wait_for_nodes()
        yield SimCluster(cluster, workers)
    finally:
        ray.shutdown()
        cluster.shutdown()


@dataclass
class SimCluster:
    """A :func:`simulated_cluster`: the ``ray.cluster_utils.Cluster`` and its
    worker nodes still in it."""

    cluster: Any
    workers: list[Any]


def ingest_on(
    sim: SimCluster,
    src: Path,
    db: Path,
    device: str,
    faults: Faults = Faults(),
    write_rows: str = "auto",
) -> dict[str, Any]:
    """One zero-cost ingest of ``src`` into ``db`` on ``sim``: its row."""
    from ris_ray.core.config import IngestConfig
    from ris_ray.core.errors import RisError
    from ris_ray.ingest.pipeline import ingest

    cfg = IngestConfig(
        inputs=(str(src),),
        db=str(db),
        weights="random",
        progress=False,
        device=device,  # type: ignore[arg-type]
        commit_every_s=faults.commit_every_s,
        call_tiles=faults.call_tiles,
        write_rows=write_rows,  # type: ignore[arg-type]
    )
    nodes = len(sim.workers)
    lo0, cpu0, t0 = lo_bytes(), time.process_time(), time.perf_counter()
    if faults.remove:
        gone, sim.workers = sim.workers[-faults.remove :], sim.workers[: -faults.remove]
        _remove_later(sim.cluster, gone, db, faults.after_s)
    try:
        report = ingest(cfg, actor_cls=_actor(faults.embed_ms), on_event=_say)
    except RisError as exc:
        return {"nodes": nodes, "error": str(exc)}
    lo, cpu = lo_bytes() - lo0, time.process_time() - cpu0
    wall = time.perf_counter() - t0
    for f in report.files_failed:
        print(f"failed: {f.path}: {f.reason}", flush=True)
    tiles = max(report.tiles_written, 1)
    counted = hasattr(report, "pixels_local_share")  # an older tree (before) has no counters
    return {
        "nodes": nodes,
        "embedder nodes": report.nodes if counted else None,
        "rows by": getattr(report, "rows_written_by", "driver"),
        "tiles": report.tiles_written,
        "files failed": len(report.files_failed),
        "local %": round(100 * report.pixels_local_share, 1) if counted else None,
        "crossed B/tile": round(report.pixel_bytes_crossed / tiles) if counted else None,
        "lo B/tile": round(lo / tiles),
        "driver ms/1k": round(1e6 * cpu / tiles, 1),
        "driver loop ms/1k": round(1e6 * getattr(report, "driver_loop_cpu_s", 0.0) / tiles, 1),
        "tiles/s": round(report.tiles_written / wall, 1),
        "error": None,
    }


def run_one(
    src: Path,
    db: Path,
    nodes: int,
    cpus: int,
    head_cpus: int,
    device: str,
    faults: Faults = Faults(),
    write_rows: str = "auto",
) -> dict[str, Any]:
    """One ingest of ``src`` into ``db`` on a fresh :func:`simulated_cluster`."""
    with simulated_cluster(nodes, cpus, head_cpus, 0 if device == "cpu" else 1) as sim:
        return ingest_on(sim, src, db, device, faults, write_rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True, help="GeoTIFFs to copy (../shared/data)")
    ap.add_argument("--scale", type=int, default=8, help="copies of --data")
    ap.add_argument("--nodes", type=int, nargs="+", default=[1, 2, 4], help="worker nodes")
    ap.add_argument("--cpus", type=int, default=3, help="logical CPUs per worker node")
    ap.add_argument("--head-cpus", type=int, default=1, help="logical CPUs of the head")
    ap.add_argument("--device", choices=["auto", "cpu"], default="auto", help="cpu: no GPUs")
    ap.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temp one)")
    ap.add_argument("--json", type=Path, default=None, help="write the rows here")
    ap.add_argument("--remove", type=int, default=0, help="worker nodes to remove mid-run")
    ap.add_argument(
        "--remove-after", type=float, default=3.0, help="... this many s after the first commit"
    )
    ap.add_argument("--embed-ms", type=float, default=0.0, help="embedder sleep per call (ms)")
    ap.add_argument("--commit-every", type=float, default=60.0, help="ingest's commit_every_s")
    ap.add_argument("--call-tiles", type=int, default=None, help="tiles per embedder call")
    ap.add_argument(
        "--write-rows",
        nargs="+",
        choices=["auto", "embedders", "driver"],
        default=["auto"],
        help="who writes the rows (several: one run each, side by side)",
    )
    args = ap.parse_args()
    from plumbing import _inputs

    work = args.work or Path(tempfile.mkdtemp(prefix="ris-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    src = _inputs(args.data, args.scale, work)
    rows = []
    faults = Faults(
        args.remove, args.remove_after, args.embed_ms, args.commit_every, args.call_tiles
    )
    for n in args.nodes:
        for who in args.write_rows:
            db = work / f"scale-{n}-{who}.lance"
            shutil.rmtree(db, ignore_errors=True)
            rows.append(run_one(src, db, n, args.cpus, args.head_cpus, args.device, faults, who))
            print(json.dumps(rows[-1]), flush=True)
    table(f"placement, {args.scale}x {args.data.name}, device {args.device}", rows)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
