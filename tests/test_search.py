"""Analyst queries: by place, by georeferenced crop, several examples, filters,
GIS export, overview plot. Checked against numpy brute force over all rows."""

from __future__ import annotations

import csv
import fnmatch
import io
import itertools
import json
import math
import shutil
import subprocess
from pathlib import Path
from typing import Any

import lance
import numpy as np
import pytest
import rasterio.warp
from conftest import float16_bound

from ris_ray.core.errors import InputError, QueryError
from ris_ray.raster.geo import source_footprints
from ris_ray.search.export import CRS84, neighbours_csv, neighbours_geojson
from ris_ray.search.filters import SearchFilter
from ris_ray.search.plot import plot_neighbours
from ris_ray.search.query import query
from ris_ray.store.dataset import open_dataset

COLS = ["tile_id", "source", "row", "col", "crs", "minx", "miny", "maxx", "maxy", "lon", "lat"]


def _rows(db: Path) -> tuple[list[dict[str, Any]], np.ndarray]:
    t = lance.dataset(str(db)).to_table(columns=[*COLS, "fingerprint"])
    x = np.stack(t.column("fingerprint").to_numpy(zero_copy_only=False)).astype(np.float64)
    return t.select(COLS).to_pylist(), x


def _brute(x: np.ndarray, q: np.ndarray, metric: str = "l2") -> np.ndarray:
    if metric == "l2":
        return np.sqrt(((x - q) ** 2).sum(axis=1))
    return 1.0 - (x @ q) / (np.linalg.norm(x, axis=1) * np.linalg.norm(q))


def _expected(
    rows: list[dict[str, Any]], x: np.ndarray, q: np.ndarray, keep: np.ndarray, k: int
) -> list[float]:
    d = _brute(x, q)
    d[~keep] = np.inf
    order = np.argsort(d, kind="stable")[:k]
    return [float(d[i]) for i in order if np.isfinite(d[i])]


def _rgb_tile(gen_db: Path, col: int) -> dict[str, Any]:
    rows, _ = _rows(gen_db)
    return next(r for r in rows if r["source"].endswith("/rgb.tif") and r["col"] == col)


# ------------------------------------------------------------------ places


def test_lonlat_inside_a_tile_queries_that_tile(gen_db: Path) -> None:
    target = _rgb_tile(gen_db, 256)  # x 500128..500256, y 3999872..4000000 (EPSG:32633)
    (lon,), (lat,) = rasterio.warp.transform("EPSG:32633", "EPSG:4326", [500131.0], [3999995.0])
    res = query(str(gen_db), lonlat=(lon, lat), k=4)
    assert res.query.tile_id == target["tile_id"]
    assert res.query.members[0].role == "positive"
    direct = query(str(gen_db), tile_id=target["tile_id"], k=4)
    assert [n.tile_id for n in res.neighbours] == [n.tile_id for n in direct.neighbours]
    assert [n.distance for n in res.neighbours] == pytest.approx(
        [n.distance for n in direct.neighbours]
    )
    # The neighbouring tile of the same file, 2 m to the west of the boundary.
    (lon2,), (lat2,) = rasterio.warp.transform("EPSG:32633", "EPSG:4326", [500126.0], [3999995.0])
    assert (
        query(str(gen_db), lonlat=(lon2, lat2), k=1).query.tile_id
        == _rgb_tile(gen_db, 0)["tile_id"]
    )


def test_point_in_any_crs(gen_db: Path) -> None:
    target = _rgb_tile(gen_db, 0)
    res = query(str(gen_db), point=(500010.0, 3999880.0), point_crs="EPSG:32633", k=2)
    assert res.query.tile_id == target["tile_id"]
    # The same place in Web Mercator.
    (x,), (y,) = rasterio.warp.transform("EPSG:32633", "EPSG:3857", [500010.0], [3999880.0])
    res = query(str(gen_db), point=(x, y), point_crs="EPSG:3857", k=2)
    assert res.query.tile_id == target["tile_id"]


def test_place_errors(gen_db: Path) -> None:
    with pytest.raises(QueryError, match="no tile .* contains this point"):
        query(str(gen_db), lonlat=(-60.0, -30.0))
    with pytest.raises(InputError, match="--crs"):
        query(str(gen_db), point=(1.0, 2.0))
    with pytest.raises(InputError, match="not a CRS"):
        query(str(gen_db), point=(1.0, 2.0), point_crs="EPSG:999999")


