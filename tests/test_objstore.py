"""Object storage against a real S3 API server (moto, subprocess on loopback).

Settings from AWS_* -> GDAL options / Lance storage options; prefix listing and
HEAD through obstore; one-line errors without secrets; Lance datasets (tiles
and the nested manifest) and GDAL /vsis3/ reads on the server; Lance's commit
under two concurrent writer processes.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import lance
import numpy as np
import pyarrow as pa
import pytest
import rasterio
from ports import free_port
from s3_server import TEST_ENV, MotoServer

from ris_ray.core.errors import LockedError, ObjectNotFoundError, ObjectStoreError, RisError
from ris_ray.core.objstore import (
    S3Settings,
    is_object_uri,
    list_tiffs,
    split_uri,
    stat,
    to_url,
    to_vsi,
)
from ris_ray.core.records import TileBatch
from ris_ray.sample import landscape, write_geotiff
from ris_ray.store.lock import dataset_lock
from ris_ray.store.storelock import LEASE_S, Holder, _take_over, acquire_lock

SECRET = TEST_ENV["AWS_SECRET_ACCESS_KEY"]

# --- settings (pure) ------------------------------------------------------------------------


def test_settings_from_env_for_a_local_http_store() -> None:
    s = S3Settings.from_env(
        {
            "AWS_ENDPOINT_URL": "http://127.0.0.1:9000/",
            "AWS_DEFAULT_REGION": "eu-west-1",
            "AWS_ACCESS_KEY_ID": "AKIA1",
            "AWS_SECRET_ACCESS_KEY": "s3cr3t",
            "AWS_SESSION_TOKEN": "tok",
        }
    )
    assert s.gdal_options() == {
        "AWS_REGION": "eu-west-1",
        "AWS_S3_ENDPOINT": "127.0.0.1:9000",
        "AWS_HTTPS": "NO",
        "AWS_VIRTUAL_HOSTING": "FALSE",
    }
    assert s.lance_storage_options() == {
        "endpoint": "http://127.0.0.1:9000",
        "allow_http": "true",
        "region": "eu-west-1",
        "access_key_id": "AKIA1",
        "secret_access_key": "s3cr3t",
        "session_token": "tok",
    }
    assert "s3cr3t" not in repr(s) and "tok" not in repr(s) and "AKIA1" not in repr(s)


def test_settings_for_aws_itself_and_precedence() -> None:
    s = S3Settings.from_env({"AWS_REGION": "us-west-2", "AWS_DEFAULT_REGION": "eu-west-1"})
    assert s.gdal_options() == {"AWS_REGION": "us-west-2"}
    assert s.lance_storage_options() == {"region": "us-west-2"}
    https = S3Settings.from_env({"AWS_ENDPOINT_URL": "https://s3.example.com"})
    assert https.gdal_options()["AWS_HTTPS"] == "YES"
    assert https.lance_storage_options()["allow_http"] == "false"
    env = {"AWS_ENDPOINT_URL": "https://a", "AWS_ENDPOINT_URL_S3": "http://b:1", "HOME": "/x"}
    s3only = S3Settings.from_env(env)
    assert s3only.endpoint == "http://b:1"
    # Workers get both, so they pick the same endpoint as this process.
    assert s3only.worker_env(env) == {
        "AWS_ENDPOINT_URL": "https://a",
        "AWS_ENDPOINT_URL_S3": "http://b:1",
    }


def test_settings_refuse_an_endpoint_without_scheme() -> None:
    # The scheme-less form is what GDAL's AWS_S3_ENDPOINT takes; for the URL we need one.
    with pytest.raises(ObjectStoreError, match="AWS_ENDPOINT_URL=127.0.0.1:9000: not an http"):
        S3Settings.from_env({"AWS_ENDPOINT_URL": "127.0.0.1:9000"})


def test_uri_forms() -> None:
    assert split_uri("s3://caps/a/b.tif") == ("s3", "caps", "a/b.tif")
    assert split_uri("/vsis3/caps/a/b.tif") == ("s3", "caps", "a/b.tif")
    assert to_vsi("s3://caps/a/b.tif") == "/vsis3/caps/a/b.tif"
    assert to_url("/vsis3/caps/a/b.tif") == "s3://caps/a/b.tif"
    assert to_vsi("gs://g/k.tif") == "/vsigs/g/k.tif"
    assert to_vsi("/data/a.tif") == "/data/a.tif" and to_url("/data/a.tif") == "/data/a.tif"
    assert is_object_uri("s3://caps/") and not is_object_uri("https://x/a.tif")
    with pytest.raises(ObjectStoreError, match="not an object-store URI"):
        split_uri("/data/a.tif")


# --- listing and identity -------------------------------------------------------------------


@pytest.fixture(scope="module")
def caps(s3: MotoServer, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """Bucket ``caps`` with a small capture tree; returns (bucket, local tiff)."""
    bucket = s3.make_bucket("caps")
    d = tmp_path_factory.mktemp("caps")
    tif = d / "a.tif"
    write_geotiff(tif, landscape(256, 256, seed=7), origin=(500000.0, 4000000.0), res=0.5)
    (d / "notes.txt").write_text("not a raster")
    for key in ("flights/day1/a.tif", "flights/day1/b.TIFF", "flights/day2/deep/c.Tif"):
        s3.upload(tif, bucket, key)
    s3.upload(d / "notes.txt", bucket, "flights/day1/notes.txt")
    s3.upload(tif, bucket, "flightsX/other.tif")  # same stem, another prefix
    s3.upload(tif, bucket, "top.tif")
    return bucket, tif


def test_list_tiffs_recursive_any_case_only_under_the_prefix(caps: tuple[str, Path]) -> None:
    bucket, tif = caps
    found = list_tiffs(f"s3://{bucket}/flights/")
    assert [o.uri for o in found] == [
        "s3://caps/flights/day1/a.tif",
        "s3://caps/flights/day1/b.TIFF",
        "s3://caps/flights/day2/deep/c.Tif",
    ]
    assert all(o.size == tif.stat().st_size for o in found)
    assert all(o.etag and '"' not in o.etag for o in found)
    assert all(o.last_modified is not None and o.last_modified_ns > 0 for o in found)
    # Without the trailing slash, and in GDAL's /vsis3/ form: the same objects.
    assert list_tiffs(f"s3://{bucket}/flights") == found
    assert list_tiffs(f"/vsis3/{bucket}/flights/") == found
    # The whole bucket.
    assert len(list_tiffs(f"s3://{bucket}")) == 5


def test_stat_etag_changes_when_an_object_is_replaced(
    s3: MotoServer, caps: tuple[str, Path], tmp_path: Path
) -> None:
    bucket, tif = caps
    uri = s3.upload(tif, bucket, "replace/x.tif")
    before = stat(uri)
    assert before == stat(to_vsi(uri))
    assert (before.size, before.uri) == (tif.stat().st_size, uri)
    other = tmp_path / "other.tif"
    data = bytearray(tif.read_bytes())
    data[-1] ^= 0xFF
    other.write_bytes(bytes(data))  # same size: only the ETag tells
    s3.upload(other, bucket, "replace/x.tif")
    after = stat(uri)
    assert after.size == before.size and after.etag != before.etag


# --- errors ---------------------------------------------------------------------------------


def _one_line_without_secrets(exc: BaseException) -> str:
    text = str(exc)
    assert "\n" not in text and SECRET not in text and TEST_ENV["AWS_ACCESS_KEY_ID"] not in text
    assert isinstance(exc, RisError)
    return text


def test_missing_bucket_and_missing_object(caps: tuple[str, Path]) -> None:
    with pytest.raises(ObjectStoreError) as exc:
        list_tiffs("s3://no-such-bucket/flights/")
    text = _one_line_without_secrets(exc.value)
    assert text.startswith("s3://no-such-bucket/flights/: no such bucket at http://127.0.0.1:")
    with pytest.raises(ObjectNotFoundError) as missing:
        stat("/vsis3/caps/flights/none.tif")
    assert isinstance(missing.value, FileNotFoundError)
    text = _one_line_without_secrets(missing.value)
    assert text.startswith("s3://caps/flights/none.tif: no such object")


def test_unreachable_endpoint() -> None:
    env = {**TEST_ENV, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}"}
    with pytest.raises(ObjectStoreError) as exc:
        list_tiffs("s3://caps/flights/", S3Settings.from_env(env))
    text = _one_line_without_secrets(exc.value)
    assert "endpoint unreachable" in text and "AWS_ENDPOINT_URL" in text


def test_denied_credentials() -> None:
    strict = MotoServer(enforce_auth=True)  # checks keys against its empty IAM
    try:
        settings = S3Settings.from_env({**TEST_ENV, "AWS_ENDPOINT_URL": strict.endpoint})
        with pytest.raises(ObjectStoreError) as exc:
            list_tiffs("s3://caps/flights/", settings)
        text = _one_line_without_secrets(exc.value)
        assert "credentials rejected" in text and "AWS_SECRET_ACCESS_KEY" in text
    finally:
        strict.stop()


# --- Lance datasets on the server -----------------------------------------------------------


def test_lance_needs_allow_http_for_an_http_endpoint(s3: MotoServer) -> None:
    """The 'builder error' of issue 12: Lance reads AWS_ENDPOINT_URL from the
    environment but refuses plain http unless allow_http is set."""
    bucket = s3.make_bucket("builder")
    table = pa.table({"a": [1]})
    with pytest.raises(OSError, match="builder error"):
        lance.write_dataset(table, f"s3://{bucket}/t.lance")
    opts = S3Settings.from_env().lance_storage_options()
    assert lance.write_dataset(table, f"s3://{bucket}/t.lance", storage_options=opts).version == 1


def test_lance_dataset_life_cycle_on_s3(s3: MotoServer) -> None:
    bucket = s3.make_bucket("tiles")
    uri = f"s3://{bucket}/tiles.lance"
    opts = S3Settings.from_env().lance_storage_options()
    rows = pa.table({"tile_id": [f"t{i}" for i in range(300)], "v": np.arange(300.0)})
    lance.write_dataset(rows, uri, storage_options=opts)
    more = pa.table({"tile_id": ["t300"], "v": [300.0]})
    lance.write_dataset(more, uri, mode="append", storage_options=opts)
    ds = lance.dataset(uri, storage_options=opts)
    upd = pa.table({"tile_id": ["t0", "t999"], "v": [-1.0, 999.0]})
    ds.merge_insert("tile_id").when_matched_update_all().when_not_matched_insert_all().execute(upd)
    ds = lance.dataset(uri, storage_options=opts)
    ds.delete("tile_id = 't1'")
    ds.create_scalar_index("tile_id", "BTREE")
    ds.optimize.compact_files()
    ds = lance.dataset(uri, storage_options=opts)
    ds.cleanup_old_versions(older_than=timedelta(0))
    # The manifest is a Lance dataset nested in the tile dataset's prefix.
    manifest = f"{uri}/_ris_manifest.lance"
    lance.write_dataset(pa.table({"path": ["s3://caps/a.tif"]}), manifest, storage_options=opts)
    ds = lance.dataset(uri, storage_options=opts)
    assert ds.count_rows() == 301
    assert ds.to_table(filter="tile_id = 't0'").column("v").to_pylist() == [-1.0]
    assert [v["version"] for v in ds.versions()] == [ds.version]
    assert [list(i.field_names) for i in ds.describe_indices()] == [["tile_id"]]
    assert lance.dataset(manifest, storage_options=opts).count_rows() == 1


def _append_rows(uri: str, worker: int, n: int, opts: dict[str, str]) -> None:
    for j in range(n):
        table = pa.table({"tile_id": [f"w{worker}-{j}"], "worker": [worker]})
        ds = lance.dataset(uri, storage_options=opts)
        (
            ds.merge_insert("tile_id")
            .when_matched_update_all()
            .when_not_matched_insert_all()
            .execute(table)
        )


def test_two_writer_processes_lose_no_commit(s3: MotoServer) -> None:
    """Lance commits a version with a conditional PUT (If-None-Match), which the
    server enforces: concurrent writers retry on conflict, none is lost."""
    bucket = s3.make_bucket("race")
    uri = f"s3://{bucket}/tiles.lance"
    opts = S3Settings.from_env().lance_storage_options()
    lance.write_dataset(pa.table({"tile_id": ["seed"], "worker": [-1]}), uri, storage_options=opts)
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_append_rows, args=(uri, w, 6, opts)) for w in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    ds = lance.dataset(uri, storage_options=opts)
    ids = ds.to_table(columns=["tile_id"]).column("tile_id").to_pylist()
    assert len(ids) == len(set(ids)) == 13
    assert ds.version == 13


# --- GDAL /vsis3/ reads ---------------------------------------------------------------------


def test_rasterio_reads_vsis3_with_the_derived_options(
    s3: MotoServer, caps: tuple[str, Path]
) -> None:
    bucket, tif = caps
    with rasterio.open(tif) as local:
        expected = local.read()
    vsi = to_vsi(f"s3://{bucket}/flights/day1/a.tif")
    with rasterio.Env(**S3Settings.from_env().gdal_options()), rasterio.open(vsi) as remote:
        assert np.array_equal(remote.read(), expected)
        assert remote.crs == local.crs
    assert os.environ["AWS_ENDPOINT_URL"] == s3.endpoint


# --- ris datasets and manifests on the server -----------------------------------------------


def test_manifest_keeps_etags_and_reads_old_manifests(tmp_path: Path) -> None:
    from ris_ray.store.manifest import SCHEMA, FileRecord, Manifest, manifest_uri

    db = str(tmp_path / "old.lance")
    old_schema = pa.schema([f for f in SCHEMA if f.name != "etag"])
    old_row = {
        "path": "/data/a.tif", "size": 10, "mtime_ns": 5, "status": "ok", "tiles": 2,
        "tiles_low_valid": 0, "reason": None, "dataset_version": 1, "ingested_at": 1.0,
    }  # fmt: skip
    lance.write_dataset(pa.Table.from_pylist([old_row], old_schema), manifest_uri(db))
    manifest = Manifest(db)
    assert manifest.load()["/data/a.tif"] == FileRecord(**old_row)  # etag None
    new = FileRecord("s3://caps/b.tif", 20, 7, "ok", tiles=1, etag="abc")
    manifest.upsert([new])
    records = manifest.load()
    assert records["s3://caps/b.tif"].etag == "abc" and records["/data/a.tif"].etag is None
    # Objects: size + ETag decide (last-modified may move on an identical re-upload).
    assert new.same_file(20, 999, "abc") and not new.same_file(20, 7, "abd")
    # Files: size + mtime, as before.
    assert records["/data/a.tif"].same_file(10, 5) and not records["/data/a.tif"].same_file(10, 6)


def test_ris_dataset_and_manifest_on_s3(s3: MotoServer) -> None:
    """store.TileStore (tiles + manifest records in one commit, the dataset
    lock held from open to close), open_dataset/dataset_info/version_history/
    compact on an s3:// --db, configured from AWS_* alone."""
    from ris_ray.store.dataset import dataset_info, open_dataset, version_history
    from ris_ray.store.manifest import FileRecord, Manifest
    from ris_ray.store.schema import DatasetParams, to_table
    from ris_ray.store.tilestore import TileStore, compact

    bucket = s3.make_bucket("risdb")
    db = f"s3://{bucket}/tiles.lance"
    params = DatasetParams(256, 256, "random")

    def record(path: str, version: int | None) -> FileRecord:
        return FileRecord(path, 1, 2, "ok", tiles=1, dataset_version=version, etag="e1")

    store = TileStore.for_ingest(db, params)
    try:
        with pytest.raises(LockedError, match=r"_ris_ingest\.lock: held by ris on "):
            TileStore.for_ingest(db, params)  # a second writer refuses while we hold it
        for source, n in (("s3://caps/a.tif", 3), ("s3://caps/b.tif", 2)):
            store.add(source, to_table(_batch(source, n), params))
            store.finish(source)
            store.commit(record)
        store.add("s3://caps/a.tif", to_table(_batch("s3://caps/a.tif", 1), params))
        store.finish("s3://caps/a.tif")  # a replaced object: its tiles replaced
        assert store.commit(record) == 3
    finally:
        store.close()
    lock_key = "tiles.lance/_ris_ingest.lock"
    assert s3.client().list_objects_v2(Bucket=bucket, Prefix=lock_key)["KeyCount"] == 0
    assert open_dataset(db).count_rows() == 3
    info = dataset_info(db)
    assert (info["rows"], info["sources"], info["version"]) == (3, 2, 3)
    assert [h["operation"] for h in version_history(db)] == ["Overwrite", "Append", "Update"]
    stats = compact(db, keep_days=0)
    assert stats["fragments_after"] <= stats["fragments_before"]
    assert open_dataset(db).count_rows() == 3
    manifest = Manifest(db).load()
    assert manifest["s3://caps/a.tif"].etag == "e1"
    assert manifest["s3://caps/a.tif"].dataset_version == 3
    assert manifest["s3://caps/b.tif"].dataset_version == 2


