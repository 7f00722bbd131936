"""`ris ingest s3://bucket/prefix/ --db s3://bucket/tiles.lance` end to end,
against a real S3 API server (moto, subprocess) and the real CLI in a
subprocess (its own embedded Ray, configured from AWS_* alone)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from s3_server import TEST_ENV, MotoServer

from ris_ray.sample import landscape, write_geotiff

RIS = str(Path(sys.executable).parent / "ris")


def ris(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [RIS, *args],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **(env or {})},
        check=False,
    )


def _no_secrets(*texts: str) -> None:
    for text in texts:
        assert TEST_ENV["AWS_SECRET_ACCESS_KEY"] not in text


def _tif(path: Path, seed: int) -> Path:
    write_geotiff(path, landscape(256, 512, seed=seed), origin=(500000.0, 4000000.0), res=0.5)
    return path


def test_ingest_a_prefix_into_a_dataset_on_s3_incrementally(s3: MotoServer, tmp_path: Path) -> None:
    bucket = s3.make_bucket("flights")
    for key, seed in (("day1/a.tif", 1), ("day1/b.TIFF", 2), ("day2/c.tif", 3)):
        s3.upload(_tif(tmp_path / f"{seed}.tif", seed), bucket, f"caps/{key}")
    db = f"s3://{bucket}/tiles.lance"
    report = tmp_path / "r1.json"

    first = ris("ingest", f"s3://{bucket}/caps/", "--db", db, "--weights", "random",
                "--report", str(report), "-q")  # fmt: skip
    assert first.returncode == 0, first.stderr
    data = json.loads(report.read_text())
    assert data["tiles_written"] == 6 and data["version"] == 1
    assert sorted(f["path"] for f in data["files"]) == [
        "s3://flights/caps/day1/a.tif",
        "s3://flights/caps/day1/b.TIFF",
        "s3://flights/caps/day2/c.tif",
    ]

    # Unchanged objects: nothing read, no Ray, no new version.
    again = ris("ingest", f"/vsis3/{bucket}/caps", "--db", db, "--weights", "random",
                "--report", str(report), "-q")  # fmt: skip
    assert again.returncode == 0, again.stderr
    data = json.loads(report.read_text())
    assert data["version"] == 1 and data["tiles_written"] == 0 and data["commits"] == 0
    assert data["ray_gcs_address"] is None
    assert {f["status"] for f in data["files"]} == {"unchanged"}

    # New object, replaced object (same key, other pixels), deleted object + --prune.
    s3.upload(_tif(tmp_path / "d.tif", 4), bucket, "caps/day2/d.tif")
    s3.upload(_tif(tmp_path / "a2.tif", 5), bucket, "caps/day1/a.tif")
    s3.client().delete_object(Bucket=bucket, Key="caps/day1/b.TIFF")
    third = ris("ingest", f"s3://{bucket}/caps/", "--db", db, "--weights", "random",
                "--prune", "--report", str(report), "-q")  # fmt: skip
    assert third.returncode == 0, third.stderr
    data = json.loads(report.read_text())
    status = {f["path"]: f["status"] for f in data["files"]}
    assert status["s3://flights/caps/day2/c.tif"] == "unchanged"
    assert status["s3://flights/caps/day2/d.tif"] == status["s3://flights/caps/day1/a.tif"]
    assert data["tiles_written"] == 4
    assert data["missing"] == ["s3://flights/caps/day1/b.TIFF"] and data["pruned_tiles"] == 2

    info = ris("info", "--db", db, "--json", "--versions")
    assert info.returncode == 0, info.stderr
    facts = json.loads(info.stdout)
    assert facts["rows"] == 6 and facts["sources"] == 3
    objects = s3.client().list_objects_v2(Bucket=bucket, Prefix="tiles.lance/")["Contents"]
    assert facts["size_bytes"] == sum(o["Size"] for o in objects) > 0
    q = ris("query", "--db", db, "--seed", "1", "-k", "3", "--json")
    assert q.returncode == 0, q.stderr
    assert len(json.loads(q.stdout)["neighbours"]) == 3
    d = ris("diff", "--db", db, "--before", f"s3://{bucket}/caps/day2/c.tif",
            "--after", f"s3://{bucket}/caps/day2/d.tif", "--json")  # fmt: skip
    assert d.returncode == 0, d.stderr
    assert json.loads(d.stdout)["pairs"] == 2
    comp = ris("compact", "--db", db)
    assert comp.returncode == 0, comp.stderr
    _no_secrets(
        first.stderr, again.stderr, third.stderr, info.stdout, q.stdout, d.stdout, comp.stdout
    )


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["s3://no-such-bucket/caps/"], "s3://no-such-bucket/caps/: no such bucket"),
        (["s3://errs/caps/none.tif"], "s3://errs/caps/none.tif: no such object"),
    ],
)
def test_ingest_store_errors_are_one_line(
    s3: MotoServer, tmp_path: Path, args: list[str], expected: str
) -> None:
    s3.make_bucket("errs")
    r = ris("ingest", *args, "--db", str(tmp_path / "x.lance"), "--weights", "random", "-q")
    assert r.returncode == 1
    assert r.stderr.startswith(f"error: {expected}") and r.stderr.count("\n") == 1
    assert "Traceback" not in r.stderr
    _no_secrets(r.stderr, r.stdout)


def test_unreachable_endpoint_for_the_db_is_one_line(s3: MotoServer, tmp_path: Path) -> None:
    from s3_server import free_port

    r = ris("info", "--db", "s3://flights/tiles.lance",
            env={"AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}"})  # fmt: skip
    assert r.returncode == 1
    assert "s3://flights/tiles.lance: endpoint unreachable" in r.stderr
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    _no_secrets(r.stderr)


def test_two_ingests_at_once_on_one_s3_dataset(s3: MotoServer, tmp_path: Path) -> None:
    """One holds the dataset's lock (a conditional PUT); the other refuses with
    one line saying who holds it. Re-run, it adds its tiles: none lost or doubled."""
    import lance

    from ris_ray.lance_io import storage_options

    bucket = s3.make_bucket("twice")
    for prefix, seed in (("east", 11), ("west", 12)):
        s3.upload(_tif(tmp_path / f"{prefix}.tif", seed), bucket, f"{prefix}/a.tif")
    db = f"s3://{bucket}/tiles.lance"
    args = ("--db", db, "--weights", "random", "-q")
    procs = [
        subprocess.Popen([RIS, "ingest", f"s3://{bucket}/{p}/", *args], text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for p in ("east", "west")
    ]  # fmt: skip
    results = [(p.wait(600), *p.communicate()) for p in procs]
    assert 0 in [code for code, _, _ in results]
    for code, out, err in results:
        _no_secrets(out, err)
        if code != 0:
            assert code == 1 and err.count("\n") == 1
            assert err.startswith(f"error: {db}/_ris_ingest.lock: held by ris on ")
    for prefix, (code, _, _) in zip(("east", "west"), results):
        if code != 0:
            again = ris("ingest", f"s3://{bucket}/{prefix}/", *args)
            assert again.returncode == 0, again.stderr
    ds = lance.dataset(db, storage_options=storage_options(db))
    ids = ds.to_table(columns=["tile_id"]).column("tile_id").to_pylist()
    assert len(ids) == len(set(ids)) == 4
    assert (
        s3.client().list_objects_v2(Bucket=bucket, Prefix="tiles.lance/_ris_ingest")["KeyCount"]
        == 0
    )  # released


def test_denied_credentials_are_one_line(tmp_path: Path) -> None:
    strict = MotoServer(enforce_auth=True)  # knows no key: every request is refused
    try:
        r = ris("ingest", "s3://caps/flights/", "--db", str(tmp_path / "x.lance"),
                "--weights", "random", "-q",
                env={**TEST_ENV, "AWS_ENDPOINT_URL": strict.endpoint})  # fmt: skip
    finally:
        strict.stop()
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert r.stderr.startswith("error: s3://caps/flights/: credentials rejected at http://")
    assert TEST_ENV["AWS_ACCESS_KEY_ID"] not in r.stderr
    _no_secrets(r.stderr, r.stdout)
