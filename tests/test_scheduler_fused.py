"""The scheduler's cut-and-embed tasks (rows written by the embedders) without
Ray: fake outcomes in random order, crashes redone, sizes spread over the slots."""

from __future__ import annotations

import random

import pytest
from test_scheduler import _info, _sched, _three_files

from ris_ray.core.records import Failure, TileStats
from ris_ray.ingest.scheduler import CRASH_RETRIES, Probe, Scheduler, Tile
from ris_ray.raster.reading import RasterInfo


def _fused(paths: list[str], **kw: object) -> Scheduler:
    """A scheduler whose tiling tasks also embed (``max_task_tiles`` set)."""
    args: dict[str, object] = {"max_task_tiles": 12, "max_inflight": 3, "probe_files": 3}
    args.update(kw)
    return _sched(paths, **args)


def _outcome(work: Tile, fail_call: set[str]) -> tuple[list[TileStats], list[int | Failure]]:
    """Every window cut in full; its call wrote all its rows, or failed for a
    path in ``fail_call``."""
    stats = [TileStats(w.job.n_tiles, 0, w.job.n_tiles) for w in work.windows]
    rows: list[int | Failure] = [
        Failure(f"{w.path}: bad batch") if w.path in fail_call else w.job.n_tiles
        for w in work.windows
    ]
    return stats, rows


def _run(
    sched: Scheduler,
    infos: dict[str, RasterInfo | Failure],
    seed: int,
    crash_p: float = 0.0,
    fail_call: set[str] = frozenset(),  # type: ignore[assignment]
) -> list[Tile]:
    """Run ``sched`` to the end, finishing work in random order; a task crashes
    with probability ``crash_p`` (its node or worker gone). Returns the tasks."""
    rng = random.Random(seed)
    flight: list[object] = []
    tasks: list[Tile] = []
    while not sched.done:
        flight += sched.next_work()
        assert flight, "the scheduler is stuck"
        work = flight.pop(rng.randrange(len(flight)))
        if isinstance(work, Probe):
            sched.probed(work.ticket, [infos[p] for p in work.paths])
            continue
        assert isinstance(work, Tile), "no Embed work when tasks embed themselves"
        tasks.append(work)
        if rng.random() < crash_p:
            sched.failed(work.ticket, Failure("NodeDiedError: gone", kind="crash"))
            continue
        sched.cut_and_embedded(work.ticket, *_outcome(work, fail_call))
        sched.take_settled()
    return tasks


@pytest.mark.parametrize("seed", range(6))
def test_crashed_tasks_are_redone_and_every_tile_is_written_once(seed: int) -> None:
    paths, infos = _three_files()
    sched = _fused(paths)
    tasks = _run(sched, infos, seed, crash_p=0.25)
    assert [sched.files[p].report.status for p in paths] == ["ok", "ok", "ok"]
    assert sched.tiles_done == sched.tiles_planned == 8 + 11 * 2 + 1
    # A window crashed at most CRASH_RETRIES times: each try is a task of its own.
    tries = [w.tries for t in tasks for w in t.windows]
    assert max(tries) <= CRASH_RETRIES
    assert all(t.n_tiles <= 12 or len(t.windows) == 1 for t in tasks)


def test_a_task_that_keeps_crashing_fails_its_windows_with_the_reason() -> None:
    paths = ["/d/a.tif"]
    sched = _fused(paths)
    tasks = _run(sched, {"/d/a.tif": _info("/d/a.tif", 512, 512)}, seed=0, crash_p=1.0)
    report = sched.files["/d/a.tif"].report
    assert report.status == "failed" and report.reason == "/d/a.tif: NodeDiedError: gone"
    assert len(tasks) == CRASH_RETRIES + 1 and report.tiles_written == 0


def test_a_call_that_fails_fails_only_its_file() -> None:
    paths, infos = _three_files()
    sched = _fused(paths, max_task_tiles=64)  # windows of all three files share tasks
    _run(sched, infos, seed=1, fail_call={"/d/b.tif"})
    reports = [sched.files[p].report for p in paths]
    assert [r.status for r in reports] == ["ok", "failed", "ok"]
    assert reports[1].reason == "/d/b.tif: embedding failed (/d/b.tif: bad batch)"
    assert reports[0].tiles_written == 8 and reports[2].tiles_written == 1


def test_task_size_spreads_the_waiting_tiles_over_the_slots() -> None:
    """``clamp(ceil(waiting / max_inflight), task_tiles, max_task_tiles)``: one
    4096 px file is 64 windows of 4 tiles (256 tiles), over 4 slots."""
    for cap, first in [(16, 16), (1000, 64), (0, 1)]:
        sched = _sched(["/d/big.tif"], max_task_tiles=cap, max_inflight=4)
        (probe,) = sched.next_work()
        sched.probed(probe.ticket, [_info("/d/big.tif", 4096, 4096)])
        work = sched.next_work()
        assert all(isinstance(t, Tile) for t in work) and len(work) == 4
        assert work[0].n_tiles == max(first, 4)  # at least one window of 4 tiles
    with pytest.raises(ValueError, match="0 row counts for 1 windows"):
        sched.cut_and_embedded(work[0].ticket, [TileStats(4, 0, 4)], [])