def _batch(source: str, n: int) -> TileBatch:
    nan = np.full(n, np.nan)
    return TileBatch(
        tile_id=np.array([f"{source}#{i}" for i in range(n)], dtype=object),
        source=np.array([source] * n, dtype=object),
        row=np.zeros(n, np.int32),
        col=np.zeros(n, np.int32),
        width=np.full(n, 256, np.int32),
        height=np.full(n, 256, np.int32),
        valid_fraction=np.ones(n, np.float32),
        thumbnail=np.array([b""] * n, dtype=object),
        minx=nan, miny=nan, maxx=nan, maxy=nan, lon=nan, lat=nan,
        fingerprint=np.ones((n, 512), np.float32),
    )  # fmt: skip


def test_unreachable_dataset_endpoint_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    from ris_ray.store.dataset import open_dataset

    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    with pytest.raises(ObjectStoreError) as exc:
        open_dataset("s3://caps/tiles.lance")
    text = _one_line_without_secrets(exc.value)
    assert text.startswith("s3://caps/tiles.lance: endpoint unreachable")


def test_vector_index_on_s3(s3: MotoServer) -> None:
    from ris_ray.search.index import build_index, refresh_indices, vector_index
    from ris_ray.store.dataset import open_dataset
    from ris_ray.store.manifest import FileRecord
    from ris_ray.store.schema import DatasetParams, to_table
    from ris_ray.store.tilestore import TileStore

    db = f"s3://{s3.make_bucket('indexed')}/tiles.lance"
    params = DatasetParams(256, 256, "random")
    batch = _batch("s3://caps/big.tif", 300)
    batch.fingerprint = np.random.default_rng(0).normal(size=(300, 512)).astype(np.float32)
    store = TileStore.for_ingest(db, params)
    try:
        store.add("s3://caps/big.tif", to_table(batch, params))
        store.finish("s3://caps/big.tif")
        store.commit(lambda path, version: FileRecord(path, 1, 1, "ok"))
    finally:
        store.close()
    assert build_index(db, partitions=4, sub_vectors=16)["rows"] == 300
    assert vector_index(open_dataset(db), "l2") == "fingerprint_ivf_pq_l2"
    assert refresh_indices(db)


