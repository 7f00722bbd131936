"""Pure geo helpers: parsing, quoting for Lance filters, tile outlines, bbox windows."""

from __future__ import annotations

import itertools
from pathlib import Path

import lance
import numpy as np
import pyarrow as pa
import pytest
import rasterio.warp

from ris_ray.core.errors import InputError, QueryError
from ris_ray.core.sql import sql_literal
from ris_ray.raster.geo import bbox_window, parse_bbox, parse_xy, tile_rings
from ris_ray.sample import landscape, write_geotiff
from ris_ray.search.filters import SearchFilter


def test_parsing() -> None:
    assert parse_xy("-99.5,47", "--lonlat") == (-99.5, 47.0)
    assert parse_bbox("1,2,3,4", "--bbox") == (1.0, 2.0, 3.0, 4.0)
    for bad in ("1", "1,2,3", "a,b", "nan,1", "inf,2"):
        with pytest.raises(InputError, match="--lonlat"):
            parse_xy(bad, "--lonlat")
    with pytest.raises(InputError, match="below"):
        parse_bbox("0,5,1,4", "--bbox")


def test_quoted_sources_never_break_the_filter(tmp_path: Path) -> None:
    names = ["/d/it's.tif", "/d/a\\b.tif", "/d/x%_y.tif", "/d/plain.tif"]
    ds = lance.write_dataset(pa.table({"source": names}), str(tmp_path / "s.lance"))
    for name in names:
        sql = SearchFilter(sources=(name,)).to_sql(ds)
        assert sql is not None
        assert ds.to_table(filter=sql).column("source").to_pylist() == [name]
        # Excluding it leaves the others.
        sql = SearchFilter(exclude_sources=(name,)).to_sql(ds)
        assert sorted(ds.to_table(filter=sql).column("source").to_pylist()) == sorted(
            n for n in names if n != name
        )
    # "%" and "_" are literal characters, not LIKE wildcards; "*" is the glob.
    sql = SearchFilter(sources=("x%_y*",)).to_sql(ds)
    assert ds.to_table(filter=sql).column("source").to_pylist() == ["/d/x%_y.tif"]
    with pytest.raises(QueryError, match="matches none"):
        SearchFilter(sources=("%",)).to_sql(ds)
    assert sql_literal("it's") == "'it''s'"
    with pytest.raises(InputError, match="20 lowercase hex"):
        SearchFilter(exclude_ids=("') OR ('1",))


@pytest.mark.parametrize("crs", ["EPSG:32633", "EPSG:32753", "EPSG:3857"])
def test_tile_rings_follow_the_corners(crs: str) -> None:
    x0, y0 = (500000.0, 8500000.0) if crs == "EPSG:32753" else (500000.0, 4000000.0)
    if crs == "EPSG:3857":
        x0, y0 = -11000000.0, 5900000.0
    row = {"crs": crs, "minx": x0, "miny": y0, "maxx": x0 + 1000.0, "maxy": y0 + 500.0}
    ring = tile_rings([row, {"crs": None, "minx": None, "miny": None, "maxx": None, "maxy": None}])
    assert ring[1] is None
    r = ring[0]
    assert r is not None and len(r) == 5 and r[0] == r[-1]
    area = sum(a[0] * b[1] - b[0] * a[1] for a, b in itertools.pairwise(r))
    assert area > 0  # counter-clockwise
    xs, ys = rasterio.warp.transform("EPSG:4326", crs, [p[0] for p in r], [p[1] for p in r])
    assert sorted(set(np.round(xs, 3))) == [x0, x0 + 1000.0]
    assert sorted(set(np.round(ys, 3))) == [y0, y0 + 500.0]


def test_bbox_window(tmp_path: Path) -> None:
    path = write_geotiff(
        tmp_path / "g.tif", landscape(100, 200, seed=0), origin=(1000.0, 2000.0), res=0.5
    )
    window, centre = bbox_window(str(path), (1010.0, 1980.0, 1020.0, 1990.0))
    assert window == (20, 20, 20, 20)
    assert centre is not None
    (lon,), (lat,) = rasterio.warp.transform("EPSG:32633", "EPSG:4326", [1015.0], [1985.0])
    assert centre == pytest.approx((lon, lat))
    # Partial pixels round outwards.
    assert bbox_window(str(path), (1010.2, 1980.2, 1019.9, 1989.9))[0] == (20, 20, 20, 20)
    assert bbox_window(str(path), (1000.0, 1950.0, 1100.0, 2000.0))[0] == (0, 0, 200, 100)
    with pytest.raises(InputError, match="not inside"):
        bbox_window(str(path), (990.0, 1980.0, 1020.0, 1990.0))
    with pytest.raises(InputError, match="MAXX"):
        bbox_window(str(path), (1020.0, 1980.0, 1010.0, 1990.0))


