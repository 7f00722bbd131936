"""``ris serve``: the API over HTTP against a real uvicorn server, and the
page in a real headless Chromium (Selenium) against ``ris serve`` itself."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import lance
import numpy as np
import pyarrow as pa
import pytest
import uvicorn
from cli_run import ours
from fastapi import FastAPI
from ports import free_port

from ris_ray.cli import main
from ris_ray.sample import synthetic_fingerprints, write_fingerprint_dataset
from ris_ray.search.diff import diff
from ris_ray.search.export import neighbours_csv, neighbours_geojson
from ris_ray.search.filters import SearchFilter
from ris_ray.search.index import build_index
from ris_ray.search.query import query
from ris_ray.web import create_app
from ris_ray.web.server import check_bind, is_loopback

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")


@contextmanager
def running(app: FastAPI) -> Iterator[httpx.Client]:
    """A real uvicorn server for ``app`` on 127.0.0.1 (a free port), in a thread."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    for _ in range(500):  # bounded wait for start-up (5 s)
        if server.started:
            break
        time.sleep(0.01)
    assert server.started, "uvicorn did not start"
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            yield client
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@pytest.fixture(scope="module")
def api(gen_db: Path) -> Iterator[httpx.Client]:
    with running(create_app(str(gen_db))) as client:
        yield client


def _ids(data: dict[str, Any]) -> list[str]:
    return [n["tile_id"] for n in data["neighbours"]]


def _same_result(served: dict[str, Any], expected: dict[str, Any]) -> None:
    """The server's JSON is ``ris query --json``'s (search time aside; distances
    to float32 round-off: the CLI ranks in Lance, the server in memory)."""
    assert served.keys() == expected.keys()
    for key in ("query", "metric", "k", "model", "rows_scanned", "filter", "max_distance"):
        assert served[key] == expected[key], key
    assert _ids(served) == _ids(expected)
    for a, b in zip(served["neighbours"], expected["neighbours"]):
        assert a.keys() == b.keys()
        assert a["distance"] == pytest.approx(b["distance"], rel=1e-4, abs=1e-4)
        assert {k: v for k, v in a.items() if k != "distance"} == {
            k: v for k, v in b.items() if k != "distance"
        }


def _tiles(db: Path) -> list[dict[str, Any]]:
    cols = ["tile_id", "source", "lon", "lat", "thumbnail"]
    return list(lance.dataset(str(db)).to_table(columns=cols).to_pylist())


# ------------------------------------------------------------------ the API


def test_query_is_the_cli_query(api: httpx.Client, gen_db: Path) -> None:
    tiles = _tiles(gen_db)
    geo = [t for t in tiles if t["lon"] is not None]
    a, b = geo[0]["tile_id"], geo[-1]["tile_id"]
    lon, lat = geo[0]["lon"], geo[0]["lat"]
    pan = next(t["source"] for t in tiles if "pan16" in t["source"])
    cases: list[tuple[dict[str, Any], dict[str, Any]]] = [
        ({"tile_id": a, "k": 3}, {"tile_id": a, "k": 3}),
        ({"tile_id": [a, b], "k": 4}, {"tile_id": [a, b], "k": 4}),
        ({"tile_id": a, "not": b, "alpha": 0.7}, {"tile_id": a, "negatives": [b], "alpha": 0.7}),
        ({"lonlat": f"{lon!r},{lat!r}", "k": 2}, {"lonlat": (lon, lat), "k": 2}),
        ({"tile_id": a, "metric": "cosine"}, {"tile_id": a, "metric": "cosine"}),
        (
            {"tile_id": a, "source": "*pan16*", "exclude_same_source": "true"},
            {
                "tile_id": a,
                "filters": SearchFilter(sources=("*pan16*",)),
                "exclude_same_source": True,
            },
        ),
        (
            {"tile_id": a, "bbox_wgs84": "-180,-90,180,90", "include_self": "true"},
            {
                "tile_id": a,
                "filters": SearchFilter(bbox_wgs84=(-180, -90, 180, 90)),
                "include_self": True,
            },
        ),
        ({"tile_id": a, "exact": "true"}, {"tile_id": a, "exact": True}),
    ]
    for params, kwargs in cases:
        r = api.get("/api/query", params=params)
        assert r.status_code == 200, (params, r.text)
        expected = query(str(gen_db), **kwargs).to_dict()
        _same_result(r.json(), expected)
    # max_distance: a prefix of the unfiltered ranking
    full = api.get("/api/query", params={"tile_id": a, "k": 6}).json()["neighbours"]
    cut = (full[1]["distance"] + full[2]["distance"]) / 2
    near = api.get("/api/query", params={"tile_id": a, "k": 6, "max_distance": cut}).json()
    assert _ids(near) == [n["tile_id"] for n in full[:2]]
    # the source filter really filters (and the glob is matched like the CLI's)
    only = api.get("/api/query", params={"tile_id": a, "source": "*pan16*", "k": 10}).json()
    assert only["neighbours"] and {n["source"] for n in only["neighbours"]} == {pan}


