"""Guard the bucket (issue 22, items 7-9) and parse a location once (issue 20,
item 4), against the moto S3 server (tests/s3_server.py)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from s3_server import TEST_ENV, MotoServer

from ris_ray.core.errors import LockedError, ObjectStoreError
from ris_ray.core.location import Location
from ris_ray.core.objstore import S3Settings, list_tiffs, stat
from ris_ray.sample import landscape, write_geotiff

RIS = str(Path(sys.executable).parent / "ris")


def ris(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [RIS, *args], capture_output=True, text=True, timeout=600, env=os.environ, check=False
    )


def _tif(path: Path, seed: int) -> Path:
    write_geotiff(path, landscape(256, 512, seed=seed), origin=(500000.0, 4000000.0), res=0.5)
    return path


def _put(s3: MotoServer, bucket: str, key: str, body: bytes) -> None:
    s3.client().put_object(Bucket=bucket, Key=key, Body=body)


@dataclass
class Guard:
    bucket: str
    db: Path
    first: subprocess.CompletedProcess[str]
    first_report: dict[str, Any]
    second: subprocess.CompletedProcess[str]
    second_report: dict[str, Any]
    sources_before: set[str]
    sources_after: set[str]


@pytest.fixture(scope="module")
def guard(s3: MotoServer, tmp_path_factory: pytest.TempPathFactory) -> Guard:
    """``s3://guard`` (no slash: the bucket root) holding ``cap/k.tif``,
    ``cap/k.tif/inner.tif``, the legal keys ``cap/c//dbl.tif`` and
    ``cap/c/./dot.tif`` and a folder marker ``cap/scene.tif/``; then
    ``ris ingest s3://guard/cap/k.tif --prune``."""
    tmp = tmp_path_factory.mktemp("guard")
    bucket = s3.make_bucket("guard")
    tif = _tif(tmp / "a.tif", 3).read_bytes()
    for key in ("cap/k.tif", "cap/k.tif/inner.tif", "cap/c//dbl.tif", "cap/c/./dot.tif"):
        _put(s3, bucket, key, tif)
    _put(s3, bucket, "cap/scene.tif/", b"")
    db = tmp / "db.lance"
    args = ("--db", str(db), "--weights", "random", "-q")
    first = ris("ingest", f"s3://{bucket}", *args, "--report", str(tmp / "r1.json"))
    r1 = json.loads((tmp / "r1.json").read_text()) if (tmp / "r1.json").exists() else {}
    before = _sources(db) if db.exists() else set()
    second = ris(
        "ingest", f"s3://{bucket}/cap/k.tif", *args, "--prune", "--report", str(tmp / "r2.json")
    )
    r2 = json.loads((tmp / "r2.json").read_text()) if (tmp / "r2.json").exists() else {}
    return Guard(bucket, db, first, r1, second, r2, before, _sources(db))


def _sources(db: Path) -> set[str]:
    from ris_ray.store.lance_io import open_lance

    return set(open_lance(str(db)).to_table(columns=["source"]).column("source").to_pylist())


def test_bucket_root_odd_keys_and_markers(guard: Guard) -> None:
    """``s3://bucket`` is the bucket root; ``c//dbl.tif`` and ``c/./dot.tif``
    do not break the listing (each is a file of the run, read or failed on its
    own); the marker ``scene.tif/`` is no file."""
    assert guard.first.returncode in (0, 2), guard.first.stderr[-2000:]
    assert "InvalidPath" not in guard.first.stderr and "AWS_* settings" not in guard.first.stderr
    paths = {f["path"]: f["status"] for f in guard.first_report["files"]}
    b = guard.bucket
    assert set(paths) == {
        f"s3://{b}/cap/k.tif",
        f"s3://{b}/cap/k.tif/inner.tif",
        f"s3://{b}/cap/c//dbl.tif",
        f"s3://{b}/cap/c/./dot.tif",
    }, paths
    assert paths[f"s3://{b}/cap/k.tif"] == paths[f"s3://{b}/cap/k.tif/inner.tif"] == "ok"
    assert TEST_ENV["AWS_SECRET_ACCESS_KEY"] not in guard.first.stdout + guard.first.stderr


