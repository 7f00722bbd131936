"""Ray for an ingest run: connecting (embedded or a cluster), waiting for GPUs
an autoscaler adds, and starting the embedder actors (:func:`make_actors`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import ray

from ris_ray.core.config import IngestConfig
from ris_ray.core.errors import InputError
from ris_ray.ingest import raylocal
from ris_ray.ingest.actors import EmbedActor
from ris_ray.ingest.placement import (
    EMBEDDER_CPUS,
    Placement,
    cluster_nodes,
    on_node,
    place_embedders,
)
from ris_ray.ingest.tasks import TASK_RETRIES
from ris_ray.model.embed import default_num_threads, fixed_num_threads
from ris_ray.model.weights import ResolvedWeights
from ris_ray.store.fragments import FragmentTarget
from ris_ray.store.schema import DatasetParams

__all__ = ["ACTOR_RESTARTS", "connect", "disconnect", "make_actors", "rows_from_embedders"]

ACTOR_RESTARTS = 3


def connect(address: str | None = None) -> bool:
    """Connect to Ray: ``address`` or ``RAY_ADDRESS`` if set, else start a fresh
    embedded local instance on loopback (:func:`ris_ray.ingest.raylocal.start`).
    The workers get this process's ``AWS_*`` settings as task arguments
    (:func:`ris_ray.core.objstore.worker_settings`), never as ``runtime_env``
    variables: Ray's runtime-env agent writes those to its log in clear.
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


def _cuda_gpus(cfg: IngestConfig, gpus: int, say: Callable[[str], None]) -> int:
    """The GPUs for ``--device cuda`` (``gpus``: those Ray has now); at least one.

    On a cluster an autoscaler may add some: wait for them (:func:`_wait_for_gpus`).
    Nothing can add a GPU to the embedded Ray: none there fails at once.
    """
    if raylocal.embedded():
        if gpus == 0:
            raise InputError(
                "--device cuda: Ray finds no GPU on this machine (CUDA_VISIBLE_DEVICES="
                f"{os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}); use --device cpu, or "
                "--address a Ray cluster with GPU nodes"
            )
        return gpus
    gpus = _wait_for_gpus(cfg.num_embedders or max(gpus, 1), cfg.gpu_wait_s, say)
    if gpus == 0:
        raise InputError(
            f"--device cuda: no GPU joined the cluster within {cfg.gpu_wait_s:.0f} s; "
            "check the GPU node type / quotas, or use --device cpu"
        )
    return gpus


def make_actors(
    cfg: IngestConfig,
    weights: ResolvedWeights,
    params: DatasetParams,
    fingerprint: str,
    say: Callable[[str], None],
    actor_cls: type[EmbedActor] = EmbedActor,
    target: FragmentTarget | None = None,
) -> tuple[list[Any], Placement, FragmentTarget | None]:
    """One embedder per GPU (``num_gpus=1`` each), or CPU embedders without GPUs
    (one; on a cluster one per node), and where they run
    (:func:`~ris_ray.ingest.placement.place_embedders`: on a cluster each is
    pinned to its node, whose tiling tasks feed it). They write their rows to
    ``target`` where :func:`rows_from_embedders` says so (returned; None:
    the rows go back to the driver).

    ``--device cuda`` takes the GPUs of :func:`_cuda_gpus` (``--embedders N``
    on a cluster: it asks the autoscaler for N and waits ``cfg.gpu_wait_s``).
    """
    gpus = int(ray.cluster_resources().get("GPU", 0))
    if cfg.device == "cuda":
        gpus = _cuda_gpus(cfg, gpus, say)
    use_gpu = gpus > 0 and cfg.device != "cpu"
    n = min(cfg.num_embedders or gpus, gpus) if use_gpu else cfg.num_embedders
    one_node = 1 if use_gpu else default_num_threads()
    plan = place_embedders(cluster_nodes(), n, use_gpu, one_node, fixed_num_threads())
    for warning in plan.warnings:
        say(f"warning: {warning}")
    device = "cuda" if use_gpu else "cpu"
    if target is not None and not rows_from_embedders(cfg, plan, say, use_gpu):
        target = None
    actors = []
    for node, threads in zip(plan.nodes, plan.threads, strict=True):
        options: dict[str, Any] = {
            "num_gpus": 1 if use_gpu else 0,
            "num_cpus": EMBEDDER_CPUS,
            "max_restarts": ACTOR_RESTARTS,
            "max_task_retries": TASK_RETRIES,
        }
        if node is not None:
            options["scheduling_strategy"] = on_node(node)
        cls = ray.remote(actor_cls).options(**options)
        actors.append(
            cls.remote(
                weights,
                params,
                device,
                cfg.precision,
                cfg.batch_size,
                threads,
                fingerprint,
                cfg.thumbnail_size,
                target,
            )
        )
    return actors, plan, target


def rows_from_embedders(
    cfg: IngestConfig, plan: Placement, say: Callable[[str], None], use_gpu: bool = True
) -> bool:
    """Whether the embedders write the rows themselves (``--write-rows``): always
    with ``embedders``, never with ``driver``; with ``auto`` when they reach
    the dataset where the driver does (in object storage, or a local path
    with every Ray node on this host) and the driver could be what limits
    the run: a GPU embedder, or several. One CPU embedder (~100 tiles/s) is
    far below a driver's ceiling, and on the same few cores the cut-and-embed
    path costs more CPU per tile (Performance, table 1c). A local ``--db`` on
    a cluster of several hosts keeps the rows on the driver's path, said once."""
    if cfg.write_rows != "auto":
        return cfg.write_rows == "embedders"
    loc = cfg.location
    if loc.is_object:
        return True
    if not loc.is_local or not (use_gpu or len(plan.nodes) > 1):
        return False
    hosts = {str(n["NodeManagerAddress"]) for n in ray.nodes() if n.get("Alive")}
    if not plan.cluster or hosts <= {ray.util.get_node_ip_address()}:
        return True
    say(
        f"warning: --db {loc.url!r} is a local path and the Ray nodes are on {len(hosts)} "
        "hosts: every row goes through the driver; put the dataset in object storage "
        "(s3://...) for the nodes to write it, or pass --write-rows embedders if the path "
        "is on a filesystem every node shares"
    )
    return False