@pytest.mark.parametrize(
    ("params", "status", "words"),
    [
        ({"tile_id": "../../etc/passwd"}, 400, "tile ids are 20 lowercase hex"),
        ({"tile_id": "0" * 20}, 404, "not in"),
        ({"k": "ten"}, 422, "k: "),
        ({"k": 0}, 400, "must be >= 1"),
        ({"k": 100000}, 422, "k: "),
        ({"metric": "manhattan"}, 400, "use one of l2, cosine"),
        ({"bbox_wgs84": "1,2,3"}, 400, "expected four numbers"),
        ({"bbox_wgs84": "10,50,20,40"}, 400, "bbox"),
        ({"max_distance": "-1"}, 400, "must be a number >= 0"),
        ({"max_distance": "nan"}, 400, "must be a number >= 0"),
        ({"alpha": "inf"}, 400, "alpha"),
        ({"lonlat": "oops"}, 400, "expected two numbers"),
        ({"lonlat": "0,0"}, 404, "no tile"),
        ({"source": "*nothing*"}, 404, "matches none"),
        ({"format": "xml"}, 422, "format: "),
    ],
)
def test_bad_parameters_are_one_line_4xx(
    api: httpx.Client, params: dict[str, Any], status: int, words: str
) -> None:
    r = api.get("/api/query", params=params)
    assert r.status_code == status, r.text
    detail = r.json()["detail"]
    assert isinstance(detail, str) and "\n" not in detail and words in detail


def test_negative_and_positive_clash(api: httpx.Client, gen_db: Path) -> None:
    a = _tiles(gen_db)[0]["tile_id"]
    r = api.get("/api/query", params={"tile_id": a, "not": a})
    assert r.status_code == 400 and "one or the other" in r.json()["detail"]


