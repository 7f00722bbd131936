"""`ris ingest s3://bucket/prefix/ --db s3://bucket/tiles.lance` end to end,
against a real S3 API server (moto, subprocess) and the real CLI in a
subprocess (its own embedded Ray, configured from AWS_* alone).

The ingests run once, as one module-scoped sequence on one dataset
(:func:`flights`); the tests read its results."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


@dataclass
class Flights:
    """The results of one sequence of runs on ``s3://flights/tiles.lance``
    (see :func:`flights`): the runs' outputs and their JSON reports."""

    bucket: str
    db: str
    winner: str  # the prefix whose run got the lock first
    loser: str
    raced: list[tuple[str, int, str, str]]  # (prefix, exit code, stdout, stderr)
    after_race: list[str]  # tile ids right after the race
    race_sources: set[str]  # and the files they come from
    race_version: int  # the dataset's version then
    again: subprocess.CompletedProcess[str]
    again_report: dict[str, Any]
    lock_left: int  # lock objects left after the stale-lock run
    third: subprocess.CompletedProcess[str]
    third_report: dict[str, Any]


def _column(db: str, name: str = "tile_id") -> list[str]:
    from ris_ray.store.lance_io import open_lance

    return list(open_lance(db).to_table(columns=[name]).column(name).to_pylist())


@pytest.fixture(scope="module")
def flights(s3: MotoServer, tmp_path_factory: pytest.TempPathFactory) -> Flights:
    """One dataset on S3, three runs with Ray, one without (the ingests are the
    slow part of this module, so every test below reads this one sequence):

    1. two ingests at once, of ``caps/day1/`` and ``caps/day2/`` (3 objects each,
       one ``.TIFF``): one gets the dataset's lock, the other refuses;
    2. a lock left by a killed run (not refreshed for longer than the lease) is
       put in place, then an unchanged re-run of the winner's prefix (given as
       ``/vsis3/...`` without a trailing slash) takes it over and reads nothing;
    3. the whole ``caps/`` prefix with ``--prune`` after one of the winner's
       objects was replaced, one deleted and one added: the loser's objects,
       the replaced and the new one are read, the deleted one pruned.
    """
    from ris_ray.store.lance_io import open_lance
    from ris_ray.store.storelock import LEASE_S, Holder

    tmp = tmp_path_factory.mktemp("flights")
    bucket = s3.make_bucket("flights")
    seeds = iter(range(1, 100))
    for day in ("day1", "day2"):
        for name in ("a.tif", "b.TIFF", "e.tif"):
            s3.upload(_tif(tmp / f"{next(seeds)}.tif", next(seeds)), bucket, f"caps/{day}/{name}")
    db = f"s3://{bucket}/tiles.lance"
    args = ("--db", db, "--weights", "random", "-q")
    procs = [
        (day, subprocess.Popen([RIS, "ingest", f"s3://{bucket}/caps/{day}/", *args], text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE))
        for day in ("day1", "day2")
    ]  # fmt: skip
    raced = [(day, p.wait(600), *p.communicate()) for day, p in procs]
    won = [day for day, code, _, _ in raced if code == 0]
    assert won, raced
    winner = won[0]
    loser = "day2" if winner == "day1" else "day1"
    after_race = _column(db)
    race_sources = set(_column(db, "source"))
    race_version = int(open_lance(db).version)

    lock = "tiles.lance/_ris_ingest.lock"
    then = time.time() - LEASE_S - 60
    killed = Holder("host-of-a-killed-run", 4242, then, then, "killed")
    s3.client().put_object(Bucket=bucket, Key=lock, Body=killed.to_bytes())
    report = tmp / "again.json"
    again = ris("ingest", f"/vsis3/{bucket}/caps/{winner}", *args, "--report", str(report))
    again_report = json.loads(report.read_text()) if again.returncode == 0 else {}
    lock_left = s3.client().list_objects_v2(Bucket=bucket, Prefix=lock)["KeyCount"]

    s3.upload(_tif(tmp / "n.tif", 50), bucket, f"caps/{winner}/n.tif")  # new
    s3.upload(_tif(tmp / "a2.tif", 51), bucket, f"caps/{winner}/a.tif")  # replaced
    s3.client().delete_object(Bucket=bucket, Key=f"caps/{winner}/b.TIFF")  # deleted
    report = tmp / "third.json"
    third = ris("ingest", f"s3://{bucket}/caps/", *args, "--prune", "--report", str(report))
    third_report = json.loads(report.read_text()) if third.returncode == 0 else {}
    return Flights(bucket, db, winner, loser, raced, after_race, race_sources, race_version,
                   again, again_report, lock_left, third, third_report)  # fmt: skip


