"""The ``ris serve`` page in a real headless Chromium (issue 22): hostile
file names stay text, the page works under its Content-Security-Policy, the
token leaves the address bar, and the page says why when there is nothing
to put on the map."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lance
import numpy as np
import pyarrow as pa
import pytest
from test_serve import CHROMEDRIVER, CHROMIUM, _driver, _visible_tile, running

from ris_ray.model.thumbnail import encode
from ris_ray.sample import (
    landscape,
    synthetic_fingerprints,
    write_fingerprint_dataset,
    write_geotiff,
)
from ris_ray.web import create_app

pytestmark = pytest.mark.skipif(
    not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
    reason="needs Debian's chromium and chromium-driver (scripts/test.sh installs them)",
)

#: The two hostile names of issue 22: markup in a file name, and a path
#: holding '"' and '</script>' (a '/' splits it into a folder and a file).
IMG_NAME = "<img src=x onerror=document.title='PWNED'>.tif"
SCRIPT_DIR, SCRIPT_NAME = 'q"></', "script><img src=x onerror=document.title='PWNED2'>.tif"
#: Records every CSP violation, from before the page's first script on.
CSP_RECORDER = (
    "window.__csp = [];"
    "document.addEventListener('securitypolicyviolation',"
    " (e) => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI));"
)
INJECTED = "return document.querySelectorAll(\"img[src='x'], script:not([src])\").length"


@contextmanager
def browser() -> Iterator[Any]:
    driver = _driver()
    driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": CSP_RECORDER})
    try:
        yield driver
    finally:
        driver.quit()


def _ready(driver: Any, url: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url)
    WebDriverWait(driver, 30).until(
        lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready")
    )


def _clean(driver: Any) -> None:
    """No CSP violation, no error in the console."""
    assert driver.execute_script("return window.__csp") == []
    errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors


@pytest.fixture(scope="module")
def hostile_db(ray_session: None, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two georeferenced captures under hostile names, ingested (random weights)."""
    from ris_ray.core.config import IngestConfig
    from ris_ray.ingest.pipeline import ingest

    d = tmp_path_factory.mktemp("hostile")
    write_geotiff(d / IMG_NAME, landscape(256, 512, seed=11), origin=(500000.0, 5000000.0))
    (d / SCRIPT_DIR).mkdir(parents=True)
    write_geotiff(
        d / SCRIPT_DIR / SCRIPT_NAME, landscape(256, 512, seed=12), origin=(500060.0, 5000000.0)
    )
    db = tmp_path_factory.mktemp("dbs") / "hostile.lance"
    report = ingest(IngestConfig(inputs=(str(d),), db=str(db), weights="random", progress=False))
    assert report.tiles_written == 4
    return db