def test_tiles_thumbnails_sources(api: httpx.Client, gen_db: Path) -> None:
    tiles = _tiles(gen_db)
    info = api.get("/api/info").json()
    assert info["rows"] == len(tiles) and info["indexes"] == {}
    w, s, e, n = info["bounds_wgs84"]
    fc = api.get("/api/tiles", params={"bbox": f"{w},{s},{e},{n}"}).json()
    geo = {t["tile_id"] for t in tiles if t["lon"] is not None}
    assert {f["properties"]["tile_id"] for f in fc["features"]} == geo
    assert all(f["geometry"]["type"] == "Polygon" for f in fc["features"])
    one = next(t for t in tiles if t["lon"] is not None)
    w1, s1, e1, n1 = one["lon"] - 1e-6, one["lat"] - 1e-6, one["lon"] + 1e-6, one["lat"] + 1e-6
    small = api.get("/api/tiles", params={"bbox": f"{w1},{s1},{e1},{n1}"}).json()
    inside = {
        t["tile_id"]
        for t in tiles
        if t["lon"] is not None and w1 <= t["lon"] <= e1 and s1 <= t["lat"] <= n1
    }
    assert one["tile_id"] in inside and len(inside) < len(geo)
    assert {f["properties"]["tile_id"] for f in small["features"]} == inside
    capped = api.get("/api/tiles", params={"bbox": f"{w},{s},{e},{n}", "limit": 1}).json()
    assert len(capped["features"]) == 1 and capped["truncated"] and capped["total"] == len(geo)
    plain = api.get("/api/tiles", params={"ungeoreferenced": "true"}).json()
    assert {f["properties"]["tile_id"] for f in plain["features"]} == (
        {t["tile_id"] for t in tiles} - geo
    )
    assert plain["features"] and all(f["geometry"] is None for f in plain["features"])
    assert api.get("/api/tiles").status_code == 400
    for t in tiles[:3]:
        r = api.get(f"/api/thumbnail/{t['tile_id']}")
        assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
        assert r.content == t["thumbnail"] and r.content[:2] == b"\xff\xd8"
    assert api.get("/api/thumbnail/" + "0" * 20).status_code == 404
    assert api.get("/api/thumbnail/..%2F..%2Fetc%2Fpasswd").status_code in (400, 404)
    sources = api.get("/api/sources").json()["features"]
    assert sorted(f["properties"]["source"] for f in sources) == info["sources"]
    assert sum(f["properties"]["tiles"] for f in sources) == len(tiles)


def test_exports_are_the_cli_files(api: httpx.Client, gen_db: Path, tmp_path: Path) -> None:
    a = _tiles(gen_db)[0]["tile_id"]
    code = None
    gj, cv = tmp_path / "q.geojson", tmp_path / "q.csv"
    try:
        main(
            [
                *("query", "--db", str(gen_db), "--tile-id", a, "-k", "4", "--exact"),
                *("--geojson", str(gj), "--csv", str(cv)),
            ]
        )
    except SystemExit as exc:
        code = exc.code
    assert code == 0
    r = api.get("/api/query", params={"tile_id": a, "k": 4, "format": "geojson"})
    assert r.status_code == 200 and "attachment" in r.headers["content-disposition"]
    served, written = r.json(), json.loads(gj.read_text())
    for f in (*served["features"], *written["features"]):
        f["properties"]["distance"] = round(f["properties"]["distance"], 4)
    assert served == written
    r = api.get("/api/query", params={"tile_id": a, "k": 4, "format": "csv"})
    assert r.headers["content-type"].startswith("text/csv")
    assert r.text.splitlines()[0] == cv.read_text().splitlines()[0]
    assert [ln.split(",")[2] for ln in r.text.splitlines()] == [
        ln.split(",")[2] for ln in cv.read_text().splitlines()
    ]
    res = query(str(gen_db), tile_id=a, k=4)
    assert (
        neighbours_geojson(res)["features"][0]["properties"]["tile_id"]
        == (served["features"][0]["properties"]["tile_id"])
    )
    assert neighbours_csv(res).splitlines()[0] == r.text.splitlines()[0]


def test_diff(api: httpx.Client, gen_db: Path) -> None:
    srcs = api.get("/api/info").json()["sources"]
    rgba = next(s for s in srcs if s.endswith("rgba.tif"))
    fill = next(s for s in srcs if s.endswith("fill.tif"))
    r = api.get("/api/diff", params={"before": "fill.tif", "after": "rgba.tif", "top": 5})
    assert r.status_code == 200, r.text
    assert r.json() == diff(str(gen_db), fill, rgba).to_dict(5)
    fc = api.get("/api/diff", params={"before": fill, "after": rgba, "format": "geojson"}).json()
    assert fc["features"] and all(f["geometry"] for f in fc["features"])
    bad = api.get("/api/diff", params={"before": fill, "after": fill})
    assert bad.status_code == 400 and "two different" in bad.json()["detail"]
    assert api.get("/api/diff", params={"before": fill}).status_code == 422


