"""What guards every ``ris serve`` response (issue 22): the Content-Security-
Policy, the Host check without a token, capped error echoes, the tile-id
check, cacheable thumbnails, the basemap option."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import lance
import pytest
from test_serve import running

from ris_ray.core.errors import InputError
from ris_ray.sample import synthetic_fingerprints, write_fingerprint_dataset
from ris_ray.web import create_app
from ris_ray.web.guard import basemap_origin, host_name

STRICT = (
    "default-src 'self'",
    "script-src 'self';",
    "style-src 'self';",
    "img-src 'self' data: blob:",
    "frame-ancestors 'none'",
    "base-uri 'none'",
    "object-src 'none'",
)


@pytest.fixture(scope="module")
def plain_db(tmp_path_factory: pytest.TempPathFactory) -> str:
    db = str(tmp_path_factory.mktemp("guard") / "plain.lance")
    write_fingerprint_dataset(db, synthetic_fingerprints(40, seed=1))
    return db


def _policy(r: httpx.Response) -> str:
    return r.headers.get("content-security-policy", "")


def test_every_response_carries_the_strict_policy(plain_db: str) -> None:
    with running(create_app(plain_db)) as client:
        for path, status in [
            ("/", 200),
            ("/static/app.js", 200),
            ("/static/leaflet/leaflet.js", 200),
            ("/api/info", 200),
            ("/api/thumbnail/" + "0" * 20, 404),
            ("/api/query?k=ten", 422),
            ("/nothing-here", 404),
            ("/openapi.json", 200),
        ]:
            r = client.get(path)
            assert r.status_code == status, (path, r.text)
            policy = _policy(r)
            assert all(p in policy for p in STRICT), (path, policy)
            assert "unsafe" not in policy and r.headers["x-content-type-options"] == "nosniff"
        # /docs: Swagger UI's one inline script is allowed by its hash, nothing else
        docs = client.get("/docs")
        assert docs.status_code == 200 and "unsafe" not in _policy(docs)
        assert "script-src 'self' 'sha256-" in _policy(docs)
        assert int(docs.headers["content-length"]) == len(docs.content)
    with running(create_app(plain_db, token="tok-123")) as client:
        refused = client.get("/api/info")
        assert refused.status_code == 401 and all(p in _policy(refused) for p in STRICT)


def test_host_header_is_checked_without_a_token(plain_db: str) -> None:
    """DNS rebinding: a page of attacker.example resolving to 127.0.0.1."""
    with running(create_app(plain_db)) as client:
        port = client.base_url.port
        for host in ("attacker.example", f"attacker.example:{port}", "127.0.0.1.nip.io", ""):
            r = client.get("/api/info", headers={"Host": host})
            assert r.status_code == 421, (host, r.text)
            assert "Host" in r.json()["detail"] and "\n" not in r.json()["detail"]
        for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}", "LOCALHOST"):
            assert client.get("/api/info", headers={"Host": host}).status_code == 200, host
    with running(create_app(plain_db, host="127.0.0.2")) as client:  # the bound host too
        assert client.get("/api/info", headers={"Host": "127.0.0.2:9"}).status_code == 200
    with running(create_app(plain_db, token="tok-123")) as client:  # the token guards instead
        ok = client.get(
            "/api/info", headers={"Host": "ris.example", "Authorization": "Bearer tok-123"}
        )
        assert ok.status_code == 200
    assert host_name("[::1]:80") == "::1" and host_name("::1") == "::1"
    assert host_name("Example.COM:8000") == "example.com"


def test_error_echoes_are_capped_and_ids_strict(plain_db: str) -> None:
    with running(create_app(plain_db)) as client:
        tid = f"{3:020x}"
        assert client.get("/api/query", params={"tile_id": tid}).status_code == 200
        r = client.get(f"/api/thumbnail/{tid}%0a")  # a trailing newline is not an id
        assert r.status_code == 400 and "20 lowercase hex" in r.json()["detail"]
        r = client.get("/api/query", params={"tile_id": tid + "\n"})
        assert r.status_code == 400
        huge = "a" * 50_000  # httpx refuses URLs over 64 KiB
        for path, params in [
            (f"/api/thumbnail/{huge}", {}),
            ("/api/query", {"tile_id": huge}),
            ("/api/tiles", {"bbox": huge}),
            ("/api/diff", {"before": huge, "after": "x"}),
        ]:
            r = client.get(path, params=params)
            assert 400 <= r.status_code < 500, (path, r.status_code)
            assert len(r.content) < 400, (path, len(r.content))
        bad = client.get("/api/tiles", params={"bbox": "10,50,200,60"})
        detail = bad.json()["detail"]
        assert bad.status_code == 400 and detail.startswith("bbox ") and "--bbox" not in detail


def test_thumbnails_are_cached_for_good_by_version(gen_db: Path) -> None:
    with running(create_app(str(gen_db))) as client:
        info = client.get("/api/info").json()
        tid = lance.dataset(str(gen_db)).to_table(columns=["tile_id"], limit=1)[0][0].as_py()
        keyed = client.get(f"/api/thumbnail/{tid}", params={"v": info["tag"]})
        assert keyed.status_code == 200
        assert keyed.headers["cache-control"] == "public, max-age=31536000, immutable"
        for v in ({}, {"v": "not-this-version"}):
            other = client.get(f"/api/thumbnail/{tid}", params=v)
            assert other.status_code == 200 and other.headers["cache-control"] == "no-cache"
        assert keyed.content == other.content


def test_basemap_option(plain_db: str) -> None:
    url = "https://tile.openstreetmap.org/{z}/{x}/{y}.png"
    assert basemap_origin(url) == "https://tile.openstreetmap.org"
    assert basemap_origin("https://{s}.tile.example.org/{z}/{x}/{y}.png") == (
        "https://*.tile.example.org"
    )
    for bad in ("javascript:alert(1)//{z}{x}{y}", "https://tiles.example/no-placeholders.png"):
        with pytest.raises(InputError, match="--basemap"):
            basemap_origin(bad)
    with running(create_app(plain_db, basemap=url)) as client:
        r = client.get("/api/info")
        assert r.json()["basemap"] == url
        assert "img-src 'self' data: blob: https://tile.openstreetmap.org;" in _policy(r)
    with running(create_app(plain_db)) as client:
        assert client.get("/api/info").json()["basemap"] is None


def test_page_code_never_parses_text_as_html() -> None:
    """Every dynamic string reaches the page through textContent, attributes or
    DOM nodes: the page code has no HTML sink at all (issue 22, item 2)."""
    from ris_ray.web.app import STATIC

    sinks = ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(")
    for page in sorted(STATIC.glob("*.js")) + sorted(STATIC.glob("*.html")):
        text = "\n".join(
            line for line in page.read_text().splitlines() if not line.lstrip().startswith("//")
        )
        assert not [s for s in sinks if s in text], page.name
        if page.suffix == ".html":  # no inline handlers or scripts (the policy forbids them)
            assert not re.search(r"<[^>]*\son[a-z]+\s*=|<script>", text), page.name
