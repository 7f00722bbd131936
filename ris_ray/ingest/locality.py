"""Locality: how many pixel bytes were embedded on the node that cut them.

The run's own counter for placement (:mod:`~ris_ray.ingest.placement`): a
tiling task reports its node with each window's
:class:`~ris_ray.core.records.TileStats`, which the window's
:class:`~ris_ray.ingest.planning.Part` carries; an embed call's windows are counted
*local* when its embedder runs on that node, else *crossed* (they travelled
between nodes through the object store). A window whose cut node is unknown
counts as crossed. No Ray.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Locality"]


@dataclass
class Locality:
    """Pixel bytes embedded where they were cut (``local``) or elsewhere (``crossed``)."""

    local: int = 0
    crossed: int = 0

    def embedded(self, cut: str, node: str, nbytes: int) -> None:
        """``nbytes`` of pixels cut on node ``cut`` (empty: unknown) were embedded on ``node``."""
        if cut and cut == node:
            self.local += nbytes
        else:
            self.crossed += nbytes

    @property
    def share(self) -> float:
        """The share of pixel bytes that never left their node, in [0, 1] (1 when none)."""
        total = self.local + self.crossed
        return self.local / total if total else 1.0
