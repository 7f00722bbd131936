"""Earlier tiling code, kept as the benchmark's "before" rows. Not used by ris_ray itself.

- :func:`legacy_read_tiles`: the tiling loop before issue 11 (main at 2e080f7):
  GDAL's dataset mask or an ``np.all`` fill mask, pixel-interleaved
  ``to_rgb8``, a Python loop per tile, a 96 px JPEG thumbnail (quality 85)
  per tile.
- :func:`tiler_thumbnails`: the 64 px JPEG thumbnails as the tiling task made
  them until thumbnails moved to the embedder actor (main at 7faf9d2): one
  box reduce of the whole window, then a crop and an encode per kept tile.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import rasterio
from PIL import Image
from rasterio.windows import Window

from ris_ray.core.records import TileBatch, TileStats
from ris_ray.raster.bands import band_planes, to_rgb8
from ris_ray.raster.dataset import display_path, gdal_reason, open_raster
from ris_ray.raster.reading import RasterInfo, _geo_columns, _read_window
from ris_ray.raster.tiling import TileSpec, WindowJob, cut_tiles, tile_id, tile_valid_counts

__all__ = ["legacy_read_tiles", "tiler_read_tiles", "tiler_thumbnails"]


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
    info: RasterInfo, job: WindowJob, spec: TileSpec, thumbnail: int = 96
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
            thumbs.append(_thumbnail(cut, thumbnail))
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


def _box_factor(tile: int, stride: int, size: int) -> int:
    f = max(1, tile // max(size, 1))
    while f > 1 and (tile % f or stride % f):
        f -= 1
    return f


def tiler_thumbnails(
    planes: np.ndarray, rows: np.ndarray, cols: np.ndarray, tile: int, stride: int, size: int
) -> list[bytes]:
    """The tiling task's thumbnails at 7faf9d2: box-reduce the ``(3, H, W)``
    window once by the largest factor dividing ``T`` and ``S`` (PIL
    ``reduce``), then crop each kept tile (grid ``rows``/``cols``), resize
    when needed and encode (JPEG q70, optimised Huffman tables)."""
    f = _box_factor(tile, stride, size)
    chans = [Image.fromarray(np.ascontiguousarray(p)) for p in planes]
    if f > 1:
        chans = [c.reduce(f) for c in chans]
    small = Image.merge("RGB", chans)
    t, s = tile // f, stride // f
    out = []
    for i, j in zip(rows.tolist(), cols.tolist()):
        im = small.crop((j * s, i * s, j * s + t, i * s + t))
        if t != size:
            im = im.resize((size, size), Image.Resampling.BILINEAR)
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=70, optimize=True)
        out.append(buf.getvalue())
    return out


def tiler_read_tiles(
    info: RasterInfo, job: WindowJob, spec: TileSpec, thumbnail: int = 64
) -> tuple[TileBatch, TileStats]:
    """``read_tiles`` as at 7faf9d2: the shipped read, mask and cut, with
    :func:`tiler_thumbnails` made from the decoded window."""
    tile, stride = spec.tile, spec.stride
    window = job.window(tile, stride)
    data, valid = _read_window(info, window)
    planes = band_planes(data, valid, info.stretch)
    fracs = tile_valid_counts(valid, job.n_rows, job.n_cols, tile, stride) / float(tile * tile)
    gi, gj = np.nonzero(fracs >= spec.min_valid)
    rows = gi * stride + int(window.row_off)
    cols = gj * stride + int(window.col_off)
    n = int(gi.size)
    batch = TileBatch(
        tile_id=np.array(
            [tile_id(info.path, r, c, tile, stride, spec.model) for r, c in zip(rows, cols)],
            dtype=object,
        ),
        source=np.array([display_path(info.path)] * n, dtype=object),
        row=rows.astype(np.int32),
        col=cols.astype(np.int32),
        width=np.full(n, tile, dtype=np.int32),
        height=np.full(n, tile, dtype=np.int32),
        valid_fraction=fracs[gi, gj].astype(np.float32),
        thumbnail=np.array(tiler_thumbnails(planes, gi, gj, tile, stride, thumbnail), dtype=object),
        crs=info.crs,
        pixels=cut_tiles(planes, gi, gj, tile, stride),
        **_geo_columns(info, rows, cols, tile),
    )
    return batch, TileStats(n_planned=job.n_tiles, n_low_valid=job.n_tiles - n, n_tiles=n)