def test_hostile_file_names_stay_text(hostile_db: Path) -> None:
    """Before: the results list (li.innerHTML) and the footprint tooltip
    (bindTooltip(name)) parsed file names as HTML: the title became PWNED."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    with running(create_app(str(hostile_db))) as client, browser() as driver:
        wait = WebDriverWait(driver, 30)
        _ready(driver, str(client.base_url) + "/")
        title = driver.title
        assert title == "ris serve" and driver.execute_script(INJECTED) == 0
        names = {e.text for e in driver.find_elements(By.CSS_SELECTOR, "#sources-list li")}
        assert any(IMG_NAME in n for n in names) and any(SCRIPT_NAME in n for n in names), names
        # click a tile: the results list shows both names
        wait.until(lambda d: _visible_tile(d)).click()
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#results li.result")) == 3)
        shown = [e.text for e in driver.find_elements(By.CSS_SELECTOR, "#results .source-name")]
        assert IMG_NAME in shown and SCRIPT_NAME in shown, shown
        full = driver.find_elements(By.CSS_SELECTOR, "#results .source-name")
        assert any(SCRIPT_DIR in (e.get_attribute("title") or "") for e in full)
        assert driver.title == title and driver.execute_script(INJECTED) == 0
        # hover each capture's marker: its tooltip shows the name as text
        for marker in driver.find_elements(By.CSS_SELECTOR, "path.footprint-marker"):
            ActionChains(driver).move_to_element(marker).perform()
            source = marker.get_attribute("data-source")
            wait.until(
                lambda d, s=source: any(
                    Path(s).name in t.text
                    for t in d.find_elements(By.CSS_SELECTOR, ".leaflet-tooltip")
                )
            )
            assert driver.title == title and driver.execute_script(INJECTED) == 0
        _clean(driver)


def test_page_and_docs_work_under_the_policy(gen_db: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    with running(create_app(str(gen_db))) as client, browser() as driver:
        wait = WebDriverWait(driver, 30)
        url = str(client.base_url)
        _ready(driver, url + "/")
        policy = client.get("/").headers["content-security-policy"]
        assert "script-src 'self';" in policy
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "img.leaflet-image-layer"))
        assert driver.find_elements(By.CSS_SELECTOR, "path.footprint-marker[data-source]")
        driver.find_element(By.CSS_SELECTOR, "#sources-list li[data-source$='rgb.tif']").click()
        wait.until(lambda d: _visible_tile(d)).click()
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#results li.result"))
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#map .rank-label span"))
        driver.find_element(By.CSS_SELECTOR, "#diff-panel summary").click()
        driver.find_element(By.ID, "diff-run").click()
        wait.until(lambda d: d.find_element(By.ID, "diff-status").text not in ("", "comparing…"))
        _clean(driver)
        # thumbnails: long-lived URLs; a second visit takes them from the cache
        again = "return performance.getEntriesByType('resource')" + (
            ".filter((e) => e.name.includes('/api/thumbnail/'))"
            ".map((e) => [e.name, e.transferSize])"
        )
        first = driver.execute_script(again)
        assert first and all("?v=" in name for name, _ in first)
        _ready(driver, url + "/")
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "img.leaflet-image-layer"))
        second = driver.execute_script(again)
        assert second and all(size == 0 for _, size in second), second
        # FastAPI's offline docs under their own policy (their inline script by hash)
        driver.get(url + "/docs")
        wait.until(
            lambda d: d.find_elements(
                By.CSS_SELECTOR, ".swagger-ui .opblock-summary-path[data-path='/api/query']"
            )
        )
        _clean(driver)


def test_token_leaves_the_address_bar(gen_db: Path) -> None:
    from selenium.webdriver.common.by import By

    secret = "tok-for-the-browser-test"
    with running(create_app(str(gen_db), token=secret)) as client, browser() as driver:
        _ready(driver, f"{client.base_url}/?token={secret}")
        assert secret not in driver.current_url and "token" not in driver.current_url
        assert "tiles" in driver.find_element(By.ID, "info").text  # the API answered (cookie)
        _clean(driver)
        # replaced, not pushed: going back leaves the page, it never shows the token
        driver.back()
        assert secret not in driver.current_url and not driver.current_url.startswith(
            str(client.base_url)
        ), driver.current_url


def test_cap_is_said(gen_db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """More tiles in the view than the cap: the page says so (it drew the
    first ones in tile order and left the rest blank without a word)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    import ris_ray.web.app as web_app

    monkeypatch.setattr(web_app, "TILE_CAP", 2)
    with running(create_app(str(gen_db))) as client, browser() as driver:
        _ready(driver, str(client.base_url) + "/")
        WebDriverWait(driver, 30).until(lambda d: d.find_element(By.ID, "map-note").is_displayed())
        text = driver.find_element(By.ID, "map-note").text
        total = client.get("/api/tiles", params={"bbox": "-180,-90,180,90"}).json()["total"]
        assert f"{total} tiles in this view" in text and "first 2 in tile order" in text, text
        drawn = driver.find_elements(By.CSS_SELECTOR, "img.leaflet-image-layer[data-tile-id]")
        assert len(drawn) == 2
        _clean(driver)


def _plain_pair(db: str) -> None:
    """Two captures without a CRS on the same pixel grid (diff pairs them by pixel)."""
    write_fingerprint_dataset(db, synthetic_fingerprints(64, seed=1))
    t = lance.dataset(db).to_table()

    def put(name: str, values: pa.Array) -> None:
        nonlocal t
        i = t.schema.get_field_index(name)
        t = t.set_column(i, t.schema.field(i), values.cast(t.schema.field(i).type))

    put("source", pa.array(["plain/a.tif"] * 32 + ["plain/b.tif"] * 32))
    put("row", pa.array(np.zeros(64, np.int32)))
    put("col", pa.array((np.arange(64) % 32 * 256).astype(np.int32)))
    put("thumbnail", pa.array([encode(np.full((8, 8, 3), 90, np.uint8))] * 64, pa.binary()))
    lance.write_dataset(t, db, mode="overwrite")


def test_no_crs_and_no_rows_say_why(tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    plain, empty = str(tmp_path / "plain.lance"), str(tmp_path / "empty.lance")
    _plain_pair(plain)
    lance.write_dataset(lance.dataset(plain).to_table(limit=0), empty)
    with browser() as driver:
        with running(create_app(plain)) as client:
            _ready(driver, str(client.base_url) + "/")
            assert "no-map" in (driver.find_element(By.TAG_NAME, "body").get_attribute("class"))
            note = driver.find_element(By.ID, "side-note").text
            assert "has a CRS" in note and "gallery" in note, note
            assert len(driver.find_elements(By.CSS_SELECTOR, "#nogeo img[data-tile-id]")) == 64
            driver.find_element(By.CSS_SELECTOR, "#diff-panel summary").click()
            driver.find_element(By.ID, "diff-run").click()
            WebDriverWait(driver, 30).until(
                lambda d: "none drawn" in d.find_element(By.ID, "diff-status").text
            )
            assert "CRS" in driver.find_element(By.ID, "diff-status").text
            _clean(driver)
        with running(create_app(empty)) as client:
            _ready(driver, str(client.base_url) + "/")
            assert "no tiles" in driver.find_element(By.ID, "side-note").text
            assert driver.find_element(By.ID, "info").text.startswith("0 tiles")
            _clean(driver)
