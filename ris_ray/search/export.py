"""Results as files GIS tools open: GeoJSON (RFC 7946) and CSV.

GeoJSON: a ``FeatureCollection`` with one ``Feature`` per tile; the geometry
is the tile outline in WGS84 lon/lat (its four corners transformed from the
file's CRS, see :func:`ris_ray.raster.geo.tile_rings`), ``null`` for tiles without
georeferencing. RFC 7946 fixes the CRS to WGS84; we also write the legacy
``crs`` member naming OGC CRS84 (what GDAL itself writes), which GDAL/QGIS
read and RFC 7946 readers ignore.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ris_ray.core.errors import InputError
from ris_ray.core.records import BOUNDS_FIELDS, TILE_REF_FIELDS
from ris_ray.raster.geo import ring_to_geometry, tile_rings
from ris_ray.search.diff import DiffResult
from ris_ray.search.results import QueryResult

__all__ = [
    "CHANGE_FIELDS",
    "CRS84",
    "NEIGHBOUR_FIELDS",
    "changes_csv",
    "changes_geojson",
    "feature_collection",
    "neighbours_csv",
    "neighbours_geojson",
    "rows_csv",
    "write_text",
]

CRS84 = "urn:ogc:def:crs:OGC:1.3:CRS84"
#: Columns of ``--csv`` (and properties of each GeoJSON feature, minus the bounds).
NEIGHBOUR_FIELDS = ("rank", "distance", *TILE_REF_FIELDS)
_GEOJSON_PROPS = ("rank", "distance", "tile_id", "source", "row", "col", "lon", "lat")


def feature_collection(
    rows: Sequence[dict[str, Any]], properties: Sequence[str], name: str | None = None
) -> dict[str, Any]:
    """A GeoJSON FeatureCollection: one feature per row (``crs``/``minx..maxy``
    give the outline), with the named ``properties`` copied from the row."""
    rings = tile_rings(rows)
    features = [
        {
            "type": "Feature",
            "geometry": ring_to_geometry(ring),
            "properties": {p: row.get(p) for p in properties},
        }
        for row, ring in zip(rows, rings)
    ]
    fc: dict[str, Any] = {"type": "FeatureCollection"}
    if name:
        fc["name"] = name
    fc["crs"] = {"type": "name", "properties": {"name": CRS84}}
    fc["features"] = features
    return fc


def _neighbour_rows(result: QueryResult) -> list[dict[str, Any]]:
    return [
        {f: getattr(n, f) for f in NEIGHBOUR_FIELDS} | {"distance": float(n.distance)}
        for n in result.neighbours
    ]


def neighbours_geojson(result: QueryResult) -> dict[str, Any]:
    """The neighbours of ``result`` as a FeatureCollection (properties: rank,
    distance, tile_id, source, row, col, lon, lat)."""
    return feature_collection(
        _neighbour_rows(result), _GEOJSON_PROPS, name=f"ris query {result.query.label}"
    )


def rows_csv(rows: Sequence[dict[str, Any]], fields: Sequence[str]) -> str:
    """CSV text with a header row; ``None`` becomes an empty cell."""
    buf = io.StringIO()
    writer = csv.DictWriter(
        buf, fieldnames=list(fields), extrasaction="ignore", lineterminator="\n"
    )
    writer.writeheader()
    for row in rows:
        writer.writerow({f: "" if row.get(f) is None else row[f] for f in fields})
    return buf.getvalue()


def neighbours_csv(result: QueryResult) -> str:
    """The neighbours of ``result`` as CSV (columns :data:`NEIGHBOUR_FIELDS`)."""
    return rows_csv(_neighbour_rows(result), NEIGHBOUR_FIELDS)


def write_text(path: Path | str, text: str | dict[str, Any], option: str) -> Path:
    """Write ``text`` (a dict is written as JSON) to ``path``; :class:`InputError`
    naming ``option`` when the file cannot be written."""
    p = Path(path)
    data = json.dumps(text, indent=1) + "\n" if isinstance(text, dict) else text
    try:
        p.write_text(data, encoding="utf-8")
    except OSError as exc:
        raise InputError(f"{option} {p}: cannot write ({exc.strerror or exc})") from None
    return p


#: Columns of ``ris diff --csv`` (one row per paired location).
CHANGE_FIELDS = (
    "rank",
    "distance",
    "before_tile_id",
    "after_tile_id",
    "row",
    "col",
    "after_row",
    "after_col",
    "lon",
    "lat",
    "offset",
    *BOUNDS_FIELDS,
)
_CHANGE_PROPS = (
    "rank",
    "distance",
    "before_tile_id",
    "after_tile_id",
    "before_source",
    "after_source",
    "row",
    "col",
    "lon",
    "lat",
)


def changes_geojson(result: DiffResult, top: int) -> dict[str, Any]:
    """The ``top`` most changed locations of a diff as a FeatureCollection
    (outline of the before tile; properties rank, distance, both tile ids and
    sources, row, col, lon, lat)."""
    rows = [
        c.to_dict() | {"before_source": result.before, "after_source": result.after}
        for c in result.top(top)
    ]
    return feature_collection(rows, _CHANGE_PROPS, name="ris diff")


def changes_csv(result: DiffResult) -> str:
    """Every paired location of a diff as CSV (columns :data:`CHANGE_FIELDS`)."""
    return rows_csv([c.to_dict() for c in result.changes], CHANGE_FIELDS)
