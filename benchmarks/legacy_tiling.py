"""The tiling loop as it was before issue 11 (main at 2e080f7), kept as the
benchmark's "before" row: GDAL's dataset mask or an ``np.all`` fill mask,
pixel-interleaved ``to_rgb8``, a Python loop per tile, a 96 px JPEG thumbnail
(quality 85) per tile. Not used by ris_ray itself."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import rasterio
from PIL import Image
from rasterio.windows import Window

from ris_ray.raster import display_path, gdal_reason, open_raster
from ris_ray.records import TileBatch, TileStats
from ris_ray.tiling import RasterInfo, TileSpec, WindowJob, _geo_columns, tile_id, to_rgb8

__all__ = ["legacy_read_tiles"]


def _thumbnail(rgb: np.ndarray, size: int) -> bytes:
    image = Image.fromarray(rgb).resize((size, size), Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=85)
    return buf.getvalue()


def _valid_mask(src: Any, info: RasterInfo, data: np.ndarray, window: Window) -> np.ndarray:
    """The old validity rule: GDAL's dataset mask when one is declared, else
    pixels whose bands are all 0 or all the dtype's maximum are fill."""
    if info.mask == "dataset":
        valid = np.asarray(src.dataset_mask(window=window)) > 0
    else:
        top = np.iinfo(data.dtype).max if data.dtype.kind in "ui" else None
        fill = np.all(data == 0, axis=0)
        if top is not None:
            fill |= np.all(data == top, axis=0)
        valid = ~fill
    if data.dtype.kind == "f":
        valid &= ~np.any(np.isnan(data), axis=0)
    return valid


def legacy_read_tiles(
    info: RasterInfo, job: WindowJob, spec: TileSpec
) -> tuple[TileBatch, TileStats]:
    """The old ``read_tiles``, as it was (pixels ``(N, T, T, 3)``)."""
    tile, stride = spec.tile, spec.stride
    window = job.window(tile, stride)
    with open_raster(info.path) as src:
        try:
            data = src.read(list(info.bands.indexes), window=window)
            valid = _valid_mask(src, info, data, window)
        except rasterio.RasterioIOError as exc:
            raise RuntimeError(f"{info.path}: {gdal_reason(exc)}") from None
    rgb = to_rgb8(data, valid, info.stretch)
    rows, cols, fracs, pixels, thumbs = [], [], [], [], []
    n_low = 0
    for i in range(job.n_rows):
        for j in range(job.n_cols):
            r, c = i * stride, j * stride
            frac = float(valid[r : r + tile, c : c + tile].mean())
            if frac < spec.min_valid:
                n_low += 1
                continue
            cut = rgb[r : r + tile, c : c + tile]
            rows.append(int(window.row_off) + r)
            cols.append(int(window.col_off) + c)
            fracs.append(frac)
            pixels.append(cut)
            thumbs.append(_thumbnail(cut, spec.thumbnail))
    n = len(rows)
    batch = TileBatch(
        tile_id=np.array(
            [tile_id(info.path, r, c, tile, stride, spec.model) for r, c in zip(rows, cols)],
            dtype=object,
        ),
        source=np.array([display_path(info.path)] * n, dtype=object),
        row=np.array(rows, dtype=np.int32),
        col=np.array(cols, dtype=np.int32),
        width=np.full(n, tile, dtype=np.int32),
        height=np.full(n, tile, dtype=np.int32),
        valid_fraction=np.array(fracs, dtype=np.float32),
        thumbnail=np.array(thumbs, dtype=object),
        crs=info.crs,
        pixels=np.stack(pixels) if pixels else np.zeros((0, tile, tile, 3), np.uint8),
        **_geo_columns(info, np.array(rows), np.array(cols), tile),
    )
    return batch, TileStats(n_planned=job.n_tiles, n_low_valid=n_low, n_tiles=n)
