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
from rasterio.crs import CRS
from rasterio.errors import CRSError

from ris_ray.errors import InputError
from ris_ray.raster import open_raster
from ris_ray.records import BOUNDS_FIELDS
from ris_ray.sql import sql_in, sql_literal

__all__ = [
    "WGS84",
    "Ring",
    "bbox_window",
    "bbox_window_of",
    "check_crs",
    "fmt_coords",
    "parse_bbox",
    "parse_xy",
    "ring_to_geometry",
    "source_footprints",
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
    tx, ty = rasterio.warp.transform(src_crs, dst_crs, list(xs), list(ys))
    return np.asarray(tx, np.float64), np.asarray(ty, np.float64)


def _ccw(ring: Ring) -> Ring:
    area = sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in itertools.pairwise(ring))
    return ring if area >= 0 else ring[::-1]


def tile_rings(rows: Sequence[dict[str, Any]]) -> list[Ring | None]:
    """WGS84 outline of each row's bounds (``crs``, ``minx..maxy``).

    The four corners are transformed with PROJ (batched per CRS), so the ring
    follows the tile even when the file's grid is not north-up in lon/lat.
    Rows without a CRS or bounds give ``None``.
    """
    out: list[Ring | None] = [None] * len(rows)
    by_crs: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        if r.get("crs") and all(r.get(c) is not None for c in _GEO_COLUMNS[1:]):
            by_crs.setdefault(r["crs"], []).append(i)
    for crs, idx in by_crs.items():
        xs: list[float] = []
        ys: list[float] = []
        for i in idx:
            r = rows[i]
            xs += [r["minx"], r["maxx"], r["maxx"], r["minx"]]
            ys += [r["miny"], r["miny"], r["maxy"], r["maxy"]]
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