ROTATED = (0.4, 0.3, 500000.0, 0.3, -0.4, 5000000.0)  # rotated grid (a, b, c, d, e, f)
SKEWED = (0.5, 0.2, 500000.0, 0.0, -0.5, 5000000.0)  # sheared: rows lean east


def _write_affine(path: Path, transform: tuple[float, ...]) -> Path:
    from affine import Affine

    data = landscape(256, 512, seed=9)
    profile = {
        "driver": "GTiff", "width": 512, "height": 256, "count": 3, "dtype": "uint8",
        "crs": "EPSG:32633", "transform": Affine(*transform),
    }  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path


@pytest.mark.parametrize("transform", [ROTATED, SKEWED], ids=["rotated", "skewed"])
def test_tile_bounds_and_outline_follow_rotated_and_skewed_grids(
    tmp_path: Path, transform: tuple[float, ...]
) -> None:
    from ris_ray.raster.geo import tile_bounds, tile_corners
    from ris_ray.raster.reading import probe, read_tiles
    from ris_ray.raster.tiling import TileSpec, WindowJob

    a, b, c, d, e, f = transform
    path = str(_write_affine(tmp_path / "grid.tif", transform))
    # Pure: the envelope of the four corners x = a*col + b*row + c, y = d*col + e*row + f.
    corners = [(col, row) for col, row in ((0, 0), (256, 0), (256, 256), (0, 256))]
    xs = [a * col + b * row + c for col, row in corners]
    ys = [d * col + e * row + f for col, row in corners]
    got = [float(v[0]) for v in tile_bounds(transform, [0], [0], 256)]
    assert got == pytest.approx([min(xs), min(ys), max(xs), max(ys)])
    if transform == ROTATED:  # the numbers of issue 14
        assert got == pytest.approx([500000.0, 4999897.6, 500179.2, 5000076.8])
    # Stored bounds (what ingest writes) are that envelope, for every tile.
    batch, _ = read_tiles(probe(path), WindowJob(0, 0, 1, 2), TileSpec(256, 256, 0.0, "m"))
    assert batch.col.tolist() == [0, 256]
    want = tile_bounds(transform, batch.row, batch.col, 256)
    for name, values in zip(("minx", "miny", "maxx", "maxy"), want):
        assert np.asarray(getattr(batch, name)).tolist() == pytest.approx(values.tolist())
    # GeoJSON outlines are the true rotated/skewed corners, not the envelope.
    rows = [
        {
            "crs": "EPSG:32633", "source": path, "row": 0, "col": int(col), "width": 256,
            "height": 256, "minx": float(batch.minx[i]), "miny": float(batch.miny[i]),
            "maxx": float(batch.maxx[i]), "maxy": float(batch.maxy[i]),
        }
        for i, col in enumerate(batch.col)
    ]  # fmt: skip
    rings = tile_rings(rows)
    for row, ring in zip(rows, rings):
        assert ring is not None and len(ring) == 5
        cx, cy = tile_corners(transform, [row["row"]], [row["col"]], 256, 256)
        lon, lat = rasterio.warp.transform("EPSG:32633", "EPSG:4326", cx[0], cy[0])
        got_xy = np.array(sorted(ring[:4]))
        assert np.allclose(got_xy, np.array(sorted(zip(lon, lat))), rtol=0, atol=1e-9)
    # Without the file (moved, remote), the stored envelope is the fallback outline.
    moved = [{**r, "source": str(tmp_path / "gone.tif")} for r in rows]
    ring = tile_rings(moved)[0]
    assert ring is not None
    ex = [rows[0]["minx"], rows[0]["maxx"]]
    ey = [rows[0]["miny"], rows[0]["maxy"]]
    lon, lat = rasterio.warp.transform("EPSG:32633", "EPSG:4326", ex, ey)
    assert min(p[0] for p in ring) == pytest.approx(min(lon))