# ------------------------------------------------------- reload, index, token


def test_new_version_is_picked_up_without_restart(tmp_path: Path) -> None:
    db = str(tmp_path / "grow.lance")
    x = synthetic_fingerprints(400, seed=1)
    write_fingerprint_dataset(db, x[:300])
    with running(create_app(db, check_every=0)) as client:
        assert client.get("/api/info").json()["rows"] == 300
        new_id = f"{350:020x}"
        assert client.get(f"/api/thumbnail/{new_id}").status_code == 404
        # another "ingest": 100 rows appended as a new version
        more = lance.dataset(db).to_table(limit=100)
        ids = pa.array([f"{i:020x}" for i in range(300, 400)], pa.string())
        more = more.set_column(0, more.schema.field(0), ids)
        fp = pa.FixedSizeListArray.from_arrays(pa.array(x[300:].reshape(-1)), 512)
        more = more.set_column(more.schema.get_field_index("fingerprint"), "fingerprint", fp)
        lance.write_dataset(more.cast(lance.dataset(db).schema), db, mode="append")
        info = client.get("/api/info").json()
        assert info["rows"] == 400 and info["version"] == lance.dataset(db).version
        r = client.get("/api/query", params={"tile_id": new_id, "k": 1, "include_self": "true"})
        assert r.status_code == 200 and _ids(r.json()) == [new_id]
        shutil.rmtree(db)  # gone: one-line 503s, not a 500 (tests/test_web_changes.py)
        gone = client.get("/api/info")
        assert gone.status_code == 503 and "cannot be read now" in gone.json()["detail"]


def test_ann_index_path_matches_the_cli(tmp_path: Path) -> None:
    db = str(tmp_path / "ann.lance")
    write_fingerprint_dataset(db, synthetic_fingerprints(3000, seed=2))
    build_index(db, partitions=16, sub_vectors=16)
    with running(create_app(db)) as client:
        assert client.get("/api/info").json()["indexes"] == {"l2": "fingerprint_ivf_pq_l2"}
        for i in (0, 1234, 2999):
            tid = f"{i:020x}"
            served = client.get("/api/query", params={"tile_id": tid, "k": 10}).json()
            cli = query(db, tile_id=tid, k=10).to_dict()
            assert tid not in _ids(served)
            assert len(set(_ids(served)) & set(_ids(cli))) >= 9
            exact = client.get("/api/query", params={"tile_id": tid, "k": 10, "exact": "true"})
            assert _ids(exact.json()) == _ids(query(db, tile_id=tid, k=10, exact=True).to_dict())


def test_token(gen_db: Path) -> None:
    secret = "s3cret-token-for-tests"
    with running(create_app(str(gen_db), token=secret)) as client:
        for path in ("/", "/api/info", "/static/app.js", "/static/leaflet/leaflet.js", "/docs"):
            r = client.get(path)
            assert r.status_code == 401 and "token" in r.json()["detail"], path
        assert client.get("/api/info", headers={"Authorization": "Bearer nope"}).status_code == 401
        ok = client.get("/api/info", headers={"Authorization": f"Bearer {secret}"})
        assert ok.status_code == 200
        page = client.get("/", params={"token": secret})
        assert page.status_code == 200 and "httponly" in page.headers["set-cookie"].lower()
        # the page's own loads then carry the cookie
        assert client.get("/static/app.js").status_code == 200
        assert client.get("/api/info").status_code == 200
        assert secret not in page.text


