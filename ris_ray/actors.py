"""The embedder actor: a Ray actor holding one :class:`~ris_ray.embed.Embedder`.

It lives apart from :mod:`ris_ray.pipeline` so an actor worker imports the
embedder and the store schema, not the driver (scheduler, Ray loop, reports).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ris_ray.embed import Embedder, ResolvedWeights
from ris_ray.records import TileBatch
from ris_ray.store import DatasetParams, to_table

__all__ = ["EmbedActor"]


class EmbedActor:
    """Turns a :class:`~ris_ray.records.TileBatch` into an Arrow table in the store schema.

    Pixels arrive band-first ``(N, 3, T, T)`` uint8; the embedder moves them to
    the device as uint8 and lays them out there.
    """

    def __init__(
        self,
        weights: ResolvedWeights,
        params: DatasetParams,
        device: str,
        precision: str,
        batch_size: int,
        threads: int,
        fingerprint: str = "float32",
    ) -> None:
        self.embedder = Embedder(
            weights, device=device, precision=precision, batch_size=batch_size, num_threads=threads
        )
        self.params = params
        #: The store's fingerprint type (:attr:`~ris_ray.store.TileStore.fingerprint`):
        #: tables leave the actor in it, so the driver never converts them.
        self.fingerprint = fingerprint

    def device(self) -> str:
        return f"{self.embedder.device} {str(self.embedder.dtype).removeprefix('torch.')}"

    def fingerprints(self, pixels: np.ndarray) -> np.ndarray:
        """``(N, FINGERPRINT_DIM)`` float32 fingerprints of band-first ``pixels``."""
        return self.embedder.embed(pixels)

    def embed(self, batch: TileBatch) -> Any:
        """The batch as an Arrow table in the store schema (pixels dropped)."""
        assert batch.pixels is not None, "a batch reaches the embedder with its pixels"
        batch.fingerprint = self.fingerprints(batch.pixels)
        batch.pixels = None
        return to_table(batch, self.params, self.fingerprint)
