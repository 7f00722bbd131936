"""Window and tile arithmetic: how many tiles fit, where they start, how the
tile grid is grouped into read windows, and how a window's tiles are counted
and cut. Pure functions (no I/O); the windowed reads built on them are in
:mod:`ris_ray.raster.reading`, the band and pixel conversions in
:mod:`ris_ray.raster.bands`.

Edge rule: only whole tiles are cut. Along an axis of length ``L`` with tile
``T`` and stride ``S`` the tile origins are ``0, S, 2S, ...`` up to
``L - T``; the partial strip beyond the last origin is dropped. An image
smaller than one tile therefore yields no tiles (reported, not an error).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np
from rasterio.windows import Window

from ris_ray.raster.dataset import display_path

__all__ = [
    "TileSpec",
    "WindowJob",
    "count_tiles",
    "cut_tiles",
    "display_path",
    "plan_windows",
    "tile_id",
    "tile_offsets",
    "tile_valid_counts",
]


# ---------------------------------------------------------------- arithmetic


def count_tiles(length: int, tile: int, stride: int) -> int:
    """Number of whole tiles along one axis.

    ``n = floor((L - T) / S) + 1`` when ``L >= T``, else ``0``.
    """
    if length < tile:
        return 0
    return (length - tile) // stride + 1


def tile_offsets(length: int, tile: int, stride: int) -> range:
    """Tile origins along one axis: ``range(0, L - T + 1, S)`` (empty if ``L < T``)."""
    return range(0, max(length - tile + 1, 0), stride)


@dataclass(frozen=True)
class WindowJob:
    """A rectangle of the tile grid that one task reads as one window.

    Grid cell ``(i, j)`` is the tile whose pixel origin is
    ``(row, col) = (i * stride, j * stride)``; the job covers rows
    ``first_row .. first_row + n_rows - 1`` and likewise for columns.
    """

    first_row: int
    first_col: int
    n_rows: int
    n_cols: int

    def window(self, tile: int, stride: int) -> Window:
        """Pixel window: origin ``(i0*S, j0*S)``, size ``((n-1)*S + T)`` per axis."""
        return Window(
            col_off=self.first_col * stride,
            row_off=self.first_row * stride,
            width=(self.n_cols - 1) * stride + tile,
            height=(self.n_rows - 1) * stride + tile,
        )

    @property
    def n_tiles(self) -> int:
        return self.n_rows * self.n_cols


def _tiles_per_window(target_px: int, stride: int, block: int, n_total: int) -> int:
    """Tiles per window along one axis: ``~target_px / S``, rounded up so the
    window step ``k * S`` is a multiple of the block size when that costs at
    most a doubling (``lcm(S, B) / S`` tiles), capped at the axis total."""
    k = max(1, target_px // stride)
    unit = math.lcm(stride, block) // stride if block > 0 else 1
    if 1 < unit <= 2 * k:
        k = -(-k // unit) * unit
    return max(1, min(k, n_total))


def plan_windows(
    width: int,
    height: int,
    tile: int,
    stride: int,
    *,
    block_shape: tuple[int, int] = (0, 0),
    target_px: int = 2048,
    max_window_bytes: int = 64 << 20,
    bytes_per_pixel: int = 3,
) -> list[WindowJob]:
    """Group the tile grid of an image into read windows.

    Windows hold about ``target_px`` pixels per edge. For striped files
    (blocks as wide as the image) windows span the full width, since any
    narrower read decodes the whole strip anyway, unless such a window would
    exceed ``max_window_bytes``. The union of the jobs' tiles is exactly the
    ``count_tiles(H) * count_tiles(W)`` grid, each tile once.
    """
    n_rows = count_tiles(height, tile, stride)
    n_cols = count_tiles(width, tile, stride)
    if n_rows == 0 or n_cols == 0:
        return []
    block_h, block_w = block_shape
    striped = block_w >= width and block_w > 0
    if striped and width * tile * bytes_per_pixel <= max_window_bytes:
        k_cols = n_cols
        rows_px = max(tile, (target_px * target_px) // max(width, 1))
        k_rows = _tiles_per_window(rows_px, stride, block_h, n_rows)
    else:
        k_cols = _tiles_per_window(target_px, stride, block_w, n_cols)
        k_rows = _tiles_per_window(target_px, stride, block_h, n_rows)
    jobs = []
    for r0 in range(0, n_rows, k_rows):
        for c0 in range(0, n_cols, k_cols):
            jobs.append(WindowJob(r0, c0, min(k_rows, n_rows - r0), min(k_cols, n_cols - c0)))
    return jobs


def tile_id(source: str, row: int, col: int, tile: int, stride: int, model: str) -> str:
    """Deterministic 20-hex-digit id of a tile: SHA-1 of its identity fields
    (``source`` as :func:`display_path` writes it)."""
    key = f"{display_path(source)}\x1f{row}\x1f{col}\x1f{tile}\x1f{stride}\x1f{model}"
    return hashlib.sha1(key.encode("utf-8")).hexdigest()[:20]


@dataclass(frozen=True)
class TileSpec:
    """The tiling parameters shared by every task of a run."""

    tile: int
    stride: int
    min_valid: float
    model: str


# ---------------------------------------------------------------- a window's tiles


def tile_valid_counts(
    valid: np.ndarray, n_rows: int, n_cols: int, tile: int, stride: int
) -> np.ndarray:
    """Valid pixels of every tile of a window, in one vectorised step.

    With ``g = gcd(T, S)`` the window is summed in ``g x g`` blocks
    (``B = valid.reshape(H/g, g, W/g, g).sum((1, 3))``), ``B`` gets an
    integral image ``I`` (``I[0, :] = I[:, 0] = 0``,
    ``I[y, x] = sum(B[:y, :x])``) and, with ``t = T/g`` and ``s = S/g``,
    tile ``(i, j)`` counts
    ``I[is+t, js+t] - I[is, js+t] - I[is+t, js] + I[is, js]``.
    For ``S = T`` this is a plain block sum. Returns ``(n_rows, n_cols)`` int64.
    """
    g = math.gcd(tile, stride)
    h, w = (n_rows - 1) * stride + tile, (n_cols - 1) * stride + tile
    v = valid[:h, :w].view(np.uint8)
    blocks = v.reshape(h // g, g, w // g, g).sum(axis=(1, 3), dtype=np.int64)
    if g == tile:  # stride is a multiple of the tile: one block per tile
        return np.asarray(blocks[:: stride // g, :: stride // g])
    integral = np.zeros((blocks.shape[0] + 1, blocks.shape[1] + 1), np.int64)
    np.cumsum(np.cumsum(blocks, axis=0), axis=1, out=integral[1:, 1:])
    t, s = tile // g, stride // g
    r0 = np.arange(n_rows) * s
    c0 = np.arange(n_cols) * s
    return np.asarray(
        integral[np.ix_(r0 + t, c0 + t)]
        - integral[np.ix_(r0, c0 + t)]
        - integral[np.ix_(r0 + t, c0)]
        + integral[np.ix_(r0, c0)]
    )


def cut_tiles(
    planes: np.ndarray, rows: np.ndarray, cols: np.ndarray, tile: int, stride: int
) -> np.ndarray:
    """Gather tiles ``(rows[k], cols[k])`` (grid indices) of a ``(C, H, W)``
    window into one ``(N, C, T, T)`` array.

    The tile grid is a strided view (``sliding_window_view`` of ``T x T``
    taken every ``S`` pixels, no copy); one fancy index copies the kept tiles
    out, so there is no Python loop per tile.
    """
    grid = np.lib.stride_tricks.sliding_window_view(planes, (tile, tile), axis=(1, 2))
    grid = grid[:, ::stride, ::stride]  # (C, n_rows, n_cols, T, T)
    return np.ascontiguousarray(grid.transpose(1, 2, 0, 3, 4)[rows, cols])