class _Refs(HTMLParser):
    """Every ``src``/``href`` in a page."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [v for k, v in attrs if k in ("src", "href") and v]


def test_api_docs_need_no_cdn(api: httpx.Client) -> None:
    r = api.get("/docs")
    assert r.status_code == 200
    assert "://" not in r.text  # no absolute URL: nothing from another host
    refs = _Refs()
    refs.feed(r.text)
    scripts = [u for u in refs.urls if u.endswith(".js")]
    assert scripts, refs.urls  # the page's script is referenced (and served, below)
    for url in refs.urls:
        assert url.startswith("/") and not url.startswith("//"), url
        asset = api.get(url)
        assert asset.status_code == 200 and len(asset.content) > 0, url
    assert api.get("/openapi.json").json()["info"]["title"] == "ris serve"
    assert api.get("/redoc").status_code == 404  # its page fetches a logo from a CDN


def test_bind_rules(
    gen_db: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5")
    check_bind("0.0.0.0", 8000, "tok")
    monkeypatch.delenv("RIS_SERVE_TOKEN", raising=False)
    for argv, words in [
        (["--host", "0.0.0.0"], "needs a token"),
        (["--port", "70000"], "--port 70000"),
        (["--db", "/nonexistent/x.lance"], "no Lance dataset"),
    ]:
        args = ["serve", "--db", str(gen_db), *argv]
        with pytest.raises(SystemExit) as exc:
            main(args)
        assert exc.value.code == 1
        err = ours(capsys.readouterr().err)
        assert err.startswith("error: ") and words in err and "Traceback" not in err


# ------------------------------------------------------------------ the page


@pytest.fixture(scope="module")
def served(gen_db: Path) -> Iterator[str]:
    """``ris serve`` as a user runs it, in its own process."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "ris_ray.cli", "serve", "--db", str(gen_db), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):  # bounded: up to 60 s for imports and the dataset
            try:
                if httpx.get(f"{url}/api/info", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
            time.sleep(0.25)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def _driver() -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        opts.add_argument(arg)
    opts.add_argument("--window-size=1280,760")
    return webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=opts)


def _save_screenshot(driver: Any, tmp_path: Path) -> Path:
    shot = tmp_path / "serve.png"
    driver.save_screenshot(str(shot))
    if os.environ.get("RIS_ARTIFACTS"):
        out = Path(os.environ["RIS_ARTIFACTS"])
        out.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, out / "serve.png")
    return shot


def _visible_tile(driver: Any) -> Any:
    """A tile image on the map, inside the map's view and big enough to click."""
    from selenium.webdriver.common.by import By

    box = driver.find_element(By.ID, "map").rect
    for el in driver.find_elements(By.CSS_SELECTOR, "img.leaflet-image-layer[data-tile-id]"):
        r = el.rect
        cx, cy = r["x"] + r["width"] / 2, r["y"] + r["height"] / 2
        inside = (
            box["x"] < cx < box["x"] + box["width"] and box["y"] < cy < box["y"] + box["height"]
        )
        if inside and r["width"] > 20 and el.is_displayed():
            return el
    return None


