"""The embedder actor: a Ray actor holding one :class:`~ris_ray.embed.Embedder`.

It lives apart from :mod:`ris_ray.pipeline` so an actor worker imports the
embedder and the store schema, not the driver (scheduler, Ray loop, reports).
"""

from __future__ import annotations

from typing import Any

from ris_ray.embed import Embedder, ResolvedWeights
from ris_ray.records import TileBatch
from ris_ray.store import DatasetParams, to_table

__all__ = ["EmbedActor"]


class EmbedActor:
    """Turns a :class:`~ris_ray.records.TileBatch` into an Arrow table in the store schema."""

    def __init__(
        self,
        weights: ResolvedWeights,
        params: DatasetParams,
        device: str,
        precision: str,
        batch_size: int,
        threads: int,
    ) -> None:
        self.embedder = Embedder(
            weights, device=device, precision=precision, batch_size=batch_size, num_threads=threads
        )
        self.params = params

    def device(self) -> str:
        return f"{self.embedder.device} {str(self.embedder.dtype).removeprefix('torch.')}"

    def embed(self, batch: TileBatch) -> Any:
        assert batch.pixels is not None, "a batch reaches the embedder with its pixels"
        batch.fingerprint = self.embedder.embed(batch.pixels)
        batch.pixels = None
        return to_table(batch, self.params)
