"""`ris query` analyst options on the command line: places, crops, several
examples, filters, exports and the overview plot."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import lance
import pytest
import rasterio.warp
from cli_run import run
from conftest import float16_bound
from PIL import Image


def _json(argv: list[str], capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    code, out, err = run([*argv, "--json"], capsys)
    assert code == 0, err
    return json.loads(out)  # type: ignore[no-any-return]


def _rows(db: Path) -> list[dict[str, Any]]:
    cols = ["tile_id", "source", "row", "col", "minx", "miny", "maxx", "maxy", "lon", "lat"]
    return lance.dataset(str(db)).to_table(columns=cols).to_pylist()  # type: ignore[no-any-return]


def _tile(db: Path, name: str, col: int) -> dict[str, Any]:
    return next(r for r in _rows(db) if r["source"].endswith("/" + name) and r["col"] == col)


def test_lonlat_and_point(capsys: pytest.CaptureFixture[str], gen_db: Path) -> None:
    target = _tile(gen_db, "rgb.tif", 256)
    (lon,), (lat,) = rasterio.warp.transform("EPSG:32633", "EPSG:4326", [500200.0], [3999900.0])
    data = _json(["query", "--db", str(gen_db), "--lonlat", f"{lon!r},{lat!r}", "-k", "3"], capsys)
    assert data["query"]["tile_id"] == target["tile_id"]
    assert target["tile_id"] not in [n["tile_id"] for n in data["neighbours"]]
    code, out, _ = run(
        ["query", "--db", str(gen_db), "--point", "500200,3999900", "--crs", "EPSG:32633"], capsys
    )
    assert code == 0 and target["tile_id"] in out


def test_image_bbox(capsys: pytest.CaptureFixture[str], gen_db: Path, gen_dir: Path) -> None:
    t = _tile(gen_db, "rgb.tif", 0)
    bbox = ",".join(repr(v) for v in (t["minx"], t["miny"], t["maxx"], t["maxy"]))
    data = _json(
        ["query", "--db", str(gen_db), "--image", str(gen_dir / "rgb.tif"), "--bbox", bbox], capsys
    )
    assert data["neighbours"][0]["tile_id"] == t["tile_id"]
    assert data["neighbours"][0]["distance"] <= float16_bound(gen_db, t["tile_id"])


def test_positives_negatives(capsys: pytest.CaptureFixture[str], gen_db: Path) -> None:
    ids = [r["tile_id"] for r in _rows(gen_db)]
    data = _json(
        [
            "query",
            "--db",
            str(gen_db),
            "--tile-id",
            ids[0],
            "--tile-id",
            ids[1],
            "--not",
            ids[2],
            "--alpha",
            "1",
            "-k",
            "10",
        ],
        capsys,
    )
    assert [m["role"] for m in data["query"]["members"]] == ["positive", "positive", "negative"]
    assert data["query"]["alpha"] == 1.0
    assert len(data["neighbours"]) == len(ids) - 3
    assert not {n["tile_id"] for n in data["neighbours"]} & set(ids[:3])


def test_filters(capsys: pytest.CaptureFixture[str], gen_db: Path) -> None:
    rgb = _tile(gen_db, "rgb.tif", 0)
    base = ["query", "--db", str(gen_db), "--tile-id", rgb["tile_id"]]
    data = _json([*base, "--source", "*pan16*", "-k", "2"], capsys)
    assert [Path(n["source"]).name for n in data["neighbours"]] == ["pan16.tif"] * 2
    # Tiles of both georeferenced areas are far apart; a box around rgb.tif holds 2 tiles.
    box = f"{rgb['lon'] - 0.01},{rgb['lat'] - 0.01},{rgb['lon'] + 0.01},{rgb['lat'] + 0.01}"
    data = _json([*base, "--bbox-wgs84", box, "--include-self", "-k", "5"], capsys)
    assert {Path(n["source"]).name for n in data["neighbours"]} == {"rgb.tif"}
    assert len(data["neighbours"]) == 2
    data = _json([*base, "--exclude-same-source", "-k", "5"], capsys)
    assert len(data["neighbours"]) == 5
    assert "rgb.tif" not in {Path(n["source"]).name for n in data["neighbours"]}
    all_ = _json([*base, "-k", "6"], capsys)["neighbours"]
    cut = all_[1]["distance"]
    data = _json([*base, "-k", "6", "--max-distance", repr(cut)], capsys)
    assert [n["tile_id"] for n in data["neighbours"]] == [
        n["tile_id"] for n in all_ if n["distance"] <= cut
    ]
    code, out, _ = run([*base, "-k", "6", "--max-distance", repr(cut)], capsys)
    assert code == 0 and "of 6 results: no more tiles qualify" in out


def test_exports_and_overview(
    capsys: pytest.CaptureFixture[str], gen_db: Path, tmp_path: Path
) -> None:
    gj, table, png = tmp_path / "r.geojson", tmp_path / "r.csv", tmp_path / "r.png"
    code, out, err = run(
        [
            "query",
            "--db",
            str(gen_db),
            "--seed",
            "0",
            "-k",
            "4",
            "--geojson",
            str(gj),
            "--csv",
            str(table),
            "--plot",
            str(png),
            "--overview",
        ],
        capsys,
    )
    assert code == 0, err
    assert f"geojson: {gj}" in out and f"csv: {table}" in out and f"plot: {png}" in out
    data = json.loads(gj.read_text())
    assert data["type"] == "FeatureCollection" and len(data["features"]) == 4
    assert [f["properties"]["rank"] for f in data["features"]] == [1, 2, 3, 4]
    for f in data["features"]:
        assert f["geometry"] is None or f["geometry"]["type"] == "Polygon"
    rows = list(csv.DictReader(table.open()))
    assert [r["tile_id"] for r in rows] == [f["properties"]["tile_id"] for f in data["features"]]
    with Image.open(png) as im:
        w, h = im.size
    code, _, _ = run(
        ["query", "--db", str(gen_db), "--seed", "0", "-k", "4", "--plot", str(png)], capsys
    )
    with Image.open(png) as im:
        assert im.size[0] < w and im.size[1] == h  # the overview adds a panel on the right


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--lonlat", "12"], "--lonlat '12': expected two numbers"),
        (["--point", "1,2"], "needs --crs"),
        (["--point", "1,2", "--crs", "EPSG:0"], "not a CRS"),
        (["--random", "--lonlat", "1,2"], "only one of"),
        (["--seed", "0", "--overview"], "add --plot"),
        (["--seed", "0", "--bbox-wgs84", "1,2,3"], "--bbox-wgs84 '1,2,3': expected four"),
        (["--seed", "0", "--bbox-wgs84", "1,50,3,40"], "below the 4th"),
        (["--seed", "0", "--source", "nothing*"], "--source 'nothing*' matches none"),
        (["--lonlat", "-60,-30"], "no tile in"),
        (["--seed", "0", "--geojson", "/nonexistent/dir/r.geojson"], "cannot write"),
        (["--seed", "0", "--not", "x' OR 1=1"], "20 lowercase hex"),
    ],
)
def test_errors_are_one_line_exit_1(
    capsys: pytest.CaptureFixture[str], gen_db: Path, args: list[str], message: str
) -> None:
    code, _, err = run(["query", "--db", str(gen_db), *args], capsys)
    assert code == 1
    assert err.startswith("error: ") and message in err, err
    assert err.strip().count("\n") == 0 and "Traceback" not in err