@pytest.mark.skipif(
    not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
    reason="needs Debian's chromium and chromium-driver (scripts/test.sh installs them)",
)
def test_page_in_a_real_browser(served: str, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver = _driver()
    try:
        wait = WebDriverWait(driver, 30)
        driver.get(served + "/")
        wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready"))
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "img.leaflet-image-layer"))
        assert driver.find_elements(By.CSS_SELECTOR, "#nogeo img[data-tile-id]")
        k = driver.find_element(By.ID, "k")
        k.clear()
        k.send_keys("3")
        # zoom to one capture (the generated files lie 1000 km apart), then click a tile
        driver.find_element(By.CSS_SELECTOR, "#sources-list li[data-source$='rgb.tif']").click()
        tile = wait.until(lambda d: _visible_tile(d))
        clicked = tile.get_attribute("data-tile-id")
        tile.click()

        def results(d: Any) -> list[str]:  # read in one go: the list is re-rendered
            return list(
                d.execute_script(
                    "return [...document.querySelectorAll('#results li.result')]"
                    ".map((e) => e.getAttribute('data-tile-id'))"
                )
            )

        wait.until(lambda d: len(results(d)) == 3)
        first = results(driver)
        assert clicked not in first
        outlines = driver.find_elements(By.CSS_SELECTOR, "#map path.result-outline[data-tile-id]")
        plain = httpx.get(f"{served}/api/tiles", params={"ungeoreferenced": "true"}).json()
        no_crs = {f["properties"]["tile_id"] for f in plain["features"]}
        assert set(first) - no_crs == {o.get_attribute("data-tile-id") for o in outlines}
        labels = driver.find_elements(By.CSS_SELECTOR, "#map .rank-label")
        ranks = [str(i) for i, t in enumerate(first, start=1) if t not in no_crs]
        assert sorted(label.get_attribute("textContent") for label in labels) == ranks
        # mark the best result as a negative: it leaves the list, the list changes
        driver.find_element(By.CSS_SELECTOR, "#results li.result .mark-neg").click()
        wait.until(lambda d: len(results(d)) == 3 and results(d) != first)
        assert first[0] not in results(driver)
        negs = driver.find_elements(By.CSS_SELECTOR, "#negatives .chip[data-tile-id]")
        assert [n.get_attribute("data-tile-id") for n in negs] == [first[0]]
        pos = driver.find_elements(By.CSS_SELECTOR, "#map path.positive-outline[data-tile-id]")
        assert [p.get_attribute("data-tile-id") for p in pos] == [clicked]
        href = driver.find_element(By.ID, "export-csv").get_attribute("href")
        assert f"not={first[0]}" in href and "format=csv" in href
        for img in driver.find_elements(By.TAG_NAME, "img"):
            if "leaflet-marker" not in (img.get_attribute("class") or ""):
                assert img.get_attribute("data-tile-id"), img.get_attribute("outerHTML")
        shot = _save_screenshot(driver, tmp_path)
        assert shot.stat().st_size > 10_000
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert not errors, errors
    finally:
        driver.quit()


@pytest.mark.skipif(
    not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
    reason="needs Debian's chromium and chromium-driver (scripts/test.sh installs them)",
)
def test_api_docs_render_offline_in_a_real_browser(served: str) -> None:
    """Swagger UI draws the API from the server's own assets: every resource
    the browser loads (scripts, styles, fonts, images, the schema) is
    same-origin."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver = _driver()
    try:
        driver.get(served + "/docs")
        WebDriverWait(driver, 60).until(
            lambda d: d.find_elements(
                By.CSS_SELECTOR, ".swagger-ui .opblock-summary-path[data-path='/api/query']"
            )
        )
        title = driver.find_element(By.CSS_SELECTOR, ".swagger-ui .info .title").text
        assert title.startswith("ris serve"), title
        loaded = driver.execute_script(
            "return performance.getEntriesByType('resource').map((e) => e.name)"
        )
        assert any(u.endswith("/openapi.json") for u in loaded), loaded
        assert all(u.startswith(served + "/") for u in loaded), loaded
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert not errors, errors
    finally:
        driver.quit()


def test_synthetic_vectors_have_no_map(tmp_path: Path) -> None:
    """A dataset without any georeferencing still serves (gallery only)."""
    db = str(tmp_path / "plain.lance")
    write_fingerprint_dataset(db, synthetic_fingerprints(50, seed=3))
    with running(create_app(db)) as client:
        info = client.get("/api/info").json()
        assert info["bounds_wgs84"] is None and info["rows"] == 50
        plain = client.get("/api/tiles", params={"ungeoreferenced": "true"}).json()
        assert plain["total"] == 50
        q = client.get("/api/query", params={"tile_id": f"{7:020x}", "k": 5}).json()
        x = synthetic_fingerprints(50, seed=3).astype(np.float64)
        d = np.sqrt(((x - x[7]) ** 2).sum(axis=1))
        d[7] = np.inf
        assert _ids(q) == [f"{i:020x}" for i in np.argsort(d, kind="stable")[:5]]
