"""The embedder actor: a Ray actor holding one :class:`~ris_ray.model.embed.Embedder`.

It lives apart from :mod:`ris_ray.ingest.pipeline` so an actor worker imports the
embedder and the store schema, not the driver (scheduler, Ray loop, reports).
Torch is imported when an :class:`EmbedActor` builds its model, not with this
module: a subclass without a model (the plumbing benchmark's) never loads it.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ris_ray.core.records import TileBatch
from ris_ray.model import thumbnail
from ris_ray.model.weights import ResolvedWeights
from ris_ray.store.fragments import FragmentTarget, Written
from ris_ray.store.schema import (
    DatasetParams,
    EncodedRows,
    encode_record_batch,
    to_record_batch,
)

__all__ = ["ENCODE_THREADS", "EmbedActor"]

#: Threads that JPEG-encode thumbnails in a GPU embedder (a CPU one encodes inline).
ENCODE_THREADS = 4


class EmbedActor:
    """Turns a :class:`~ris_ray.core.records.TileBatch` into rows in the store schema,
    encoded as one Arrow IPC message (:class:`~ris_ray.store.schema.EncodedRows`).

    Pixels arrive band-first ``(N, 3, T, T)`` uint8; the embedder moves them to
    the device as uint8 and lays them out there. The thumbnails
    (``thumbnail`` px, 0: none) are made here from the same pixels: shrunk
    on the device in the embedding pass, JPEG-encoded by :mod:`ris_ray.model.thumbnail`.

    Given a :class:`~ris_ray.store.fragments.FragmentTarget` (``target``), it
    writes each call's rows to the dataset itself, as one uncommitted Lance
    fragment, and returns only their :class:`~ris_ray.store.fragments.Written`
    record; else the rows go back to the driver, encoded.
    """

    #: Where calls write their rows (None: they return them).
    target: FragmentTarget | None = None

    def __init__(
        self,
        weights: ResolvedWeights,
        params: DatasetParams,
        device: str,
        precision: str,
        batch_size: int,
        threads: int,
        fingerprint: str = "float32",
        thumbnail: int = 64,
        target: FragmentTarget | None = None,
    ) -> None:
        from ris_ray.model.embed import Embedder  # torch, in the actor process only

        self.embedder = Embedder(
            weights, device=device, precision=precision, batch_size=batch_size, num_threads=threads
        )
        self.params = params
        #: The store's fingerprint type (:attr:`~ris_ray.store.tilestore.TileStore.fingerprint`):
        #: rows leave the actor in it, so the driver never converts them.
        self.fingerprint = fingerprint
        self.thumbnail = thumbnail
        self.target = target
        self.pool = ThreadPoolExecutor(ENCODE_THREADS) if device == "cuda" else None

    def device(self) -> str:
        return f"{self.embedder.device} {str(self.embedder.dtype).removeprefix('torch.')}"

    def node(self) -> str:
        """The Ray node this actor runs on (where its tiles should be cut)."""
        import ray

        return str(ray.get_runtime_context().get_node_id())

    def infer(self, pixels: list[np.ndarray], size: int) -> tuple[np.ndarray, np.ndarray]:
        """``(N, FINGERPRINT_DIM)`` float32 fingerprints of the band-first tiles of
        ``pixels`` (the windows of one call, in order, not joined) and the tiles
        shrunk to ``(N, size, size, 3)`` uint8 (none when ``size`` is 0), one
        device pass (:meth:`~ris_ray.model.embed.Embedder.embed_and_shrink`)."""
        return self.embedder.embed_and_shrink(pixels, size)

    def thumbnails(self, small: np.ndarray) -> list[bytes]:
        """The JPEGs of the shrunk tiles :meth:`infer` returned, in order (on the
        encoding threads of a GPU actor)."""
        return thumbnail.encode_all(small, self.pool)

    def embed_list(self, batches: list[TileBatch]) -> list[EncodedRows] | Written:
        """:meth:`embed` of the batches of one call sent as one object (a
        cut-and-embed task's call: one object-store ref per call, not one per
        window, since each ref costs its owner and borrower a few RPCs)."""
        return self.embed(*batches)

    def embed(self, *batches: TileBatch) -> list[EncodedRows] | Written:
        """The batches of one call (one per window) as rows in the store schema,
        pixels dropped: written as one fragment to :attr:`target` when set (its
        :class:`~ris_ray.store.fragments.Written` record returned), else one IPC
        message per batch. Their pixels go through :meth:`infer` together
        (fuller batches on a GPU), without being joined first."""
        pixels = [b.pixels for b in batches if b.pixels is not None]
        assert len(pixels) == len(batches), "a batch reaches the embedder with its pixels"
        fingerprints, small = self.infer(pixels, self.thumbnail)
        thumbs = self.thumbnails(small) if self.thumbnail else []
        rows, start = [], 0
        for batch in batches:
            end = start + len(batch)
            batch.fingerprint = fingerprints[start:end]
            if self.thumbnail:
                batch.thumbnail = np.array(thumbs[start:end], dtype=object)
            batch.pixels = None
            rows.append(to_record_batch(batch, self.params, self.fingerprint))
            start = end
        if self.target is not None:
            return Written(tuple(r.num_rows for r in rows), self.target.write(rows))
        return [encode_record_batch(r, self.params, self.fingerprint) for r in rows]
