"""Placement: which node each embedder runs on, and where its tiles are cut.

On a cluster, pixels should not cross the network: a window's tiles are cut
on the node of the embedder that takes them. :func:`place_embedders` is pure
(no Ray): from the cluster's nodes (:class:`NodeInfo`) it spreads the
embedders over the nodes that can hold them and groups them by node; the
:class:`~ris_ray.ingest.scheduler.Scheduler` then sends each group's
windows to tiling tasks on that node (:meth:`Placement.tiling_node`), and
their tiles to that group's embedders only.

- GPU embedders (``--device cuda``/``auto`` with GPUs) go to the GPU nodes,
  one per GPU, spread over the nodes; a node without embedders cuts no tiles.
- ``--device cpu`` on a cluster runs one embedder per node that has at least
  two CPUs (one for the embedder, the rest cut tiles), not one for the whole
  cluster; its torch threads are the node's CPUs shared by its embedders
  (``RIS_TORCH_THREADS`` overrides: ``fixed_threads``).
- A node whose CPUs are all taken by its embedders
  (:data:`EMBEDDER_CPUS` each) has none to cut tiles with: its tiles are cut
  elsewhere and cross the network, and :attr:`Placement.warnings` says so.
- On one node nothing is pinned (:attr:`Placement.cluster` is False).

:func:`cluster_nodes` reads the nodes from Ray and :func:`on_node` is the
(soft) scheduling strategy that pins a task or actor to one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "EMBEDDER_CPUS",
    "NodeInfo",
    "Placement",
    "cluster_nodes",
    "lost_embedders",
    "on_node",
    "place_embedders",
]

#: CPUs each embedder actor takes on its node (``num_cpus`` of the actor).
EMBEDDER_CPUS = 1


@dataclass(frozen=True)
class NodeInfo:
    """One live node of the cluster: its id, logical CPUs and GPUs."""

    node_id: str
    cpus: int
    gpus: int


@dataclass(frozen=True)
class Placement:
    """Where the embedders go: ``nodes[i]`` the node of embedder ``i`` (None:
    anywhere), ``groups[i]`` its group (the embedders of one node), ``threads[i]``
    its torch threads; ``pinned[g]`` the node that cuts group ``g``'s tiles
    (None: any node). ``warnings`` are said once in the run's output."""

    nodes: tuple[str | None, ...]
    groups: tuple[int, ...]
    threads: tuple[int, ...]
    pinned: tuple[str | None, ...]
    warnings: tuple[str, ...] = ()

    @property
    def cluster(self) -> bool:
        """Some embedder is pinned to a node."""
        return any(n is not None for n in self.nodes)

    @property
    def n_nodes(self) -> int:
        """The nodes that hold an embedder (1 when nothing is pinned)."""
        return len({n for n in self.nodes if n is not None}) or 1

    def tiling_node(self, group: int) -> str | None:
        """The node that cuts group ``group``'s tiles (None: any node)."""
        return self.pinned[group] if group < len(self.pinned) else None


def _unpinned(n: int, threads: int) -> Placement:
    return Placement((None,) * n, (0,) * n, (threads,) * n, (None,))


def _spread(nodes: Sequence[NodeInfo], n: int, slots: dict[str, int]) -> list[str]:
    """``n`` embedders over ``nodes``, round robin, at most ``slots[id]`` on a node."""
    out: list[str] = []
    left = dict(slots)
    while len(out) < n and any(left.values()):
        for node in nodes:
            if len(out) < n and left[node.node_id] > 0:
                out.append(node.node_id)
                left[node.node_id] -= 1
    return out


def place_embedders(
    nodes: Sequence[NodeInfo],
    n: int | None,
    use_gpu: bool,
    threads: int,
    fixed_threads: int | None = None,
) -> Placement:
    """Place ``n`` embedders (None: the default, one per GPU or one per CPU node)
    on ``nodes`` (see the module docs); ``threads``: a CPU embedder's torch
    threads on one node (kept there; on a cluster sized to its node, unless
    ``fixed_threads``, ``RIS_TORCH_THREADS``, sets them)."""
    hosts = [x for x in nodes if (x.gpus > 0 if use_gpu else x.cpus >= EMBEDDER_CPUS + 1)]
    if len(nodes) <= 1 or not hosts:
        return _unpinned(n or 1, threads)
    slots = {x.node_id: x.gpus if use_gpu else x.cpus - EMBEDDER_CPUS for x in hosts}
    want = n if n is not None else (sum(slots.values()) if use_gpu else len(hosts))
    placed = _spread(hosts, want, slots)
    by_id = {x.node_id: x for x in hosts}
    order = list(dict.fromkeys(placed))
    count = {node: placed.count(node) for node in order}
    sized = [
        1 if use_gpu else fixed_threads or max(1, by_id[node].cpus // count[node])
        for node in placed
    ]
    pinned: list[str | None] = []
    warnings: list[str] = []
    for node in order:
        spare = by_id[node].cpus - EMBEDDER_CPUS * count[node]
        pinned.append(node if spare > 0 else None)
        if spare <= 0:
            warnings.append(
                f"node {node[:12]} has {by_id[node].cpus} CPUs for {count[node]} embedder(s) "
                "and none left to cut tiles: its tiles are cut on other nodes and cross the "
                f"network; give it at least {count[node] * EMBEDDER_CPUS + 1} CPUs"
            )
    groups = [order.index(node) for node in placed]
    extra = want - len(placed)  # more than the nodes hold: Ray places them
    return Placement(
        (*placed, *([None] * extra)),
        (*groups, *([len(order)] * extra)),
        (*sized, *([threads] * extra)),
        (*pinned, *([None] if extra else [])),
        tuple(warnings),
    )


def lost_embedders(plan: Placement, alive: set[str]) -> list[int]:
    """The embedders pinned to a node that is not ``alive`` any more."""
    return [i for i, node in enumerate(plan.nodes) if node is not None and node not in alive]


def cluster_nodes() -> list[NodeInfo]:
    """The live nodes of the connected Ray cluster."""
    import ray

    out = []
    for node in ray.nodes():  # type: ignore[no-untyped-call]
        if not node.get("Alive"):
            continue
        res = node.get("Resources", {})
        out.append(NodeInfo(node["NodeID"], int(res.get("CPU", 0)), int(res.get("GPU", 0))))
    return out


def on_node(node_id: str | None) -> Any:
    """The scheduling strategy that runs a task or actor on ``node_id`` while it
    is alive (soft: elsewhere once it is gone); None: Ray's default."""
    if node_id is None:
        return None
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return NodeAffinitySchedulingStrategy(node_id, soft=True)
