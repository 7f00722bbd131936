"""Band choice and pixel conversion: which bands become R, G, B (and which is
the alpha band), and how any dtype becomes uint8 (the per-band stretch),
interleaved (:func:`to_rgb8`) or band-first (:func:`band_planes`). Pure
NumPy, no I/O; :mod:`ris_ray.raster.reading` applies them to what it reads.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from rasterio.enums import ColorInterp

from ris_ray.core.errors import UnsupportedRasterError

__all__ = ["BandPlan", "band_planes", "select_bands", "stretch_u8", "to_rgb8"]


@dataclass(frozen=True)
class BandPlan:
    """Which bands become R, G, B (1-based; one band is repeated) and the alpha band."""

    indexes: tuple[int, ...]
    alpha: int | None = None


def select_bands(
    count: int,
    colorinterp: Sequence[ColorInterp],
    requested: tuple[int, ...] | None = None,
) -> BandPlan:
    """Choose the bands to embed.

    An alpha band (by colour interpretation) is never embedded; it becomes the
    mask. Of the remaining bands: ``requested`` if given, else the first three,
    else the first one (a 1- or 2-band image is embedded as grey).
    """
    alpha = next((i + 1 for i, ci in enumerate(colorinterp) if ci == ColorInterp.alpha), None)
    if requested is not None:
        bad = [b for b in requested if b > count]
        if bad:
            raise UnsupportedRasterError(
                f"--bands asks for band {bad[0]} but the file has {count} band(s)"
            )
        return BandPlan(tuple(requested), alpha)
    data_bands = [b for b in range(1, count + 1) if b != alpha]
    if not data_bands:
        raise UnsupportedRasterError("the only band is an alpha band: nothing to embed")
    if len(data_bands) >= 3:
        return BandPlan(tuple(data_bands[:3]), alpha)
    return BandPlan((data_bands[0],), alpha)


def stretch_u8(data: np.ndarray, stretch: tuple[tuple[float, float], ...] | None) -> np.ndarray:
    """``(bands, H, W)`` data as uint8, band by band.

    Without ``stretch`` (uint8 data) the array passes unchanged. Otherwise band
    ``b`` maps linearly ``v -> clip((v - lo_b) * 255 / (hi_b - lo_b), 0, 255)``
    (``0`` when ``hi_b <= lo_b``), NaN -> 0.
    """
    if stretch is None:
        return data.astype(np.uint8, copy=False)
    out = np.empty(data.shape, dtype=np.uint8)
    for b, (lo, hi) in enumerate(stretch):
        scale = 255.0 / (hi - lo) if hi > lo else 0.0
        band = (data[b].astype(np.float32) - np.float32(lo)) * np.float32(scale)
        np.nan_to_num(band, copy=False, nan=0.0)
        out[b] = np.clip(band, 0.0, 255.0).astype(np.uint8)
    return out


def to_rgb8(
    data: np.ndarray, valid: np.ndarray, stretch: tuple[tuple[float, float], ...] | None
) -> np.ndarray:
    """Convert a ``(bands, H, W)`` block to ``(H, W, 3)`` uint8.

    uint8 passes through; other dtypes map ``[lo, hi]`` linearly onto
    ``[0, 255]`` per band (clipped, NaN -> 0). Invalid pixels become 0 and a
    single band is repeated to three.
    """
    out = stretch_u8(data, stretch)
    # One strided pass: band-sequential -> pixel-interleaved, invalid -> 0
    # (a single band broadcasts to all three channels).
    rgb = np.empty((*out.shape[1:], 3), dtype=np.uint8)
    np.multiply(out.transpose(1, 2, 0), valid[:, :, None], out=rgb, casting="unsafe")
    return rgb


def band_planes(
    data: np.ndarray, valid: np.ndarray, stretch: tuple[tuple[float, float], ...] | None
) -> np.ndarray:
    """Convert a ``(bands, H, W)`` block to band-first ``(3, H, W)`` uint8.

    Same values as :func:`to_rgb8` without the interleaving copy: the stretch
    maps ``[lo, hi]`` onto ``[0, 255]``, invalid pixels become 0 (in place,
    skipped when all are valid) and a single band is repeated to three as a
    broadcast view.
    """
    out = stretch_u8(data, stretch)
    if not valid.all():
        if not out.flags.writeable:
            out = out.copy()
        np.multiply(out, valid[None], out=out, casting="unsafe")
    return np.broadcast_to(out, (3, *out.shape[1:])) if out.shape[0] == 1 else out
