"""Windowed reads of a raster, each opening the file itself so it can run in
any Ray worker: :func:`probe` (header + a decimated read for the stretch,
into a :class:`RasterInfo`), :func:`read_tiles` (one window in, a columnar
batch of tiles out) and :func:`read_crop` / :func:`read_patch` (a resampled
crop, for queries). The arithmetic they use is :mod:`ris_ray.raster.tiling`,
the band rules :mod:`ris_ray.raster.bands`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import rasterio
import rasterio.windows
from rasterio.enums import MaskFlags, Resampling
from rasterio.errors import RasterBlockError, WindowError
from rasterio.windows import Window

from ris_ray.core.errors import RasterReadError, UnsupportedRasterError
from ris_ray.core.records import FileIdent, TileBatch, TileStats
from ris_ray.raster.bands import BandPlan, band_planes, select_bands, to_rgb8
from ris_ray.raster.dataset import display_path, file_identity, gdal_reason, open_raster
from ris_ray.raster.geo import WGS84, bbox_window_of, tile_bounds, transform_points
from ris_ray.raster.tiling import TileSpec, WindowJob, cut_tiles, tile_id, tile_valid_counts

__all__ = [
    "Crop",
    "RasterInfo",
    "probe",
    "read_crop",
    "read_patch",
    "read_tiles",
]

_SUPPORTED_KINDS = {"u", "i", "f"}  # uint*, int*, float*; not complex or bool
TIFF_DRIVERS = ("GTiff", "COG")
_STRETCH_PERCENTILES = (2.0, 98.0)
_STRETCH_SAMPLE_EDGE = 1024  # longest edge of the decimated read for the stretch


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