def test_lonlat_on_shared_tile(shared_db: tuple[Path, object]) -> None:
    db = shared_db[0]
    rows, _ = _rows(db)
    naip = [r for r in rows if "m_4709963" in r["source"]]
    target = max(naip, key=lambda r: (r["row"], r["col"]))
    # A point a quarter of the way into the tile (in the file's CRS), as lon/lat.
    x = target["minx"] + 0.25 * (target["maxx"] - target["minx"])
    y = target["miny"] + 0.75 * (target["maxy"] - target["miny"])
    (lon,), (lat,) = rasterio.warp.transform(target["crs"], "EPSG:4326", [x], [y])
    res = query(str(db), lonlat=(lon, lat), k=5)
    assert res.query.tile_id == target["tile_id"]
    direct = query(str(db), tile_id=target["tile_id"], k=5)
    assert [n.tile_id for n in res.neighbours] == [n.tile_id for n in direct.neighbours]


# ------------------------------------------------------- georeferenced crops


def test_image_bbox_reads_the_georeferenced_crop(gen_db: Path, gen_dir: Path) -> None:
    target = _rgb_tile(gen_db, 256)
    bbox = (target["minx"], target["miny"], target["maxx"], target["maxy"])
    res = query(str(gen_db), image=str(gen_dir / "rgb.tif"), bbox=bbox, k=2)
    assert res.neighbours[0].tile_id == target["tile_id"]
    assert res.neighbours[0].distance <= float16_bound(gen_db, target["tile_id"])
    assert (res.query.col, res.query.row) == (256, 0)
    assert res.query.lon == pytest.approx(target["lon"], abs=1e-7)
    # Any size: a 100 x 60 m box (200 x 120 px) is resampled to one tile.
    big = query(
        str(gen_db),
        image=str(gen_dir / "rgb.tif"),
        bbox=(500020.0, 3999870.0, 500120.0, 3999930.0),
        k=1,
    )
    assert big.query.pixels is not None and big.query.pixels.shape == (256, 256, 3)
    assert (big.query.col, big.query.row) == (40, 140)


def test_image_bbox_errors(gen_db: Path, gen_dir: Path) -> None:
    with pytest.raises(InputError, match="not inside"):
        query(str(gen_db), image=str(gen_dir / "rgb.tif"), bbox=(0.0, 0.0, 10.0, 10.0))
    with pytest.raises(InputError, match="no georeferencing"):
        query(str(gen_db), image=str(gen_dir / "nogeo.tif"), bbox=(0.0, 0.0, 10.0, 10.0))
    with pytest.raises(InputError, match="--bbox needs --image"):
        query(str(gen_db), bbox=(0.0, 0.0, 1.0, 1.0))
    with pytest.raises(InputError, match="only one of --window, --bbox"):
        query(
            str(gen_db),
            image=str(gen_dir / "rgb.tif"),
            window=(0, 0, 10, 10),
            bbox=(0.0, 0.0, 1.0, 1.0),
        )


# --------------------------------------------------- positives and negatives


@pytest.mark.parametrize("alpha", [0.5, 1.0])
def test_several_positives_and_negatives(db: Path, alpha: float) -> None:
    rows, x = _rows(db)
    ids = [r["tile_id"] for r in rows]
    pos, neg = [0, 3, 5], [1, 7]
    res = query(
        str(db),
        tile_id=[ids[i] for i in pos],
        negatives=[ids[i] for i in neg],
        alpha=alpha,
        k=5,
    )
    q = x[pos].mean(axis=0) - alpha * x[neg].mean(axis=0)
    keep = np.ones(len(ids), bool)
    keep[pos + neg] = False
    assert [n.distance for n in res.neighbours] == pytest.approx(
        _expected(rows, x, q, keep, 5), rel=1e-3, abs=1e-4
    )
    got = {n.tile_id for n in res.neighbours}
    assert not got & {ids[i] for i in pos + neg}
    assert [m.role for m in res.query.members] == ["positive"] * 3 + ["negative"] * 2
    assert res.query.tile_id is None and res.query.alpha == alpha
    assert json.loads(json.dumps(res.to_dict()))["query"]["members"][3]["role"] == "negative"