def _try_lock(uri: str, name: str, q: mp.Queue[str]) -> None:
    try:
        acquire_lock(uri, Holder(name, 1, 0.0, 9e9, name))
        q.put(f"won {name}")
    except LockedError as exc:
        q.put(f"lost {exc}")


def _holder(host: str, pid: int = 1, age_s: float = 0.0) -> Holder:
    """A lock holder last refreshed ``age_s`` seconds ago."""
    then = time.time() - age_s
    return Holder(host, pid, then, then, f"token-{host}-{pid}")


def _body(s3: MotoServer, bucket: str, key: str) -> dict[str, object]:
    return dict(json.loads(s3.client().get_object(Bucket=bucket, Key=key)["Body"].read()))


def test_store_lock_is_exclusive(s3: MotoServer) -> None:
    bucket = s3.make_bucket("locks")
    uri = f"s3://{bucket}/tiles.lance/_ris_ingest.lock"
    lock = acquire_lock(uri, Holder("host-a", 1, 0.0, 9e9, "a"))
    with pytest.raises(LockedError) as exc:
        acquire_lock(f"/vsis3/{bucket}/tiles.lance/_ris_ingest.lock", Holder.me())
    text = _one_line_without_secrets(exc.value)
    assert text.startswith(f"{uri}: held by ris on host-a pid 1 since 1970-01-01T00:00:00Z")
    assert "wait for that run to finish" in text
    lock.release()
    assert not lock.held
    acquire_lock(uri).release()
    # Two processes at once: exactly one gets it.
    ctx = mp.get_context("spawn")
    q: mp.Queue[str] = ctx.Queue()
    procs = [ctx.Process(target=_try_lock, args=(uri, f"p{i}", q)) for i in range(2)]
    for p in procs:
        p.start()
    results = sorted(q.get(timeout=60) for _ in procs)
    for p in procs:
        p.join(60)
    assert [r.split()[0] for r in results] == ["lost", "won"]
    winner = results[1].split()[1]
    assert f"held by ris on {winner} pid 1 " in results[0]


