"""Checks before work, one writer per dataset, a full disk: one line, data intact."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import lance
import pytest
from cli_run import run

from ris_ray.store.lock import LocalLock, lock_path

BIN = Path(sys.executable).parent


def _one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def _ris(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("RAY_ADDRESS", None)
    cmd = [str(BIN / "ris"), "ingest", *args, "--weights", "random", "--commit-every", "0"]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture
def mount_point() -> Iterator[Path]:
    """An empty folder to mount a small tmpfs on (root only; skipped otherwise)."""
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("needs root to mount a tmpfs")
    d = Path(f"/tmp/rismnt-{uuid.uuid4().hex[:6]}")
    d.mkdir()
    yield d
    subprocess.run(["umount", str(d)], capture_output=True)
    shutil.rmtree(d, ignore_errors=True)


def _mount(d: Path, options: str) -> None:
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(d)])
    if proc.returncode:
        pytest.skip("cannot mount a tmpfs here")


def test_unwritable_db_and_report_stop_before_any_work(
    capsys: pytest.CaptureFixture[str], gen_dir: Path, tmp_path: Path, mount_point: Path
) -> None:
    _mount(mount_point, "size=1m,ro")
    code, _, err = run(["ingest", str(gen_dir), "--db", str(mount_point / "t.lance")], capsys)
    line = _one_error_line(err)
    assert code == 1 and "--db" in line and "Read-only file system" in line
    # A --db that is a regular file.
    f = tmp_path / "file.lance"
    f.write_text("x")
    code, _, err = run(["ingest", str(gen_dir), "--db", str(f)], capsys)
    assert code == 1 and "is a file" in _one_error_line(err)
    # A --report in a missing directory: refused first, nothing written.
    db = tmp_path / "t.lance"
    report = tmp_path / "missing" / "r.json"
    code, _, err = run(["ingest", str(gen_dir), "--db", str(db), "--report", str(report)], capsys)
    assert code == 1 and "does not exist" in _one_error_line(err)
    assert not db.exists() and not lock_path(str(db)).exists()


def test_a_held_lock_refuses_with_the_holder_and_a_dead_holder_does_not_block(
    capsys: pytest.CaptureFixture[str], gen_dir: Path, tmp_path: Path
) -> None:
    db = str(tmp_path / "t.lance")
    with LocalLock(db):
        code, _, err = run(["ingest", str(gen_dir), "--db", db, "--weights", "random"], capsys)
        line = _one_error_line(err)
        assert code == 1 and "is writing it" in line and f"pid {os.getpid()}" in line
        with pytest.raises(BlockingIOError):
            LocalLock(db, wait_s=0.3).__enter__()
    assert not lock_path(db).exists()  # released and removed
    # A holder killed with SIGKILL leaves no lock in the way.
    code_s = (
        f"from ris_ray.store.lock import LocalLock; LocalLock({db!r}).__enter__(); "
        "print(1, flush=True);"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code_s + "import time; time.sleep(600)"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "1"
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert lock_path(db).exists()
    with LocalLock(db):
        pass


def test_compact_and_index_take_the_lock_serve_does_not(
    capsys: pytest.CaptureFixture[str], gen_db: Path
) -> None:
    from fastapi.testclient import TestClient

    from ris_ray.web import create_app

    db = str(gen_db)
    with LocalLock(db):
        for argv in (["compact", "--db", db], ["index", "--db", db]):
            code, _, err = run(argv, capsys)
            line = _one_error_line(err)
            assert code == 1 and "is writing it" in line and f"pid {os.getpid()}" in line, argv
        # A reader never waits for the writer lock: ris serve opens and answers.
        with TestClient(create_app(db), base_url="http://127.0.0.1") as client:
            info = client.get("/api/info")
            assert info.status_code == 200 and info.json()["rows"] == 7, info.text
    assert not lock_path(db).exists()


def test_compact_and_index_wait_for_the_lock_when_asked(
    capsys: pytest.CaptureFixture[str], gen_db: Path
) -> None:
    import threading

    db = str(gen_db)
    # compact succeeds; index gets past the lock to its own refusal (7 rows is too few)
    for argv, want in ((["compact", "--db", db], 0), (["index", "--db", db], 1)):
        held = LocalLock(db)
        held.__enter__()
        timer = threading.Timer(1.0, held.__exit__, (None, None, None))
        timer.start()  # the other writer finishes after a second
        try:
            code, _, err = run([*argv, "--lock-wait", "60"], capsys)
        finally:
            timer.join()
        assert code == want and "is writing it" not in err, (argv, err)
        assert want == 0 or "too few for an index" in _one_error_line(err)
    assert not lock_path(db).exists()


def _rows(db: Path) -> list[str]:
    ds = lance.dataset(str(db))
    return ds.to_table(columns=["tile_id"]).column("tile_id").to_pylist()  # type: ignore[no-any-return]


def test_two_concurrent_ingests_new_and_existing_dataset(gen_dir: Path, tmp_path: Path) -> None:
    src = tmp_path / "in"
    shutil.copytree(gen_dir, src)
    db = tmp_path / "t.lance"
    for round_ in range(2):
        if round_:  # an existing dataset, with one new file (2 tiles)
            shutil.copy(src / "rgb.tif", src / "rgb_copy.tif")
        env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
        env.pop("RAY_ADDRESS", None)
        cmd = [str(BIN / "ris"), "ingest", str(src), "--db", str(db), "--weights", "random", "-q"]
        procs = [
            subprocess.Popen(
                cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
            for _ in range(2)
        ]
        for p in procs:
            out, err = p.communicate(timeout=600)
            assert "Traceback" not in out + err
            assert p.returncode in (0, 1), err
            if p.returncode:
                assert "is writing it" in _one_error_line(err)
        if round_:
            again = _ris(str(src), "--db", str(db), "-q")  # one more run completes the set
            assert again.returncode == 0, again.stderr
        ids = _rows(db)  # one of the pair committed it all: nothing lost or twice
        assert len(ids) == len(set(ids)) == (7 if round_ == 0 else 9)


def test_disk_full_mid_run_is_exit_2_and_the_next_run_completes(
    ray_session: None,
    capsys: pytest.CaptureFixture[str],
    gen_dir: Path,
    tmp_path: Path,
    mount_point: Path,
) -> None:
    # In-process CLI runs on the session's Ray (what a Ray start would add is not
    # under test here; the lock and preflight tests run real `ris` processes).
    def ingest(*inputs: Path) -> tuple[int, str, str]:
        argv = ["ingest", *map(str, inputs), "--db", str(db), "--weights", "random", "-q"]
        return run([*argv, "--commit-every", "0"], capsys)

    _mount(mount_point, "size=4m")
    db = mount_point / "t.lance"
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    shutil.copy(gen_dir / "rgb.tif", first / "rgb.tif")
    for name in ("fill.tif", "pan16.tif"):
        shutil.copy(gen_dir / name, second / name)
    code, _, err = ingest(first)
    assert code == 0, err
    version = lance.dataset(str(db)).version
    # Fill the disk to the last byte.
    with (mount_point / "filler").open("wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    code, out, err = ingest(first, second)
    assert code == 2, out + err
    line = _one_error_line(err)
    assert "no space left" in line and f"({version})" in line
    assert lance.dataset(str(db)).count_rows() == 2  # the last commit, readable
    (mount_point / "filler").unlink()
    code, _, err = ingest(first, second)
    assert code == 0, err
    ids = _rows(db)
    assert len(ids) == len(set(ids)) == 2 + 1 + 2  # rgb, fill, pan16
