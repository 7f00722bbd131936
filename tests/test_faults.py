"""Faults: killed workers are retried by Ray, readers always see whole files."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import lance
import psutil
import pytest

from ris_ray.core.config import IngestConfig
from ris_ray.ingest.pipeline import IngestReport, ingest
from ris_ray.sample import landscape, write_geotiff
from ris_ray.search.query import query


def _files(d: Path, n: int, height: int, width: int, compress: str = "deflate") -> int:
    d.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        write_geotiff(d / f"cap{i}.tif", landscape(height, width, 40 + i), compress=compress)
    return n * (height // 256) * (width // 256)


def _run_in_thread(cfg: IngestConfig) -> tuple[threading.Thread, dict[str, IngestReport]]:
    out: dict[str, IngestReport] = {}
    t = threading.Thread(target=lambda: out.setdefault("report", ingest(cfg)), daemon=True)
    t.start()
    return t, out


def _kill_once(title: str, thread: threading.Thread, poll_s: float) -> bool:
    """SIGKILL the first process of *our* Ray whose title starts with ``title``."""
    me = psutil.Process(os.getpid())
    while thread.is_alive():
        for p in me.children(recursive=True):
            try:
                cmd = p.cmdline()
            except psutil.Error:
                continue
            if cmd and cmd[0].startswith(title):
                p.send_signal(signal.SIGKILL)
                return True
        time.sleep(poll_s)
    return False


def _check(db: Path, report: IngestReport, expected: int) -> None:
    ids = lance.dataset(str(db)).to_table(columns=["tile_id"])["tile_id"].to_pylist()
    assert len(ids) == len(set(ids)) == expected
    assert report.tiles_written == expected
    assert report.files_failed == []
    # Every data file belongs to a version: a fragment a killed call wrote is gone.
    ds = lance.dataset(str(db))
    used = {
        f.path
        for v in ds.versions()
        for fr in lance.dataset(str(db), version=v["version"]).get_fragments()
        for f in fr.data_files()
    }
    assert {p.name for p in (db / "data").iterdir()} == used


def _fault_run(
    ray_session: None,
    tmp_path: Path,
    title: str,
    poll_s: float,
    make: Callable[[Path], int],
    **cfg: object,
) -> None:
    for attempt in range(3):  # a tiling task is short: try again if none was caught
        src, db = tmp_path / f"src{attempt}", tmp_path / f"db{attempt}.lance"
        expected = make(src)
        t, out = _run_in_thread(
            IngestConfig(inputs=(str(src),), db=str(db), weights="random", progress=False, **cfg)
        )  # type: ignore[arg-type]
        killed = _kill_once(title, t, poll_s)
        t.join(timeout=600)
        assert not t.is_alive()
        _check(db, out["report"], expected)
        assert out["report"].rows_written_by == cfg.get("write_rows", "driver")
        if killed:
            return
    pytest.fail(f"no {title} process was caught running in 3 attempts")


@pytest.mark.parametrize("write_rows", ["embedders", "driver"])
def test_killed_embedder_actor_is_restarted(
    ray_session: None, tmp_path: Path, write_rows: str
) -> None:
    _fault_run(
        ray_session,
        tmp_path,
        "ray::EmbedActor.embed",
        0.02,
        lambda d: _files(d, 4, 512, 1024),
        write_rows=write_rows,
    )


@pytest.mark.parametrize(
    ("write_rows", "task"), [("embedders", "ray::cut_embed_task"), ("driver", "ray::tile_task")]
)
def test_killed_tiling_worker_is_retried(
    ray_session: None, tmp_path: Path, write_rows: str, task: str
) -> None:
    # JPEG-compressed 2048 px windows take a while to decode: a task is easy to catch.
    _fault_run(
        ray_session,
        tmp_path,
        task,
        0.005,
        lambda d: _files(d, 3, 1024, 2048, compress="jpeg"),
        min_valid=0.0,
        write_rows=write_rows,
    )


@pytest.mark.parametrize("write_rows", ["embedders", "driver"])
def test_readers_see_whole_files_during_commits(
    ray_session: None, tmp_path: Path, write_rows: str
) -> None:
    src, db = tmp_path / "src", tmp_path / "db.lance"
    expected = _files(src, 8, 512, 512)  # 4 tiles per file
    t, out = _run_in_thread(
        IngestConfig(
            inputs=(str(src),),
            db=str(db),
            weights="random",
            progress=False,
            commit_every_s=0.0,
            call_tiles=1,  # one file per embedder call: several commits
            write_rows=write_rows,  # type: ignore[arg-type]
        )
    )
    seen: set[int] = set()
    while t.is_alive():
        if (db / "_versions").is_dir():
            try:
                ds = lance.dataset(str(db))
            except ValueError:
                continue  # not created yet
            ids = ds.to_table(columns=["tile_id"])["tile_id"].to_pylist()
            assert len(ids) % 4 == 0 and len(ids) == len(set(ids))
            seen.add(ds.version)
            if ids:
                assert query(str(db), seed=len(seen), k=2).neighbours
        time.sleep(0.02)
    t.join()
    _check(db, out["report"], expected)
    assert out["report"].rows_written_by == write_rows
    assert len(seen) >= 2, "the reader should have seen more than one version"