def test_negatives_change_the_ranking(db: Path) -> None:
    rows, _x = _rows(db)
    ids = [r["tile_id"] for r in rows]
    plain = query(str(db), tile_id=ids[0], k=3)
    nearest = plain.neighbours[0].tile_id
    pushed = query(str(db), tile_id=ids[0], negatives=[nearest], alpha=1.0, k=3)
    assert nearest not in [n.tile_id for n in pushed.neighbours]
    # Several positives include themselves with --include-self.
    both = query(str(db), tile_id=[ids[0], ids[1]], include_self=True, k=len(ids))
    assert {ids[0], ids[1]} <= {n.tile_id for n in both.neighbours}


def test_positive_negative_errors(gen_db: Path) -> None:
    rows, _ = _rows(gen_db)
    a = rows[0]["tile_id"]
    with pytest.raises(InputError, match="one or the other"):
        query(str(gen_db), tile_id=a, negatives=[a])
    with pytest.raises(InputError, match="--not"):
        query(str(gen_db), tile_id=a, negatives=["nope'"])
    with pytest.raises(QueryError, match="not in"):
        query(str(gen_db), tile_id=a, negatives=["f" * 20])
    with pytest.raises(InputError, match="--alpha"):
        query(str(gen_db), tile_id=a, negatives=[rows[1]["tile_id"]], alpha=-1.0)


# ------------------------------------------------------------------ filters


def _source_glob(rows: list[dict[str, Any]]) -> tuple[str, int]:
    """A glob naming the source with the most tiles (by file name)."""
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["source"]] = counts.get(r["source"], 0) + 1
    source = max(counts, key=lambda s: (counts[s], s))
    return "*" + Path(source).name[2:], counts[source]


def test_source_filter_returns_k_among_matching(db: Path) -> None:
    rows, x = _rows(db)
    glob, n_match = _source_glob(rows)
    keep = np.array([fnmatch.fnmatchcase(Path(r["source"]).name, glob) for r in rows])
    assert keep.sum() == n_match >= 2
    qi = int(np.flatnonzero(~keep)[0])  # query from another file
    k = min(n_match, 8)
    res = query(str(db), tile_id=rows[qi]["tile_id"], k=k, filters=SearchFilter(sources=(glob,)))
    assert len(res.neighbours) == k
    assert all(fnmatch.fnmatchcase(Path(n.source).name, glob) for n in res.neighbours)
    assert [n.distance for n in res.neighbours] == pytest.approx(
        _expected(rows, x, x[qi], keep, k), rel=1e-3, abs=1e-4
    )
    # Asking for more than qualify returns exactly those that qualify.
    res = query(
        str(db), tile_id=rows[qi]["tile_id"], k=n_match + 5, filters=SearchFilter(sources=(glob,))
    )
    assert len(res.neighbours) == n_match


def test_source_filter_full_path_glob_and_errors(gen_db: Path) -> None:
    res = query(str(gen_db), seed=0, k=10, filters=SearchFilter(sources=("*/pan16.tif",)))
    assert {Path(n.source).name for n in res.neighbours} == {"pan16.tif"}
    with pytest.raises(QueryError, match="--source 'nothing-\\*' matches none"):
        query(str(gen_db), seed=0, filters=SearchFilter(sources=("nothing-*",)))
    # Quotes in a glob are never pasted into the filter.
    with pytest.raises(QueryError, match="matches none"):
        query(str(gen_db), seed=0, filters=SearchFilter(sources=("x') OR (1=1",)))


