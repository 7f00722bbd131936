"""Tile thumbnails: small JPEGs of the tiles, made by the embedder actor.

The embedder shrinks each tile in the same pass that embeds it
(:meth:`ris_ray.model.embed.Embedder.embed_and_shrink`: an area reduce on the GPU,
free there; :func:`shrink` here on a CPU, ~10x faster than torch's) and the
actor encodes the ``(N, s, s, 3)`` uint8 result with :func:`encode_all`.
Encoding runs in a small thread pool on a GPU node (Pillow releases the GIL
while it encodes), so one actor keeps up with its GPU; tiling tasks make none.
"""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from PIL import Image

__all__ = ["FORMAT", "OPTIONS", "encode", "encode_all", "shrink"]

#: JPEG, quality 70 with optimised Huffman tables: at 64 px about 1.3 KB per
#: tile on the shared data; WEBP is ~15 % smaller but ~20x slower to encode.
FORMAT = "JPEG"
OPTIONS: dict[str, Any] = {"quality": 70, "optimize": True}


def shrink(pixels: np.ndarray, size: int) -> np.ndarray:
    """Band-first ``(N, 3, T, T)`` uint8 tiles -> ``(N, size, size, 3)`` uint8 (Pillow).

    When ``size`` divides ``T`` each output pixel is the mean of its
    ``T/size`` square block, rounded: one ``Image.reduce`` over the batch
    viewed as a ``(N*3*T, T)`` image (blocks never cross a tile's edge).
    Otherwise each band of each tile is resized with the area filter (BOX).
    """
    n, c, h, w = pixels.shape
    if n == 0:
        return np.empty((0, size, size, c), np.uint8)
    if h == w and h % size == 0:
        tall = Image.fromarray(np.ascontiguousarray(pixels).reshape(n * c * h, w))
        small = np.asarray(tall.reduce(h // size)).reshape(n, c, size, size)
    else:
        box = Image.Resampling.BOX
        small = np.array(
            [[np.asarray(Image.fromarray(b).resize((size, size), box)) for b in t] for t in pixels]
        ).reshape(n, c, size, size)
    return np.ascontiguousarray(small.transpose(0, 2, 3, 1))


def encode(rgb: np.ndarray) -> bytes:
    """One ``(s, s, 3)`` uint8 image as a JPEG (:data:`FORMAT`, :data:`OPTIONS`)."""
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format=FORMAT, **OPTIONS)
    return buf.getvalue()


def encode_all(small: np.ndarray, pool: ThreadPoolExecutor | None = None) -> list[bytes]:
    """JPEGs of an ``(N, s, s, 3)`` uint8 batch, in order; on ``pool`` when given."""
    images = list(small)
    return list(pool.map(encode, images)) if pool is not None else [encode(x) for x in images]