def test_prune_of_one_object_keeps_the_objects_under_its_name(guard: Guard) -> None:
    inner = f"s3://{guard.bucket}/cap/k.tif/inner.tif"
    assert inner in guard.sources_before  # so what follows tests the prune itself
    assert guard.second.returncode == 0, guard.second.stderr[-2000:]
    assert guard.second_report["pruned_files"] == 0
    assert f"s3://{guard.bucket}/cap/k.tif/inner.tif" in guard.sources_after


def test_listing_skips_markers_and_reads_odd_keys(s3: MotoServer) -> None:
    bucket = s3.make_bucket("odd")
    for key in ("c/ok.tif", "c//dbl.tif", "c/./dot.tif", "c/zz.tif"):
        _put(s3, bucket, key, b"x")
    _put(s3, bucket, "c/scene.tif/", b"")
    got = [o.uri for o in list_tiffs(f"s3://{bucket}/c/")]
    assert got == sorted(
        f"s3://{bucket}/{k}" for k in ("c/ok.tif", "c//dbl.tif", "c/./dot.tif", "c/zz.tif")
    )
    assert [o.uri for o in list_tiffs(f"s3://{bucket}")] == got


def test_a_bucket_without_a_slash_is_its_root(s3: MotoServer) -> None:
    """``s3://empty`` is an empty bucket (no files, not one missing object);
    ``s3://scans.tif``, a legal bucket name, is listed, not read as a TIFF."""
    from ris_ray.ingest.inputs import discover_objects

    s3.make_bucket("empty")
    bucket = s3.make_bucket("scans.tif")
    _put(s3, bucket, "c/a.tif", b"x")
    assert discover_objects(["s3://empty"])[0] == []
    assert discover_objects([f"s3://{bucket}"])[0] == [f"s3://{bucket}/c/a.tif"]


def test_one_object_with_a_wrong_secret_says_credentials_rejected() -> None:
    """A HEAD refused with 403 has no body: the one-byte GET names the cause."""
    strict = MotoServer(enforce_auth=True)  # checks keys against its empty IAM
    try:
        bad = S3Settings.from_env({**TEST_ENV, "AWS_ENDPOINT_URL": strict.endpoint})
        with pytest.raises(ObjectStoreError, match="credentials rejected") as info:
            stat("s3://caps/a.tif", bad)
        assert "ListBucket" not in str(info.value)
        assert TEST_ENV["AWS_SECRET_ACCESS_KEY"] not in str(info.value)
    finally:
        strict.stop()


def test_a_lost_lease_keeps_the_new_holders_lock_and_says_so_once(
    s3: MotoServer, caplog: pytest.LogCaptureFixture
) -> None:
    from ris_ray.store.storelock import Holder, acquire_lock

    bucket = s3.make_bucket("lease")
    key = "db.lance/_ris_ingest.lock"
    lock = acquire_lock(f"s3://{bucket}/{key}", Holder("host-a", 1, 0.0, 9e9, "a"))
    other = Holder("host-b", 2, time.time(), time.time(), "b")
    _put(s3, bucket, key, other.to_bytes())  # another run took it over
    with caplog.at_level(logging.WARNING, logger="ris_ray.store.storelock"):
        lock.release()
        lock.release()
    body = s3.client().get_object(Bucket=bucket, Key=key)["Body"].read()
    assert json.loads(body)["host"] == "host-b"
    lost = [r for r in caplog.records if "took this lock over" in r.getMessage()]
    log = logging.getLogger("ris_ray.store.storelock")
    assert len(lost) == 1, (log.disabled, log.getEffectiveLevel(), caplog.text)


def test_a_release_error_does_not_replace_the_real_error(s3: MotoServer) -> None:
    from ris_ray.store.storelock import acquire_lock

    bucket = s3.make_bucket("dying")
    lock = acquire_lock(f"s3://{bucket}/db.lance/_ris_ingest.lock")
    dead = S3Settings.from_env({**s3.env(), "AWS_ENDPOINT_URL": "http://127.0.0.1:9"})
    lock.location = lock.location.with_settings(dead)  # the endpoint dies mid-run
    with pytest.raises(RuntimeError, match="the real error"), lock:
        raise RuntimeError("the real error")
    s3.client().delete_object(Bucket=bucket, Key="db.lance/_ris_ingest.lock")