def test_bbox_wgs84_filter(db: Path) -> None:
    rows, x = _rows(db)
    located = [r for r in rows if r["lon"] is not None]
    lons = sorted(r["lon"] for r in located)
    lats = sorted(r["lat"] for r in located)
    # A box holding about half the located tiles.
    w, e = lons[0] - 1e-9, lons[len(lons) // 2]
    s, n = lats[0] - 1e-9, lats[-1] + 1e-9
    keep = np.array(
        [r["lon"] is not None and w <= r["lon"] <= e and s <= r["lat"] <= n for r in rows]
    )
    qi = int(np.flatnonzero(~keep)[0])
    k = int(min(keep.sum(), 6))
    res = query(
        str(db), tile_id=rows[qi]["tile_id"], k=k, filters=SearchFilter(bbox_wgs84=(w, s, e, n))
    )
    assert len(res.neighbours) == k
    assert all(w <= nb.lon <= e and s <= nb.lat <= n for nb in res.neighbours)  # type: ignore[operator]
    assert [nb.distance for nb in res.neighbours] == pytest.approx(
        _expected(rows, x, x[qi], keep, k), rel=1e-3, abs=1e-4
    )
    # W > E crosses the antimeridian: lon >= W or lon <= E.
    wrap = SearchFilter(bbox_wgs84=(lons[-1] - 1e-9, -90.0, -179.9, 90.0))
    res = query(str(db), tile_id=rows[qi]["tile_id"], k=50, filters=wrap)
    assert {nb.tile_id for nb in res.neighbours} == {
        r["tile_id"] for r in located if r["lon"] >= lons[-1] - 1e-9 and r is not rows[qi]
    }
    with pytest.raises(InputError, match="--bbox-wgs84"):
        SearchFilter(bbox_wgs84=(0.0, 10.0, 1.0, 5.0))


def test_exclude_same_source_returns_k(db: Path) -> None:
    rows, x = _rows(db)
    glob, _n_match = _source_glob(rows)
    qi = next(i for i, r in enumerate(rows) if fnmatch.fnmatchcase(Path(r["source"]).name, glob))
    own = rows[qi]["source"]
    keep = np.array([r["source"] != own for r in rows])
    k = int(min(keep.sum(), 10))
    res = query(str(db), tile_id=rows[qi]["tile_id"], k=k, exclude_same_source=True)
    assert len(res.neighbours) == k
    assert own not in {n.source for n in res.neighbours}
    assert [n.distance for n in res.neighbours] == pytest.approx(
        _expected(rows, x, x[qi], keep, k), rel=1e-3, abs=1e-4
    )


def test_max_distance(db: Path) -> None:
    rows, _ = _rows(db)
    tid = rows[0]["tile_id"]
    full = query(str(db), tile_id=tid, k=6)
    cut = full.neighbours[2].distance
    res = query(str(db), tile_id=tid, k=6, max_distance=cut)
    expected = [n.tile_id for n in full.neighbours if n.distance <= cut]
    assert [n.tile_id for n in res.neighbours] == expected and len(expected) >= 3
    assert all(n.distance <= cut for n in res.neighbours)
    # A generous limit never costs results.
    assert len(query(str(db), tile_id=tid, k=6, max_distance=1e9).neighbours) == 6
    with pytest.raises(InputError, match="--max-distance"):
        query(str(db), tile_id=tid, max_distance=-1.0)


def test_filters_combine(db: Path) -> None:
    rows, x = _rows(db)
    glob, _ = _source_glob(rows)
    qi = next(i for i, r in enumerate(rows) if fnmatch.fnmatchcase(Path(r["source"]).name, glob))
    other = [r for r in rows if r["source"] != rows[qi]["source"]]
    second = Path(other[0]["source"]).name
    keep = np.array([Path(r["source"]).name in (second,) for r in rows])
    k = int(min(keep.sum(), 4))
    res = query(
        str(db),
        tile_id=rows[qi]["tile_id"],
        k=k,
        filters=SearchFilter(sources=(glob, second)),
        exclude_same_source=True,
    )
    assert len(res.neighbours) == k
    assert {Path(n.source).name for n in res.neighbours} == {second}
    assert [n.distance for n in res.neighbours] == pytest.approx(
        _expected(rows, x, x[qi], keep, k), rel=1e-3, abs=1e-4
    )
    assert res.filter is not None and "NOT IN" in res.filter


# ------------------------------------------------------------------- export


def _inside(ring: list[list[float]], lon: float, lat: float) -> bool:
    inside = False
    for (x0, y0), (x1, y1) in itertools.pairwise(ring):
        if (y0 > lat) != (y1 > lat) and lon < x0 + (lat - y0) * (x1 - x0) / (y1 - y0):
            inside = not inside
    return inside


def _check_geojson(data: dict[str, Any], res: Any) -> None:
    assert data["type"] == "FeatureCollection"
    assert data["crs"]["properties"]["name"] == CRS84
    assert len(data["features"]) == len(res.neighbours)
    for f, n in zip(data["features"], res.neighbours):
        assert f["type"] == "Feature"
        p = f["properties"]
        assert (p["rank"], p["tile_id"], p["source"]) == (n.rank, n.tile_id, n.source)
        assert p["distance"] == pytest.approx(n.distance)
        if n.crs is None:
            assert f["geometry"] is None
            continue
        g = f["geometry"]
        assert g["type"] == "Polygon" and len(g["coordinates"]) == 1
        ring = g["coordinates"][0]
        assert len(ring) == 5 and ring[0] == ring[-1]
        assert all(-180 <= lon <= 180 and -90 <= lat <= 90 for lon, lat in ring)
        area = sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in itertools.pairwise(ring))
        assert area > 0  # exterior ring counter-clockwise (RFC 7946)
        assert _inside(ring, n.lon, n.lat)
        # Corners go back to the tile bounds in the file's CRS.
        xs, ys = rasterio.warp.transform(
            "EPSG:4326", n.crs, [c[0] for c in ring], [c[1] for c in ring]
        )
        assert min(xs) == pytest.approx(n.minx, abs=1e-3)
        assert max(xs) == pytest.approx(n.maxx, abs=1e-3)
        assert min(ys) == pytest.approx(n.miny, abs=1e-3)
        assert max(ys) == pytest.approx(n.maxy, abs=1e-3)