def test_store_lock_is_a_lease_refreshed_by_its_holder(s3: MotoServer) -> None:
    bucket = s3.make_bucket("lease")
    key = "tiles.lance/_ris_ingest.lock"
    uri = f"s3://{bucket}/{key}"
    # Refreshed just inside the lease by a process on another host: still held.
    s3.client().put_object(Bucket=bucket, Key=key,
                           Body=_holder("host-b", 7, LEASE_S - 20).to_bytes())  # fmt: skip
    with pytest.raises(LockedError, match="held by ris on host-b pid 7"):
        acquire_lock(uri)
    s3.client().delete_object(Bucket=bucket, Key=key)
    lock = acquire_lock(uri)
    try:
        first = _body(s3, bucket, key)
        assert (first["host"], first["pid"]) == (Holder.me().host, os.getpid())
        assert lock.refresh() and lock.refresh()
        later = _body(s3, bucket, key)
        assert later["token"] == first["token"]
        assert float(later["refreshed"]) > float(first["refreshed"])  # type: ignore[arg-type]
        # Another run took it over (we were stale): our next refresh sees its
        # ETag, gives up, and release leaves the other run's lock alone.
        s3.client().put_object(Bucket=bucket, Key=key,
                               Body=_holder("host-c").to_bytes())  # fmt: skip
        assert not lock.refresh() and not lock.held
    finally:
        lock.release()
    assert _body(s3, bucket, key)["host"] == "host-c"