def test_lock_wait_on_a_held_lock_says_who_and_when_at_once(s3: MotoServer) -> None:
    from ris_ray.store.lock import LeaseLock
    from ris_ray.store.storelock import Holder

    bucket = s3.make_bucket("waiting")
    now = time.time()
    _put(s3, bucket, "db.lance/_ris_ingest.lock", Holder("far-host", 7, now, now, "x").to_bytes())
    said: list[str] = []
    started = time.monotonic()
    with pytest.raises(LockedError):
        LeaseLock(f"s3://{bucket}/db.lance", wait_s=2.5, say=said.append).__enter__()
    assert len(said) == 1, said
    assert "far-host pid 7" in said[0] and "goes stale in 1" in said[0], said
    assert time.monotonic() - started >= 2.5


def test_a_writer_that_loses_the_create_race_appends(tmp_path: Path) -> None:
    import pyarrow as pa

    from ris_ray.store.lance_io import open_lance
    from ris_ray.store.schema import DatasetParams
    from ris_ray.store.writer import TileWriter

    params = DatasetParams(model="m", tile_size=256, stride=256)
    db = str(tmp_path / "race.lance")
    one, two = TileWriter(db, params), TileWriter(db, params)  # both see no dataset
    for writer, name in ((one, "a.tif"), (two, "b.tif")):
        rows = pa.Table.from_pylist([_row(name)], schema=writer.schema)
        writer.add(name, rows)
        writer.finish(name)
    assert one.commit()[0] is not None
    version, sources = two.commit()  # was: OSError: Dataset already exists
    assert version is not None and sources == ["b.tif"]
    assert open_lance(db).count_rows() == 2


def _row(source: str) -> dict[str, Any]:
    from ris_ray.store.schema import DatasetParams, schema_for

    schema = schema_for(DatasetParams(model="m", tile_size=256, stride=256))
    row: dict[str, Any] = {f.name: None for f in schema}
    row.update(tile_id=source * 4, source=source, row=0, col=0, width=256, height=256)
    row.update(valid_fraction=1.0, model="m")
    row["fingerprint"] = [0.0] * schema.field("fingerprint").type.list_size
    return row


def test_vsis3_names_the_stored_s3_source() -> None:
    from ris_ray.search.filters import match_sources

    stored = ["s3://b/cap/a.tif", "s3://b/cap/b.tif", "/data/a.tif"]
    assert match_sources(stored, "/vsis3/b/cap/a.tif") == ["s3://b/cap/a.tif"]
    assert match_sources(stored, "/vsis3/b/cap/*.tif") == stored[:2]
    assert match_sources(stored, "a.tif") == ["s3://b/cap/a.tif", "/data/a.tif"]


def test_one_ingest_parses_its_db_once(
    s3: MotoServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``cfg.db`` is parsed into a Location once (IngestConfig) and carried as
    that value through inputs, lock, lance_io and the store."""
    from ris_ray.core.config import IngestConfig
    from ris_ray.ingest.pipeline import ingest

    bucket = s3.make_bucket("once")
    s3.upload(_tif(tmp_path / "a.tif", 5), bucket, "caps/a.tif")
    db = f"s3://{bucket}/tiles.lance"
    parsed: list[str] = []
    original = Location.parse.__func__  # type: ignore[attr-defined]

    def counting(cls: type[Location], text: Any, settings: Any = None) -> Location:
        if isinstance(text, str) and text.startswith(db):
            parsed.append(text)
        return original(cls, text, settings)  # type: ignore[no-any-return]

    monkeypatch.setattr(Location, "parse", classmethod(counting))
    cfg = IngestConfig(inputs=(f"s3://{bucket}/caps/",), db=db, weights="random", progress=False)
    report = ingest(cfg)
    assert report.tiles_written == 2
    assert parsed == [db], parsed
