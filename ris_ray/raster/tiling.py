"""Window and tile arithmetic, and windowed reads that cut tiles.

Pure functions first (no I/O): how many tiles fit, where they start, how the
tile grid is grouped into read windows. Then the two functions that touch a
raster, each opening the file itself so they can run in any Ray worker:
:func:`probe` (header + a decimated read for the stretch) and
:func:`read_tiles` (one window in, a columnar batch of tiles out).

Edge rule: only whole tiles are cut. Along an axis of length ``L`` with tile
``T`` and stride ``S`` the tile origins are ``0, S, 2S, ...`` up to
``L - T``; the partial strip beyond the last origin is dropped. An image
smaller than one tile therefore yields no tiles (reported, not an error).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import rasterio
import rasterio.windows
from rasterio.enums import ColorInterp, MaskFlags, Resampling
from rasterio.errors import RasterBlockError, WindowError
from rasterio.windows import Window

from ris_ray.core.errors import RasterReadError, UnsupportedRasterError
from ris_ray.core.records import FileIdent, TileBatch, TileStats
from ris_ray.raster.dataset import display_path, file_identity, gdal_reason, open_raster
from ris_ray.raster.geo import WGS84, bbox_window_of, tile_bounds, transform_points

__all__ = [
    "BandPlan",
    "Crop",
    "RasterInfo",
    "TileSpec",
    "WindowJob",
    "band_planes",
    "count_tiles",
    "cut_tiles",
    "display_path",
    "plan_windows",
    "probe",
    "read_crop",
    "read_patch",
    "read_tiles",
    "select_bands",
    "stretch_u8",
    "tile_id",
    "tile_offsets",
    "tile_valid_counts",
    "to_rgb8",
]

_SUPPORTED_KINDS = {"u", "i", "f"}  # uint*, int*, float*; not complex or bool
TIFF_DRIVERS = ("GTiff", "COG")
_STRETCH_PERCENTILES = (2.0, 98.0)
_STRETCH_SAMPLE_EDGE = 1024  # longest edge of the decimated read for the stretch


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


# ---------------------------------------------------------------- band logic


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


# ---------------------------------------------------------------- raster I/O


@dataclass(frozen=True)
class RasterInfo:
    """What the planner needs to know about one file, read from its header.

    ``data_blocks`` marks which internal blocks exist (``None``: all do); a
    sparse TIFF of enormous declared size costs only its real blocks.
    ``mask`` says how validity is decided: ``"dataset"`` (GDAL's dataset mask:
    alpha, nodata or an internal mask), ``"fill"`` (no mask declared: pixels
    whose bands are all 0 or all the dtype's maximum are fill). Floats also
    treat NaN as invalid. ``transform`` is ``None`` for files without
    georeferencing; ``crs`` is ``None`` when the file declares none.
    """

    path: str
    width: int
    height: int
    count: int
    dtype: str
    crs: str | None
    transform: tuple[float, float, float, float, float, float] | None
    bands: BandPlan
    mask: str
    stretch: tuple[tuple[float, float], ...] | None
    block_shape: tuple[int, int]
    size_bytes: int
    mtime_ns: int
    data_blocks: np.ndarray | None = None
    #: How :func:`read_tiles` computes a ``"dataset"`` mask: ``"gdal"`` (GDAL's
    #: dataset mask), ``"alpha"`` (uint8 alpha band ``> 0``, read with the data)
    #: or ``"nodata"`` (integer bands; valid where any band of the file differs
    #: from its nodata value, all bands read at once). The last two give GDAL's
    #: mask from the pixels already decoded instead of a second decode.
    mask_rule: str = "gdal"
    nodata: tuple[float, ...] | None = None

    def window_has_data(self, window: Window) -> bool:
        """False when every TIFF block under ``window`` is absent from the file
        (a sparse TIFF): such a window reads as nodata and is never read."""
        if self.data_blocks is None:
            return True
        bh, bw = self.block_shape
        r0, c0 = int(window.row_off) // bh, int(window.col_off) // bw
        r1 = (int(window.row_off + window.height) - 1) // bh
        c1 = (int(window.col_off + window.width) - 1) // bw
        return bool(self.data_blocks[r0 : r1 + 1, c0 : c1 + 1].any())


@dataclass(frozen=True)
class TileSpec:
    """The tiling parameters shared by every task of a run."""

    tile: int
    stride: int
    min_valid: float
    model: str


def _crs_string(crs: Any) -> str | None:
    if crs is None:
        return None
    epsg = crs.to_epsg(confidence_threshold=90) if hasattr(crs, "to_epsg") else None
    return f"EPSG:{epsg}" if epsg else str(crs.to_wkt())


def _valid_mask(
    src: Any,
    info: RasterInfo,
    data: np.ndarray,
    window: Window | None,
    out_shape: tuple[int, int] | None = None,
) -> np.ndarray:
    """Boolean ``(H, W)`` validity of ``data`` (the selected bands, same window)."""
    if info.mask != "fill":
        kw: dict[str, Any] = {"window": window}
        if out_shape is not None:
            kw["out_shape"] = out_shape
            kw["resampling"] = Resampling.nearest
        valid = np.asarray(src.dataset_mask(**kw)) > 0
    elif data.dtype.kind in "ui":
        # fill = all bands 0 or all bands at the dtype's maximum, as bit ops:
        # OR over bands == 0 <=> all 0; AND over bands == max <=> all max
        top = np.iinfo(data.dtype).max
        valid = np.bitwise_or.reduce(data, axis=0) != 0
        valid &= np.bitwise_and.reduce(data, axis=0) != top
    else:
        valid = ~np.all(data == 0, axis=0)
    if data.dtype.kind == "f":
        valid &= ~np.any(np.isnan(data), axis=0)
    return valid


def probe(
    path: str,
    bands: tuple[int, ...] | None = None,
    *,
    require_tiff: bool = True,
    ident: FileIdent | None = None,
) -> RasterInfo:
    """Read a file's header (and, for non-uint8 data, a decimated sample for the
    2-98 % stretch, computed once per file). Raises on unusable files.

    ``ident``: the file's identity when the caller has it (the ingest driver:
    from the listing or its own stat), else it is looked up here (a stat, or
    a HEAD for a store object)."""

    st = ident or _stat(path)
    with open_raster(path) as src:
        return _probe_open(src, path, bands, require_tiff, st)


def _stat(path: str) -> FileIdent:
    """:func:`~ris_ray.raster.dataset.file_identity`; zeros for remote paths without one."""
    return file_identity(path) or FileIdent(0, 0)


def _probe_open(
    src: Any, path: str, bands: tuple[int, ...] | None, require_tiff: bool, st: FileIdent
) -> RasterInfo:
    """:func:`probe` on an already open dataset ``src``."""
    shown = display_path(path)
    if require_tiff and src.driver not in TIFF_DRIVERS:
        raise UnsupportedRasterError(
            f"{shown}: not a TIFF (GDAL reads it as {src.driver}); "
            "convert it with `gdal_translate -of GTiff` or query it with --image"
        )
    dtypes = set(src.dtypes)
    if len(dtypes) != 1:
        raise UnsupportedRasterError(f"{shown}: bands have mixed dtypes {sorted(dtypes)}")
    dtype = src.dtypes[0]
    if np.dtype(dtype).kind not in _SUPPORTED_KINDS:
        raise UnsupportedRasterError(
            f"{shown}: dtype {dtype} is not supported (use uint8/16/32, int or float)"
        )
    try:
        plan = select_bands(src.count, src.colorinterp, bands)
    except UnsupportedRasterError as exc:
        raise UnsupportedRasterError(f"{shown}: {exc}") from None
    flags = [src.mask_flag_enums[b - 1] for b in plan.indexes]
    declared = plan.alpha is not None or any(MaskFlags.all_valid not in f for f in flags)
    transform = None if src.transform.is_identity and src.crs is None else src.transform
    info = RasterInfo(
        path=path,
        width=src.width,
        height=src.height,
        count=src.count,
        dtype=dtype,
        crs=_crs_string(src.crs),
        transform=tuple(transform)[:6] if transform is not None else None,
        bands=plan,
        mask="dataset" if declared else "fill",
        stretch=None,
        block_shape=tuple(src.block_shapes[0]),
        size_bytes=st.size,
        mtime_ns=st.mtime_ns,
        data_blocks=_data_blocks(src, plan.indexes[0]),
        **(_mask_rule(src, plan) if declared else {}),
    )
    if dtype != "uint8":
        info = _with_stretch(src, info)
    return info


def _mask_rule(src: Any, plan: BandPlan) -> dict[str, Any]:
    """``mask_rule``/``nodata`` for :class:`RasterInfo` (see there) from the
    mask flags GDAL reports: per-dataset alpha on uint8 data -> ``"alpha"``;
    every band masked by nodata alone on integer data -> ``"nodata"``;
    anything else (internal masks, floats) stays ``"gdal"``."""
    flags = list(src.mask_flag_enums)
    dtype = np.dtype(src.dtypes[0])
    if plan.alpha is not None and dtype == np.uint8:
        alpha_mask = [MaskFlags.per_dataset, MaskFlags.alpha]
        if all(flags[b - 1] == alpha_mask for b in plan.indexes):
            return {"mask_rule": "alpha"}
    if plan.alpha is None and dtype.kind in "ui" and all(f == [MaskFlags.nodata] for f in flags):
        info = np.iinfo(dtype)
        values = [float(v) for v in src.nodatavals]
        if all(v.is_integer() and info.min <= v <= info.max for v in values):
            return {"mask_rule": "nodata", "nodata": tuple(values)}
    return {}


def _data_blocks(src: Any, band: int) -> np.ndarray | None:
    """Boolean grid of the blocks of ``band`` that exist in the file, or ``None``
    when all do. Costs about 1 us per block and reads no pixels."""
    bh, bw = src.block_shapes[band - 1]
    rows, cols = -(-src.height // bh), -(-src.width // bw)
    if rows * cols > 50_000_000:  # > 400 MB of offsets: do not even look
        return None
    present = np.ones((rows, cols), dtype=bool)
    for j in range(rows):
        for i in range(cols):
            try:
                src.block_size(band, j, i)
            except RasterBlockError:
                present[j, i] = False
    return None if present.all() else present


def _with_stretch(src: Any, info: RasterInfo) -> RasterInfo:
    """Per-band 2-98 % percentiles over valid pixels of a decimated read."""
    scale = max(info.width, info.height) / _STRETCH_SAMPLE_EDGE
    h, w = info.height, info.width
    if scale > 1:
        h, w = max(1, round(h / scale)), max(1, round(w / scale))
    try:
        data = src.read(
            list(info.bands.indexes),
            out_shape=(len(info.bands.indexes), h, w),
            resampling=Resampling.nearest,
        )
        valid = _valid_mask(src, info, data, None, out_shape=(h, w))
    except rasterio.RasterioIOError as exc:
        raise RasterReadError(
            f"{display_path(info.path)}: cannot read pixels for the stretch ({gdal_reason(exc)})"
        ) from None
    stretch = []
    for band in data:
        values = band[valid].astype(np.float64)
        values = values[np.isfinite(values)]
        if values.size == 0:
            stretch.append((0.0, 1.0))
            continue
        lo, hi = np.percentile(values, _STRETCH_PERCENTILES)
        stretch.append((float(lo), float(hi) if hi > lo else float(lo) + 1.0))
    return RasterInfo(**{**info.__dict__, "stretch": tuple(stretch)})


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


def _read_window(info: RasterInfo, window: Window) -> tuple[np.ndarray, np.ndarray]:
    """The selected bands of ``window`` and their validity (as :func:`_valid_mask`).

    With ``mask_rule`` ``"alpha"`` or ``"nodata"`` the bands the mask needs are
    decoded in the same read and the mask is computed here: ``alpha > 0``, or
    ``any_b(band_b != nodata_b)`` over every band of the file (GDAL's rule).
    """
    indexes = list(info.bands.indexes)
    if info.mask_rule == "alpha" and info.bands.alpha is not None:
        extra = [info.bands.alpha]
    elif info.mask_rule == "nodata":
        extra = [b for b in range(1, info.count + 1) if b not in indexes]
    else:
        extra = []
    with open_raster(info.path) as src:
        try:
            data = src.read(indexes + extra, window=window)
            if not extra and info.mask_rule == "gdal":
                return data, _valid_mask(src, info, data, window)
        except rasterio.RasterioIOError as exc:
            first = gdal_reason(exc)
            raise RasterReadError(
                f"{display_path(info.path)}: window col={int(window.col_off)} "
                f"row={int(window.row_off)} {int(window.width)}x{int(window.height)} "
                f"unreadable ({first})"
            ) from None
    if info.mask_rule == "alpha":
        return data[: len(indexes)], data[len(indexes)] > 0
    order = indexes + extra  # nodata: every band is in data, in this order
    nodata = info.nodata or ()
    valid = np.zeros(data.shape[1:], dtype=bool)
    for k, band in enumerate(order):
        if band not in order[:k]:
            valid |= data[k] != data.dtype.type(nodata[band - 1])
    return (data[: len(indexes)] if extra else data), valid


def read_tiles(info: RasterInfo, job: WindowJob, spec: TileSpec) -> tuple[TileBatch, TileStats]:
    """Read one window and cut its tiles.

    Returns the kept tiles as a :class:`~ris_ray.core.records.TileBatch` (``pixels``
    ``(N, 3, T, T)`` uint8 band-first, the embedder lays them out for the
    model; ``thumbnail`` ``None`` each: the embedder actor makes them, see
    :mod:`ris_ray.model.thumbnail`; pixel origins; valid fractions = valid pixels /
    ``T^2``; geo columns; tile ids) and beside it the window's
    :class:`~ris_ray.core.records.TileStats` (planned, below ``--min-valid``, kept).
    """
    tile, stride = spec.tile, spec.stride
    window = job.window(tile, stride)
    data, valid = _read_window(info, window)
    planes = band_planes(data, valid, info.stretch)
    fracs = tile_valid_counts(valid, job.n_rows, job.n_cols, tile, stride) / float(tile * tile)
    gi, gj = np.nonzero(fracs >= spec.min_valid)  # row-major, as the grid is walked
    rows = gi * stride + int(window.row_off)
    cols = gj * stride + int(window.col_off)
    n = int(gi.size)
    batch = TileBatch(
        tile_id=np.array(
            [
                tile_id(info.path, r, c, tile, stride, spec.model)
                for r, c in zip(rows.tolist(), cols.tolist())
            ],
            dtype=object,
        ),
        source=np.array([display_path(info.path)] * n, dtype=object),
        row=rows.astype(np.int32),
        col=cols.astype(np.int32),
        width=np.full(n, tile, dtype=np.int32),
        height=np.full(n, tile, dtype=np.int32),
        valid_fraction=fracs[gi, gj].astype(np.float32),
        thumbnail=np.full(n, None, dtype=object),  # the embedder actor makes them
        crs=info.crs,
        pixels=cut_tiles(planes, gi, gj, tile, stride),
        **_geo_columns(info, rows, cols, tile),
    )
    return batch, TileStats(n_planned=job.n_tiles, n_low_valid=job.n_tiles - n, n_tiles=n)


def _geo_columns(
    info: RasterInfo, rows: np.ndarray, cols: np.ndarray, tile: int
) -> dict[str, np.ndarray]:
    """Tile bounds in the file's CRS and tile centres in WGS84 (NaN where unknown).

    With the affine ``x = a*col + b*row + c``, ``y = d*col + e*row + f``: bounds
    are the envelope of all four corners of the ``T x T`` window
    (:func:`ris_ray.raster.geo.tile_bounds`, right for rotated and skewed grids), the
    centre is ``(col + T/2, row + T/2)``, taken to WGS84 by
    :func:`ris_ray.raster.geo.transform_points`.
    """
    n = rows.size
    nan = np.full(n, np.nan)
    names = ("minx", "miny", "maxx", "maxy", "lon", "lat")
    if info.transform is None or n == 0:
        return {name: nan.copy() for name in names}
    cols_f, rows_f = cols.astype(np.float64), rows.astype(np.float64)
    minx, miny, maxx, maxy = tile_bounds(info.transform, rows_f, cols_f, tile)
    a, b, c, d, e, f = info.transform
    xc = a * (cols_f + tile / 2.0) + b * (rows_f + tile / 2.0) + c
    yc = d * (cols_f + tile / 2.0) + e * (rows_f + tile / 2.0) + f
    out = {"minx": minx, "miny": miny, "maxx": maxx, "maxy": maxy, "lon": nan, "lat": nan.copy()}
    if info.crs is not None:
        out["lon"], out["lat"] = transform_points(info.crs, WGS84, list(xc), list(yc))
    return out


def read_patch(
    path: str,
    window: tuple[int, int, int, int] | None,
    size: int,
    bands: tuple[int, ...] | None = None,
) -> np.ndarray:
    """Read ``window`` = ``(col, row, width, height)`` of any GDAL-readable image
    (GeoTIFF, PNG, JPEG; the whole image when ``None``) resampled to
    ``size x size`` and converted with the same band rules as ingest.

    Returns ``(size, size, 3)`` uint8. Only the requested window is read, at
    the output resolution, so memory stays ``O(size^2)`` for any input.
    """
    return read_crop(path, size, window=window, bands=bands).pixels


@dataclass(frozen=True)
class Crop:
    """A resampled crop of an image: pixels, its pixel window ``(col, row, w, h)``
    (``None``: the whole image) and, for a ``bbox`` crop, the bbox centre in WGS84."""

    pixels: np.ndarray
    window: tuple[int, int, int, int] | None
    centre: tuple[float, float] | None = None


def read_crop(
    path: str,
    size: int,
    *,
    window: tuple[int, int, int, int] | None = None,
    bbox: tuple[float, float, float, float] | None = None,
    bands: tuple[int, ...] | None = None,
) -> Crop:
    """:func:`read_patch` of a pixel ``window`` or of a ``bbox`` in the file's
    CRS (see :func:`ris_ray.raster.geo.bbox_window_of`), opening the file once."""
    st = _stat(path)
    with open_raster(path) as src:
        info = _probe_open(src, path, bands, False, st)
        centre = None
        if bbox is not None:
            window, centre = bbox_window_of(src, path, bbox)
        win = _checked_window(path, window, info)
        shape = (len(info.bands.indexes), size, size)
        data = src.read(
            list(info.bands.indexes),
            window=win,
            out_shape=shape,
            resampling=Resampling.bilinear,
        )
        valid = _valid_mask(src, info, data, win, out_shape=(size, size))
    return Crop(to_rgb8(data, valid, info.stretch), window, centre)


def _checked_window(
    path: str, window: tuple[int, int, int, int] | None, info: RasterInfo
) -> Window:
    if window is None:
        return Window(0, 0, info.width, info.height)
    col, row, w, h = window
    win = Window(col, row, w, h)
    full = Window(0, 0, info.width, info.height)
    try:
        inside = w > 0 and h > 0 and rasterio.windows.intersection(win, full) == win
    except WindowError:  # no overlap at all
        inside = False
    if not inside:
        raise RasterReadError(
            f"{path}: --window {col},{row},{w},{h} is not inside the "
            f"{info.width}x{info.height} image"
        )
    return win