def test_geojson_and_csv(db: Path, gen_db: Path) -> None:
    for d in {db, gen_db}:
        res = query(str(d), seed=2, k=7)
        data = json.loads(json.dumps(neighbours_geojson(res)))
        _check_geojson(data, res)
        table = list(csv.DictReader(io.StringIO(neighbours_csv(res))))
        assert [r["tile_id"] for r in table] == [n.tile_id for n in res.neighbours]
        assert [float(r["distance"]) for r in table] == pytest.approx(
            [n.distance for n in res.neighbours]
        )
    # The generated set has a file without georeferencing: its geometry is null.
    res = query(str(gen_db), seed=0, k=10, include_self=True)
    data = neighbours_geojson(res)
    nulls = [f for f in data["features"] if f["geometry"] is None]
    assert [f["properties"]["source"].rsplit("/", 1)[-1] for f in nulls] == ["nogeo.tif"]


def test_geojson_opens_in_gdal(db: Path, tmp_path: Path) -> None:
    """GDAL/OGR (through pyogrio, a test dependency) reads the export as QGIS would."""
    import pyogrio

    res = query(str(db), seed=2, k=5)
    path = tmp_path / "r.geojson"
    path.write_text(json.dumps(neighbours_geojson(res)))
    info = pyogrio.read_info(path)
    assert info["driver"] == "GeoJSON" and info["crs"] == "EPSG:4326"
    assert info["features"] == len(res.neighbours)
    assert info["geometry_type"] == "Polygon"
    assert {"rank", "distance", "tile_id", "source"} <= set(info["fields"])
    west, south, east, north = info["total_bounds"]
    lons = [n.lon for n in res.neighbours if n.lon is not None]
    lats = [n.lat for n in res.neighbours if n.lat is not None]
    assert west <= min(lons) and east >= max(lons) and south <= min(lats) and north >= max(lats)
    if shutil.which("ogrinfo"):
        proc = subprocess.run(
            ["ogrinfo", "-ro", "-al", "-so", str(path)], capture_output=True, text=True, check=True
        )
        assert f"Feature Count: {len(res.neighbours)}" in proc.stdout


# ------------------------------------------------------------------ overview


def test_overview_panel(db: Path) -> None:
    res = query(str(db), seed=4, k=6)
    sources = {n.source for n in res.neighbours} | {res.query.source or ""}
    footprints = source_footprints(open_dataset(str(db)), sources)
    fig = plot_neighbours(res, footprints=footprints)
    assert len(fig.axes) == 2 + len(res.neighbours)
    ov = fig.axes[-1]
    assert ov.get_title().startswith("where")
    assert len(ov.patches) == len(footprints) >= 1
    located = [(n.lon, n.lat) for n in res.neighbours if n.lon is not None]
    offsets = np.concatenate([c.get_offsets() for c in ov.collections])
    for lon, lat in located:
        assert np.any(np.all(np.isclose(offsets, [lon, lat]), axis=1))
    # Overview to the right of every neighbour.
    right = max(ax.get_position().x1 for ax in fig.axes[1:-1])
    assert ov.get_position().x0 >= right - 1e-6
    # Each footprint contains the centres of its source's tiles.
    rows, _ = _rows(db)
    for r in rows:
        if r["source"] in footprints:
            ring = [list(p) for p in footprints[r["source"]]]
            assert _inside(ring, r["lon"], r["lat"])
    assert math.isfinite(res.neighbours[0].distance)
