"""Change between captures: two captures of the same place, one with patches
painted over known tiles (and sensor noise everywhere), must rank the painted
tiles first, whatever the pairing (same grid, reprojected, plain pixels)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from cli_run import ours

from ris_ray.core.errors import InputError, QueryError
from ris_ray.sample import landscape, write_geotiff
from ris_ray.search.diff import DiffResult, diff, pair_positions
from ris_ray.search.export import CRS84, changes_csv, changes_geojson
from ris_ray.search.plot import change_grid, plot_change

TILE = 256
# (row, col) pixel origins of the tiles painted in the "after" captures.
GEN_PAINTED = {(256, 0), (512, 768), (0, 512)}
NAIP_PAINTED = {(0, 256), (256, 512)}
LOCAL_UTM = "+proj=tmerc +lon_0=15 +k=0.9996 +x_0=100000 +y_0=0 +datum=WGS84 +units=m"
NAIP = "opengeos__m_4709963_se_14_1_20200831.tif"


def _paint(data: np.ndarray, tiles: set[tuple[int, int]], seed: int) -> np.ndarray:
    """Sensor noise (sd 3 DN) on every valid pixel, plus a solid 200 x 200 patch
    inside each of ``tiles``."""
    rng = np.random.default_rng(seed)
    out = data.astype(np.float32)
    valid = data > 0
    out[valid] += rng.normal(0, 3, size=int(valid.sum()))
    out = np.where(valid, np.clip(out, 1, 255), 0)
    colour = np.array([210, 40, 40, 90][: data.shape[0]], np.float32)
    for r, c in tiles:
        out[:, r + 28 : r + 228, c + 28 : c + 228] = colour[:, None, None]
    return out.astype(np.uint8)


def _ingest(ray_session: None, files: list[Path], db: Path) -> Path:
    from ris_ray.core.config import IngestConfig
    from ris_ray.ingest.pipeline import ingest

    report = ingest(
        IngestConfig(
            inputs=tuple(str(f) for f in files), db=str(db), weights="random", progress=False
        )
    )
    assert report.tiles_written > 0 and not report.files_failed
    return db


@pytest.fixture(scope="module")
def gen_change(ray_session: None, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 768 x 1024 scene (3 x 4 tiles) and painted copies: same CRS, a local
    CRS (UTM 33N with another false easting, so coordinates differ by 400 km
    and only pair once transformed), and both without georeferencing."""
    d = tmp_path_factory.mktemp("change")
    scene = landscape(768, 1024, seed=11)
    after = _paint(scene, GEN_PAINTED, seed=1)
    geo = {"origin": (600000.0, 5100000.0), "res": 0.2}
    files = [
        write_geotiff(d / "before.tif", scene, **geo),  # type: ignore[arg-type]
        write_geotiff(d / "after.tif", after, **geo),  # type: ignore[arg-type]
        write_geotiff(
            d / "after_local.tif", after, crs=LOCAL_UTM, origin=(200000.0, 5100000.0), res=0.2
        ),
        write_geotiff(d / "plain_before.tif", scene, crs=None),
        write_geotiff(d / "plain_after.tif", after, crs=None),
    ]
    return _ingest(ray_session, files, d / "change.lance")


@pytest.fixture(scope="module")
def naip_change(
    ray_session: None, shared_data: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Path, Path]:
    """The real NAIP image and a painted copy of it, ingested together."""
    d = tmp_path_factory.mktemp("naip_change")
    src_path = shared_data / NAIP
    after = d / "naip_after.tif"
    with rasterio.open(src_path) as src:
        profile = src.profile
        data = src.read()
    with rasterio.open(after, "w", **profile) as dst:
        dst.write(_paint(data, NAIP_PAINTED, seed=2))
    return _ingest(ray_session, [src_path, after], d / "naip.lance"), src_path, after


def _top_locations(res: DiffResult, n: int) -> set[tuple[int, int]]:
    return {(c.row, c.col) for c in res.top(n)}


def _check_painted_first(res: DiffResult, painted: set[tuple[int, int]]) -> None:
    assert _top_locations(res, len(painted)) == painted
    changed = min(c.distance for c in res.changes if (c.row, c.col) in painted)
    unchanged = max(c.distance for c in res.changes if (c.row, c.col) not in painted)
    assert changed > unchanged
    if res.metric == "l2":
        assert unchanged > 0  # the noise is seen, the paint much more
    assert [c.rank for c in res.changes] == list(range(1, len(res.changes) + 1))
    assert all(a.distance >= b.distance for a, b in zip(res.changes, res.changes[1:]))


def test_naip_painted_tiles_rank_first(naip_change: tuple[Path, Path, Path]) -> None:
    db, before, after = naip_change
    res = diff(str(db), str(before), str(after))
    assert res.pairing == "grid"
    assert len(res.changes) == 6 and res.unmatched_before == res.unmatched_after == 0
    _check_painted_first(res, NAIP_PAINTED)
    assert all(c.offset == pytest.approx(0.0) for c in res.changes)
    res = diff(str(db), "*m_4709963*", "naip_after.tif", metric="cosine")
    _check_painted_first(res, NAIP_PAINTED)