@pytest.mark.parametrize("case", ["not refreshed", "dead pid on this host"])
def test_stale_store_lock_is_taken_over(s3: MotoServer, case: str) -> None:
    bucket = s3.make_bucket("stale-" + case.split()[0])
    key = "tiles.lance/_ris_ingest.lock"
    if case == "not refreshed":  # a killed run on another host, last seen > LEASE_S ago
        stale = _holder("host-killed", 4242, LEASE_S + 5)
    else:  # a run on this host whose process is gone, refreshed a second ago
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        dead.wait()
        stale = _holder(Holder.me().host, dead.pid, 1.0)
    s3.client().put_object(Bucket=bucket, Key=key, Body=stale.to_bytes())
    with dataset_lock(f"s3://{bucket}/tiles.lance") as lock:
        assert lock.held
        assert _body(s3, bucket, key)["pid"] == os.getpid()
    assert s3.client().list_objects_v2(Bucket=bucket, Prefix=key)["KeyCount"] == 0
    # An old lock body (plain text, before leases) counts as refreshed at its
    # last-modified time: just written, so it is live.
    s3.client().put_object(Bucket=bucket, Key=key, Body=b"ris on old-host pid 3 since T")
    with pytest.raises(LockedError, match="held by ris on unknown host"):
        acquire_lock(f"s3://{bucket}/{key}")


