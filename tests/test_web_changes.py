"""``ris serve`` over a dataset that is empty, or that is deleted, replaced
or compacted under the running server: one-line JSON answers (4xx / 503),
never a 500, and the server follows every change (issue 22, items 2-3)."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import lance
import pyarrow as pa
from test_serve import running

from ris_ray.cli import main
from ris_ray.sample import synthetic_fingerprints, write_fingerprint_dataset
from ris_ray.search.query import query
from ris_ray.web import create_app


def _one_line(r: httpx.Response, status: int) -> str:
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json"), r.headers
    detail = r.json()["detail"]
    assert isinstance(detail, str) and "\n" not in detail and "Traceback" not in detail
    return detail


def _append(db: str, first: int, vectors: object) -> None:
    """Another "ingest": rows with ids ``first``... appended as a new version."""
    x = pa.array(vectors.reshape(-1))  # type: ignore[attr-defined]
    n = len(x) // 512
    more = lance.dataset(db).to_table(limit=n)
    ids = pa.array([f"{i:020x}" for i in range(first, first + n)], pa.string())
    more = more.set_column(0, more.schema.field(0), ids)
    fp = pa.FixedSizeListArray.from_arrays(x, 512)
    more = more.set_column(more.schema.get_field_index("fingerprint"), "fingerprint", fp)
    lance.write_dataset(more.cast(lance.dataset(db).schema), db, mode="append")


def test_a_dataset_of_no_rows_serves(tmp_path: Path) -> None:
    """An ingest of images all smaller than a tile commits 0 rows: the server
    starts (it used to die in FlatScan: cannot reshape array of size 0)."""
    full, db = str(tmp_path / "full.lance"), str(tmp_path / "empty.lance")
    write_fingerprint_dataset(full, synthetic_fingerprints(4, seed=1))
    lance.write_dataset(lance.dataset(full).to_table(limit=0), db)
    assert lance.dataset(db).count_rows() == 0
    with running(create_app(db, check_every=0)) as client:
        info = client.get("/api/info").json()
        assert info["rows"] == 0 and info["sources"] == [] and info["bounds_wgs84"] is None
        assert client.get("/api/sources").json()["features"] == []
        tiles = client.get("/api/tiles", params={"bbox": "-180,-90,180,90"}).json()
        assert tiles["total"] == 0 and tiles["features"] == []
        assert client.get("/api/tiles", params={"ungeoreferenced": "true"}).json()["total"] == 0
        assert "not in" in _one_line(client.get("/api/query", params={"tile_id": "0" * 20}), 404)
        _one_line(client.get("/api/thumbnail/" + "0" * 20), 404)


def test_deleted_while_serving_is_503_then_back(tmp_path: Path) -> None:
    db, keep = str(tmp_path / "a.lance"), tmp_path / "keep.lance"
    write_fingerprint_dataset(db, synthetic_fingerprints(200, seed=1))
    shutil.copytree(db, keep)
    tid = f"{5:020x}"
    with running(create_app(db, check_every=0)) as client:
        assert client.get("/api/query", params={"tile_id": tid}).status_code == 200
        shutil.rmtree(db)
        for path, params in [
            ("/api/info", {}),
            ("/api/sources", {}),
            ("/api/tiles", {"ungeoreferenced": "true"}),
            ("/api/query", {"tile_id": tid}),
            (f"/api/thumbnail/{tid}", {}),
            ("/api/diff", {"before": "000000.tif", "after": "000001.tif"}),
        ]:
            detail = _one_line(client.get(path, params=params), 503)
            assert db in detail and "cannot be read now" in detail, (path, detail)
        shutil.copytree(keep, db)  # restored: answered again, no restart
        assert client.get("/api/info").json()["rows"] == 200
        assert client.get("/api/query", params={"tile_id": tid}).status_code == 200


def test_replaced_by_a_copy_with_the_same_version_number(tmp_path: Path) -> None:
    """Both datasets are at version 1: comparing version numbers alone never
    noticed the swap (the server answered from the old rows)."""
    db, other = str(tmp_path / "a.lance"), str(tmp_path / "b.lance")
    write_fingerprint_dataset(db, synthetic_fingerprints(300, seed=1))
    write_fingerprint_dataset(other, synthetic_fingerprints(120, seed=2))
    assert lance.dataset(db).version == lance.dataset(other).version
    with running(create_app(db, check_every=0)) as client:
        assert client.get("/api/info").json()["rows"] == 300
        shutil.rmtree(db)
        shutil.copytree(other, db)
        assert client.get("/api/info").json()["rows"] == 120
        served = client.get("/api/query", params={"tile_id": f"{7:020x}", "k": 5}).json()
        expected = query(other, tile_id=f"{7:020x}", k=5).to_dict()
        assert [n["tile_id"] for n in served["neighbours"]] == [
            n["tile_id"] for n in expected["neighbours"]
        ]
        gone = client.get("/api/query", params={"tile_id": f"{200:020x}"})
        assert "not in" in _one_line(gone, 404)


def test_compacted_while_serving_reopens_and_retries(tmp_path: Path) -> None:
    """``ris compact --keep-days 0`` deletes the files of the version held;
    the next read fails with Lance's 'Not found .../data/...lance': the
    server reopens the dataset once and answers (no version check is due:
    check_every is an hour)."""
    db = str(tmp_path / "c.lance")
    x = synthetic_fingerprints(300, seed=4)
    write_fingerprint_dataset(db, x[:100])
    _append(db, 100, x[100:200])
    _append(db, 200, x[200:])
    with running(create_app(db, check_every=3600)) as client:
        held = client.get("/api/info").json()["version"]
        tid = f"{250:020x}"
        before = client.get("/api/query", params={"tile_id": tid, "k": 5}).json()
        code = None
        try:
            main(["compact", "--db", db, "--keep-days", "0"])
        except SystemExit as exc:
            code = exc.code
        assert code in (0, None)
        assert lance.dataset(db).version > held
        r = client.get("/api/query", params={"tile_id": tid, "k": 5})
        assert r.status_code == 200, r.text
        assert [n["tile_id"] for n in r.json()["neighbours"]] == [
            n["tile_id"] for n in before["neighbours"]
        ]
        assert client.get("/api/info").json()["version"] == lance.dataset(db).version