def test_two_ingests_at_once_on_one_s3_dataset(flights: Flights) -> None:
    """One holds the dataset's lock (a conditional PUT); the other refuses with
    one line saying who holds it. Re-run, it adds its tiles: none lost or doubled."""
    db = flights.db
    for day, code, out, err in flights.raced:
        _no_secrets(out, err)
        if day != flights.winner and code != 0:
            assert code == 1 and err.count("\n") == 1, err
            assert err.startswith(f"error: {db}/_ris_ingest.lock: held by ris on "), err
            assert "Traceback" not in err
    assert len(flights.after_race) == len(set(flights.after_race))
    assert len(flights.after_race) >= 6
    assert {s for s in flights.race_sources if f"/caps/{flights.winner}/" in s} == {
        f"s3://flights/caps/{flights.winner}/{n}" for n in ("a.tif", "b.TIFF", "e.tif")
    }
    # After the loser's re-run (the third run): all of both prefixes, once each.
    ids = _column(db)
    assert len(ids) == len(set(ids)) == 12
    assert flights.lock_left == 0 and flights.third.returncode == 0  # released


def test_unchanged_rerun_takes_over_a_stale_lock_and_reads_nothing(flights: Flights) -> None:
    assert flights.again.returncode == 0, flights.again.stderr
    data = flights.again_report
    assert (
        data["version"] == flights.race_version
        and data["tiles_written"] == 0
        and data["commits"] == 0
    )
    assert data["ray_gcs_address"] is None
    assert {f["status"] for f in data["files"]} == {"unchanged"} and len(data["files"]) == 3
    assert flights.lock_left == 0  # the killed run's lock was taken over, then released
    _no_secrets(flights.again.stdout, flights.again.stderr)


def test_new_replaced_deleted_objects_and_prune(flights: Flights) -> None:
    assert flights.third.returncode == 0, flights.third.stderr
    data = flights.third_report
    w, lo = f"s3://flights/caps/{flights.winner}", f"s3://flights/caps/{flights.loser}"
    status = {f["path"]: f["status"] for f in data["files"]}
    loser_raced = next(code for day, code, _, _ in flights.raced if day == flights.loser)
    read_again = "unchanged" if loser_raced == 0 else "ok"  # 0: both got the lock in turn
    assert status == {
        f"{w}/a.tif": "ok",  # replaced
        f"{w}/e.tif": "unchanged",
        f"{w}/n.tif": "ok",  # new
        **{f"{lo}/{n}": read_again for n in ("a.tif", "b.TIFF", "e.tif")},
    }
    assert data["tiles_written"] == (10 if read_again == "ok" else 4)
    assert data["missing"] == [f"{w}/b.TIFF"] and data["pruned_tiles"] == 2
    # The embedder actor wrote the rows to the bucket itself (Lance fragments, with
    # the settings it got as an argument); the driver committed them, a.tif's old
    # rows replaced in the same commit.
    assert data["rows_written_by"] == "embedders"
    _no_secrets(flights.third.stdout, flights.third.stderr)


def test_info_query_diff_compact_on_the_s3_dataset(s3: MotoServer, flights: Flights) -> None:
    db, bucket, w = flights.db, flights.bucket, f"s3://flights/caps/{flights.winner}"
    info = ris("info", "--db", db, "--json", "--versions")
    assert info.returncode == 0, info.stderr
    facts = json.loads(info.stdout)
    assert facts["rows"] == 12 and facts["sources"] == 6
    objects = s3.client().list_objects_v2(Bucket=bucket, Prefix="tiles.lance/")["Contents"]
    assert facts["size_bytes"] == sum(o["Size"] for o in objects) > 0
    q = ris("query", "--db", db, "--seed", "1", "-k", "3", "--json")
    assert q.returncode == 0, q.stderr
    assert len(json.loads(q.stdout)["neighbours"]) == 3
    d = ris("diff", "--db", db, "--before", f"{w}/e.tif", "--after", f"{w}/n.tif", "--json")
    assert d.returncode == 0, d.stderr
    assert json.loads(d.stdout)["pairs"] == 2
    comp = ris("compact", "--db", db)
    assert comp.returncode == 0, comp.stderr
    assert len(_column(db)) == 12
    _no_secrets(info.stdout, q.stdout, d.stdout, comp.stdout)


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
    from ports import free_port

    r = ris("info", "--db", "s3://flights/tiles.lance",
            env={"AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}"})  # fmt: skip
    assert r.returncode == 1
    assert "s3://flights/tiles.lance: endpoint unreachable" in r.stderr
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    _no_secrets(r.stderr)


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
