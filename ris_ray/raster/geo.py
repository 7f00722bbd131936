"""Places on the ground: parsing coordinates, CRS transforms, tile polygons.

Every transform goes through :func:`rasterio.warp.transform` (PROJ), in
"traditional GIS order": x/lon first, y/lat second, also for EPSG:4326.
Tile bounds (``minx..maxy``) are stored in each file's own CRS (the row's
``crs`` column); lon/lat are WGS84 tile centres.

Lance filter strings are only ever built from validated numbers and from
values read back from the dataset, quoted with :func:`sql_literal`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import rasterio.warp
import rasterio.windows
from rasterio._err import CPLE_BaseError
from rasterio.crs import CRS
from rasterio.errors import CRSError, RasterioError

from ris_ray.core.errors import InputError
from ris_ray.core.location import Location
from ris_ray.core.records import BOUNDS_FIELDS
from ris_ray.core.sql import sql_in, sql_literal
from ris_ray.raster.dataset import open_raster

__all__ = [
    "WGS84",
    "Ring",
    "bbox_window",
    "bbox_window_of",
    "check_crs",
    "fmt_coords",
    "parse_bbox",
    "parse_lonlat",
    "parse_xy",
    "ring_to_geometry",
    "source_footprints",
    "tile_bounds",
    "tile_corners",
    "tile_rings",
    "tiles_at",
    "transform_points",
]

WGS84 = "EPSG:4326"
#: A closed polygon ring of (lon, lat) pairs, counter-clockwise (RFC 7946).
Ring = list[tuple[float, float]]
_GEO_COLUMNS = BOUNDS_FIELDS


# ------------------------------------------------------------------ parsing


def fmt_coords(values: Iterable[float]) -> str:
    """Numbers as the user would type them: ``486700,5208900`` (12 significant digits)."""
    return ",".join(f"{float(v):.12g}" for v in values)


def parse_xy(text: str, option: str) -> tuple[float, float]:
    """``"X,Y"`` -> two finite floats, or :class:`InputError` naming ``option``."""
    try:
        x, y = (float(v) for v in text.split(","))
    except ValueError:
        raise InputError(f"{option} {text!r}: expected two numbers X,Y") from None
    if not (math.isfinite(x) and math.isfinite(y)):
        raise InputError(f"{option} {text!r}: coordinates must be finite numbers")
    return x, y


def parse_lonlat(text: str, option: str = "--lonlat") -> tuple[float, float]:
    """``"LON,LAT"`` in degrees: :func:`parse_xy` with ``-180 <= LON <= 180`` and
    ``-90 <= LAT <= 90`` checked."""
    lon, lat = parse_xy(text, option)
    if not (-180.0 <= lon <= 180.0 and -90.0 <= lat <= 90.0):
        raise InputError(
            f"{option} {text!r}: longitude must be within -180..180 and latitude within "
            "-90..90 degrees (LON,LAT order)"
        )
    return lon, lat


def parse_bbox(text: str, option: str) -> tuple[float, float, float, float]:
    """``"MINX,MINY,MAXX,MAXY"`` -> four finite floats (``MINY < MAXY`` checked)."""
    try:
        a, b, c, d = (float(v) for v in text.split(","))
    except ValueError:
        raise InputError(f"{option} {text!r}: expected four numbers MINX,MINY,MAXX,MAXY") from None
    if not all(math.isfinite(v) for v in (a, b, c, d)):
        raise InputError(f"{option} {text!r}: coordinates must be finite numbers")
    if b >= d:
        raise InputError(f"{option} {text!r}: the second number (south/miny) must be below the 4th")
    return a, b, c, d


def check_crs(text: str, option: str = "--crs") -> str:
    """Validate a CRS given as ``EPSG:n``, WKT or PROJ text; return it unchanged."""
    try:
        with rasterio.Env():  # GDAL's errors go to Python, not "ERROR 1:" on stderr
            CRS.from_user_input(text)
    except CRSError:
        raise InputError(f"{option} {text!r}: not a CRS PROJ knows (use e.g. EPSG:32633)") from None
    return text


# --------------------------------------------------------------- transforms


def transform_points(
    src_crs: str, dst_crs: str, xs: Sequence[float], ys: Sequence[float]
) -> tuple[np.ndarray, np.ndarray]:
    """Transform points between CRSs (x/lon first); returns float64 arrays."""
    if not len(xs):
        return np.zeros(0), np.zeros(0)
    if src_crs == dst_crs:
        return np.asarray(xs, np.float64), np.asarray(ys, np.float64)
    try:
        with rasterio.Env():
            tx, ty = rasterio.warp.transform(src_crs, dst_crs, list(xs), list(ys))
    except (CPLE_BaseError, CRSError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"cannot transform points from {src_crs} to {dst_crs} ({first})") from None
    return np.asarray(tx, np.float64), np.asarray(ty, np.float64)


def _ccw(ring: Ring) -> Ring:
    area = sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in itertools.pairwise(ring))
    return ring if area >= 0 else ring[::-1]


def tile_corners(
    transform: Sequence[float], rows: Any, cols: Any, width: Any, height: Any
) -> tuple[np.ndarray, np.ndarray]:
    """The four corners of pixel windows in the file's CRS, as ``(xs, ys)`` of
    shape ``(n, 4)`` in the order (row, col), (row, col+w), (row+h, col+w),
    (row+h, col).

    With the geotransform ``(a, b, c, d, e, f)`` (rasterio's ``Affine`` order),
    pixel corner ``(col, row)`` lies at ``x = a*col + b*row + c``,
    ``y = d*col + e*row + f``. Rotated and skewed grids (``b``, ``d`` != 0)
    give a parallelogram, not an axis-aligned box.
    """
    a, b, c, d, e, f = (float(v) for v in tuple(transform)[:6])
    r = np.asarray(rows, np.float64).reshape(-1, 1)
    q = np.asarray(cols, np.float64).reshape(-1, 1)
    w = np.broadcast_to(np.asarray(width, np.float64), r.shape[:1]).reshape(-1, 1)
    h = np.broadcast_to(np.asarray(height, np.float64), r.shape[:1]).reshape(-1, 1)
    cc = np.hstack([q, q + w, q + w, q])
    rr = np.hstack([r, r, r + h, r + h])
    return a * cc + b * rr + c, d * cc + e * rr + f


def tile_bounds(
    transform: Sequence[float], rows: Any, cols: Any, width: Any, height: Any | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(minx, miny, maxx, maxy)`` of pixel windows: the envelope of all four
    corners (:func:`tile_corners`), so rotated and skewed grids are covered:
    ``minx = min(x_k)``, ``maxx = max(x_k)`` (same for y) over the corners k.
    ``height`` defaults to ``width`` (square tiles)."""
    xs, ys = tile_corners(transform, rows, cols, width, width if height is None else height)
    return xs.min(axis=1), ys.min(axis=1), xs.max(axis=1), ys.max(axis=1)


def _source_transform(source: str) -> tuple[float, ...] | None:
    """The geotransform of a local, readable ``source``; ``None`` otherwise
    (remote sources are not opened just to draw an outline)."""
    where = Location.parse(source)
    if where.is_remote:
        return None
    try:
        with open_raster(where) as src:
            return tuple(src.transform)[:6]
    except (OSError, RasterioError):
        return None


def _true_corners(
    r: dict[str, Any], transforms: dict[str, tuple[float, ...] | None]
) -> tuple[list[float], list[float]]:
    """The tile's four corners in its CRS: from its file's geotransform when that
    is rotated or skewed and still matches the stored bounds, else the bbox."""
    box = (
        [r["minx"], r["maxx"], r["maxx"], r["minx"]],
        [r["miny"], r["miny"], r["maxy"], r["maxy"]],
    )
    source = r.get("source")
    if not source or r.get("row") is None or r.get("col") is None or not r.get("width"):
        return box
    if source not in transforms:
        transforms[source] = _source_transform(source)
    t = transforms[source]
    if t is None or (t[1] == 0.0 and t[3] == 0.0):
        return box  # north-up: the bbox is the outline
    args = (t, r["row"], r["col"], r["width"], r.get("height") or r["width"])
    stored = np.array([r["minx"], r["miny"], r["maxx"], r["maxy"]], np.float64)
    now = np.array([v[0] for v in tile_bounds(*args)])
    if not np.allclose(now, stored, rtol=0.0, atol=1e-6 * max(1.0, float(np.abs(stored).max()))):
        return box  # the file changed since it was ingested
    xs, ys = tile_corners(*args)
    return [float(v) for v in xs[0]], [float(v) for v in ys[0]]


def tile_rings(rows: Sequence[dict[str, Any]]) -> list[Ring | None]:
    """WGS84 outline of each row (``crs``, ``minx..maxy``; ``source``, ``row``,
    ``col``, ``width``, ``height`` when known).

    The outline is the tile's true four corners: for a rotated or skewed grid
    they come from the source file's geotransform (read from its header when
    the file is local and still matches the stored bounds), otherwise from the
    stored bounds, which are exact for north-up grids. The corners are
    transformed with PROJ (batched per CRS), so the ring follows the tile even
    when the grid is not north-up in lon/lat. Rows without a CRS or bounds
    give ``None``.
    """
    out: list[Ring | None] = [None] * len(rows)
    by_crs: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        if r.get("crs") and all(r.get(c) is not None for c in _GEO_COLUMNS[1:]):
            by_crs.setdefault(r["crs"], []).append(i)
    transforms: dict[str, tuple[float, ...] | None] = {}
    for crs, idx in by_crs.items():
        xs: list[float] = []
        ys: list[float] = []
        for i in idx:
            cx, cy = _true_corners(rows[i], transforms)
            xs += cx
            ys += cy
        lon, lat = transform_points(crs, WGS84, xs, ys)
        for j, i in enumerate(idx):
            corners = [(float(lon[4 * j + c]), float(lat[4 * j + c])) for c in range(4)]
            if all(math.isfinite(v) for p in corners for v in p):
                out[i] = _ccw([*corners, corners[0]])
    return out


def ring_to_geometry(ring: Ring | None, digits: int = 8) -> dict[str, Any] | None:
    """A GeoJSON Polygon for ``ring`` (``None`` stays ``None``)."""
    if ring is None:
        return None
    return {
        "type": "Polygon",
        "coordinates": [[[round(x, digits), round(y, digits)] for x, y in ring]],
    }


# ------------------------------------------------------------ dataset lookups


def _distinct(ds: Any, column: str, where: str | None = None) -> list[str]:
    values = ds.to_table(columns=[column], filter=where).column(column).unique().to_pylist()
    return sorted(v for v in values if v is not None)


def tiles_at(
    ds: Any, x: float, y: float, crs: str, columns: Sequence[str], limit: int = 50
) -> list[dict[str, Any]]:
    """Rows whose bounds contain the point ``(x, y)`` given in ``crs``.

    The point is transformed into each CRS present in the dataset and matched
    against that CRS's rows (bounds inclusive). Each row gains ``_centre_d``,
    the distance from the point to the tile centre in the row's CRS units.
    """
    found: list[dict[str, Any]] = []
    for ds_crs in _distinct(ds, "crs"):
        px, py = transform_points(crs, ds_crs, [x], [y])
        tx, ty = float(px[0]), float(py[0])
        if not (math.isfinite(tx) and math.isfinite(ty)):
            continue
        where = (
            f"crs = {sql_literal(ds_crs)} AND minx <= {tx!r} AND maxx >= {tx!r} "
            f"AND miny <= {ty!r} AND maxy >= {ty!r}"
        )
        cols = list(dict.fromkeys([*columns, *_GEO_COLUMNS]))
        for r in ds.to_table(columns=cols, filter=where, limit=limit).to_pylist():
            r["_centre_d"] = math.hypot(
                (r["minx"] + r["maxx"]) / 2 - tx, (r["miny"] + r["maxy"]) / 2 - ty
            )
            found.append(r)
    return found


def source_footprints(ds: Any, sources: Iterable[str] | None = None) -> dict[str, Ring]:
    """WGS84 outline of the tiled extent of each georeferenced source.

    The extent is the min/max of the source's tile bounds in its own CRS,
    transformed corner by corner (like :func:`tile_rings`). ``sources`` limits
    the result to those files.
    """
    where = None
    wanted = sorted(set(sources)) if sources is not None else None
    if wanted is not None:
        if not wanted:
            return {}
        where = sql_in("source", wanted)
    table = ds.to_table(columns=["source", *_GEO_COLUMNS], filter=where)
    table = table.filter(table.column("minx").is_valid())
    agg = table.group_by(["source", "crs"]).aggregate(
        [("minx", "min"), ("miny", "min"), ("maxx", "max"), ("maxy", "max")]
    )
    rows = [
        {
            "source": r["source"],
            "crs": r["crs"],
            "minx": r["minx_min"],
            "miny": r["miny_min"],
            "maxx": r["maxx_max"],
            "maxy": r["maxy_max"],
        }
        for r in agg.to_pylist()
    ]
    rings = tile_rings(rows)
    return {r["source"]: ring for r, ring in zip(rows, rings) if ring is not None}


# ------------------------------------------------------------------ rasters


def bbox_window(
    path: str, bbox: tuple[float, float, float, float]
) -> tuple[tuple[int, int, int, int], tuple[float, float] | None]:
    """Pixel window ``(col, row, width, height)`` covering ``bbox`` (in the file's
    CRS), rounded outwards to whole pixels; plus the bbox centre in WGS84.

    Raises :class:`InputError` when the file has no georeferencing or the box
    is not inside the image.
    """
    with open_raster(path) as src:
        return bbox_window_of(src, path, bbox)


def bbox_window_of(
    src: Any, path: str, bbox: tuple[float, float, float, float]
) -> tuple[tuple[int, int, int, int], tuple[float, float] | None]:
    """:func:`bbox_window` for ``src``, the rasterio dataset of ``path``, already open."""
    minx, miny, maxx, maxy = bbox
    text = fmt_coords(bbox)
    if maxx <= minx:
        raise InputError(f"--bbox {text}: MAXX must be greater than MINX")
    if src.crs is None or src.transform.is_identity:
        raise InputError(f"--bbox: {path} has no georeferencing; use --window COL,ROW,WIDTH,HEIGHT")
    win = rasterio.windows.from_bounds(minx, miny, maxx, maxy, transform=src.transform)
    eps = 1e-6
    c0 = math.floor(win.col_off + eps)
    r0 = math.floor(win.row_off + eps)
    c1 = math.ceil(win.col_off + win.width - eps)
    r1 = math.ceil(win.row_off + win.height - eps)
    if c0 < 0 or r0 < 0 or c1 > src.width or r1 > src.height or c1 <= c0 or r1 <= r0:
        b = src.bounds
        raise InputError(
            f"--bbox {text} is not inside {path} (bounds "
            f"{fmt_coords((b.left, b.bottom, b.right, b.top))} in {src.crs.to_string()})"
        )
    lon, lat = transform_points(src.crs.to_wkt(), WGS84, [(minx + maxx) / 2], [(miny + maxy) / 2])
    centre = (float(lon[0]), float(lat[0]))
    return (c0, r0, c1 - c0, r1 - r0), centre
