"""The tiling loop as it was before issue 11 (commit 702bde1), kept as the
benchmark's "before" row: pixel-interleaved ``to_rgb8``, a Python loop per
tile, a 96 px JPEG thumbnail per tile. Not used by ris_ray itself."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from PIL import Image

from ris_ray.tiling import (
    RasterInfo,
    TileSpec,
    WindowJob,
    _geo_columns,
    _open,
    _valid_mask,
    display_path,
    tile_id,
    to_rgb8,
)

__all__ = ["legacy_read_tiles"]


def _thumbnail(rgb: np.ndarray, size: int) -> bytes:
    image = Image.fromarray(rgb).resize((size, size), Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=85)
    return buf.getvalue()


def legacy_read_tiles(info: RasterInfo, job: WindowJob, spec: TileSpec) -> dict[str, Any]:
    """The old ``read_tiles``, as it was (pixels ``(N, T, T, 3)``)."""
    tile, stride = spec.tile, spec.stride
    window = job.window(tile, stride)
    with _open(info.path) as src:
        data = src.read(list(info.bands.indexes), window=window)
        valid = _valid_mask(src, info, data, window)
    rgb = to_rgb8(data, valid, info.stretch)
    rows, cols, fracs, pixels, thumbs = [], [], [], [], []
    for i in range(job.n_rows):
        for j in range(job.n_cols):
            r, c = i * stride, j * stride
            frac = float(valid[r : r + tile, c : c + tile].mean())
            if frac < spec.min_valid:
                continue
            cut = rgb[r : r + tile, c : c + tile]
            rows.append(int(window.row_off) + r)
            cols.append(int(window.col_off) + c)
            fracs.append(frac)
            pixels.append(cut)
            thumbs.append(_thumbnail(cut, spec.thumbnail))
    n = len(rows)
    batch: dict[str, Any] = {
        "tile_id": np.array(
            [tile_id(info.path, r, c, tile, stride, spec.model) for r, c in zip(rows, cols)],
            dtype=object,
        ),
        "source": np.array([display_path(info.path)] * n, dtype=object),
        "row": np.array(rows, dtype=np.int32),
        "col": np.array(cols, dtype=np.int32),
        "width": np.full(n, tile, dtype=np.int32),
        "height": np.full(n, tile, dtype=np.int32),
        "valid_fraction": np.array(fracs, dtype=np.float32),
        "pixels": np.stack(pixels) if pixels else np.zeros((0, tile, tile, 3), np.uint8),
        "thumbnail": np.array(thumbs, dtype=object),
    }
    batch.update(_geo_columns(info, np.array(rows), np.array(cols), tile))
    batch["_stats"] = {"n_planned": job.n_tiles, "n_low_valid": job.n_tiles - n}
    return batch