@pytest.mark.parametrize(
    ("before", "after", "pairing"),
    [
        ("before.tif", "after.tif", "grid"),
        ("before.tif", "after_local.tif", "reprojected"),
        ("plain_before.tif", "plain_after.tif", "pixel"),
    ],
)
def test_generated_painted_tiles_rank_first(
    gen_change: Path, before: str, after: str, pairing: str
) -> None:
    res = diff(str(gen_change), before, after)
    assert res.pairing == pairing
    assert len(res.changes) == 12 and res.unmatched_before == res.unmatched_after == 0
    _check_painted_first(res, GEN_PAINTED)
    for c in res.changes:  # same grid: every tile pairs with its own location
        assert (c.after_row, c.after_col) == (c.row, c.col)
        assert c.offset == pytest.approx(0.0, abs=1e-6)


def test_heatmap_geojson_csv(gen_change: Path) -> None:
    res = diff(str(gen_change), "before.tif", "after.tif")
    grid, step = change_grid(res)
    assert grid.shape == (3, 4) and step == TILE
    for c in res.changes:
        assert grid[c.row // step, c.col // step] == pytest.approx(c.distance)
    hottest = {
        tuple(int(v) * step for v in ix) for ix in np.argwhere(grid >= np.sort(grid.ravel())[-3])
    }
    assert hottest == GEN_PAINTED

    fig = plot_change(res, top=3)
    heat = fig.axes[0]
    assert np.allclose(np.asarray(heat.images[0].get_array()), grid, equal_nan=True)
    assert sorted(t.get_text() for t in heat.texts) == ["1", "2", "3"]

    data = json.loads(json.dumps(changes_geojson(res, 3)))
    assert data["type"] == "FeatureCollection" and data["crs"]["properties"]["name"] == CRS84
    assert len(data["features"]) == 3
    for f, c in zip(data["features"], res.top(3)):
        p = f["properties"]
        assert (p["rank"], p["before_tile_id"], p["after_tile_id"]) == (
            c.rank,
            c.before_tile_id,
            c.after_tile_id,
        )
        assert p["before_source"].endswith("/before.tif")
        ring = f["geometry"]["coordinates"][0]
        assert len(ring) == 5 and ring[0] == ring[-1]
        lons, lats = [p[0] for p in ring], [p[1] for p in ring]
        assert min(lons) < c.lon < max(lons) and min(lats) < c.lat < max(lats)  # type: ignore[operator]

    rows = list(csv.DictReader(io.StringIO(changes_csv(res))))
    assert len(rows) == 12
    assert [float(r["distance"]) for r in rows] == pytest.approx([c.distance for c in res.changes])


def test_diff_errors(gen_change: Path) -> None:
    db = str(gen_change)
    with pytest.raises(InputError, match="--before '\\*.tif' matches 5 sources"):
        diff(db, "*.tif", "after.tif")
    with pytest.raises(QueryError, match="--after 'nope.tif' matches none"):
        diff(db, "before.tif", "nope.tif")
    with pytest.raises(InputError, match="both name"):
        diff(db, "before.tif", "*/before.tif")
    with pytest.raises(InputError, match="is georeferenced and .* is not"):
        diff(db, "before.tif", "plain_after.tif")
    with pytest.raises(InputError, match="--metric"):
        diff(db, "before.tif", "after.tif", metric="hamming")


def test_pair_positions() -> None:
    a = np.array([[0.0, 0.0], [10.0, 0.0], [20.0, 0.0], [30.0, 0.0]])
    # b: the same grid shifted by 3 (< half of 10), missing the last location, plus a stray.
    b = np.array([[13.0, 0.0], [3.0, 0.0], [23.0, 1.0], [100.0, 100.0]])
    pairs = pair_positions(a, b, tolerance=5.0)
    assert sorted((i, j) for i, j, _ in pairs) == [(0, 1), (1, 0), (2, 2)]
    assert all(d <= 5.0 for _, _, d in pairs)
    # One-to-one: two candidates for one point, the closer wins.
    pairs = pair_positions(np.array([[0.0, 0.0], [4.0, 0.0]]), np.array([[3.0, 0.0]]), 5.0)
    assert [(i, j) for i, j, _ in pairs] == [(1, 0)]
    assert pair_positions(a, np.array([[5.1, 0.0]]) + 100, 5.0) == []
    with pytest.raises(ValueError):
        pair_positions(a, b, 0.0)


def test_cli_diff(capsys: pytest.CaptureFixture[str], gen_change: Path, tmp_path: Path) -> None:
    from ris_ray.cli import main

    png, gj, table = tmp_path / "heat.png", tmp_path / "top.geojson", tmp_path / "all.csv"
    argv = ["diff", "--db", str(gen_change), "--before", "before.tif", "--after", "after.tif"]
    with pytest.raises(SystemExit) as info:
        main(
            [*argv, "--top", "3", "--heatmap", str(png), "--geojson", str(gj), "--csv", str(table)]
        )
    out = capsys.readouterr().out
    assert info.value.code == 0
    assert "12 locations paired (grid)" in out and f"heatmap: {png}" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    features = json.loads(gj.read_text())["features"]
    assert {(f["properties"]["row"], f["properties"]["col"]) for f in features} == GEN_PAINTED
    assert len(list(csv.DictReader(table.open()))) == 12
    with pytest.raises(SystemExit) as info:
        main([*argv, "--top", "3", "--json"])
    data = json.loads(capsys.readouterr().out)
    assert {(c["row"], c["col"]) for c in data["changes"]} == GEN_PAINTED
    assert data["pairs"] == 12 and data["pairing"] == "grid"
    with pytest.raises(SystemExit) as info:
        main(["diff", "--db", str(gen_change), "--before", "*.tif", "--after", "after.tif"])
    err = ours(capsys.readouterr().err)
    assert info.value.code == 1 and err.startswith("error: --before '*.tif' matches 5 sources")