def test_lock_wait_polls_a_held_lease_until_it_frees(s3: MotoServer) -> None:
    """dataset_lock(db, wait_s) (``--lock-wait``) on an object-store dataset:
    refuses after wait_s while a live run holds the lease, gets it once freed."""
    bucket = s3.make_bucket("waits")
    db = f"s3://{bucket}/tiles.lance"
    other = acquire_lock(f"{db}/_ris_ingest.lock", _holder("host-w", 5))
    try:
        with pytest.raises(LockedError, match="held by ris on host-w pid 5"):
            dataset_lock(db, wait_s=0.5).__enter__()
        threading.Timer(1.0, other.release).start()
        with dataset_lock(db, wait_s=120) as lock:
            assert (
                lock.held
                and _body(s3, bucket, "tiles.lance/_ris_ingest.lock")["pid"] == os.getpid()
            )
    finally:
        other.release()
    assert s3.client().list_objects_v2(Bucket=bucket, Prefix="tiles.lance/")["KeyCount"] == 0


def test_two_takers_of_one_stale_lock_cannot_both_win(s3: MotoServer) -> None:
    """The take-over PUT is conditional on the stale lock's ETag: of two runs
    that read the same stale lock, the second one's PUT fails."""
    import obstore

    bucket = s3.make_bucket("takers")
    key = "tiles.lance/_ris_ingest.lock"
    uri = f"s3://{bucket}/{key}"
    store = S3Settings.from_env().object_store("s3", bucket)
    stale_etag = obstore.put(store, key, _holder("host-killed", 9, LEASE_S * 2).to_bytes())["e_tag"]
    now = 0.0
    first = Holder("host-x", 1, now, 9e9, "x")
    assert _take_over(store, key, uri, first, stale_etag, now)
    with pytest.raises(LockedError, match="held by ris on host-x pid 1"):
        _take_over(store, key, uri, Holder("host-y", 2, now, 9e9, "y"), stale_etag, now)
    assert _body(s3, bucket, key)["host"] == "host-x"


def test_external_cluster_workers_get_the_aws_settings_as_arguments(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`ris ingest --address` outside a job: ray.init gets no runtime_env (Ray's
    agent logs its env_vars in clear); the tasks get the settings as an
    argument, and a worker without AWS_* installs them into its environment."""
    from ris_ray.core.objstore import worker_settings
    from ris_ray.ingest import cluster, raylocal

    for name in ("AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret-xyz")
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9000")
    seen: dict[str, object] = {}
    monkeypatch.setattr(raylocal, "start", lambda address, **kw: seen.update(kw) or False)
    cluster.connect("127.0.0.1:1")
    assert "secret-xyz" not in repr(seen) and "runtime_env" not in repr(seen)
    settings = worker_settings()
    assert settings is not None and "secret-xyz" not in repr(settings)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name)
    assert worker_settings() is None
    settings.install()  # what a task does with its argument, in the worker
    assert S3Settings.from_env() == settings
    assert os.environ["AWS_SECRET_ACCESS_KEY"] == "secret-xyz"
