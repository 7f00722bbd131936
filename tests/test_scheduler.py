"""The ingest scheduler without Ray: fake task outcomes fed in any order."""

from __future__ import annotations

import random
import subprocess
import sys

import numpy as np
import pytest

from ris_ray.core.records import Failure, TileStats
from ris_ray.ingest.scheduler import Embed, Probe, Scheduler, Settled, Tile, Work
from ris_ray.raster.bands import BandPlan
from ris_ray.raster.reading import RasterInfo
from ris_ray.raster.tiling import TileSpec, count_tiles

SPEC = TileSpec(tile=256, stride=256, min_valid=0.5, model="m")


def _info(path: str, width: int = 1024, height: int = 512, **kw: object) -> RasterInfo:
    fields: dict[str, object] = {
        "path": path,
        "width": width,
        "height": height,
        "count": 3,
        "dtype": "uint8",
        "crs": None,
        "transform": None,
        "bands": BandPlan((1, 2, 3)),
        "mask": "fill",
        "stretch": None,
        "block_shape": (256, 256),
        "size_bytes": 0,
        "mtime_ns": 0,
    }
    fields.update(kw)
    return RasterInfo(**fields)  # type: ignore[arg-type]


def _sched(paths: list[str], **kw: object) -> Scheduler:
    args: dict[str, object] = {
        "min_valid": 0.5,
        "window_px": 512,
        "max_inflight": 4,
        "n_embedders": 2,
        "embed_slots": 2,
    }
    args.update(kw)
    return Scheduler(paths, SPEC, **args)  # type: ignore[arg-type]


def _three_files() -> tuple[list[str], dict[str, RasterInfo | Failure]]:
    """Three probed files: 8, 11 x 2 and 1 tiles of 256 px (512 px windows)."""
    paths = ["/d/a.tif", "/d/b.tif", "/d/c.tif"]
    infos: dict[str, RasterInfo | Failure] = {
        "/d/a.tif": _info("/d/a.tif", 1024, 512),
        "/d/b.tif": _info("/d/b.tif", 3000, 700),
        "/d/c.tif": _info("/d/c.tif", 300, 300),
    }
    return paths, infos


def _record_calls(sched: Scheduler, calls: list[tuple[int, int]]) -> None:
    """Append ``(embedder, embedders not lost)`` of every call the scheduler
    hands out to ``calls``."""
    real_next = sched.flow.next_call

    def next_call() -> tuple[int, tuple[object, ...]]:
        actor, parts = real_next()
        calls.append((actor, sched.flow.live_embedders))
        return actor, parts

    sched.flow.next_call = next_call  # type: ignore[assignment,method-assign]


def _drive(
    sched: Scheduler,
    infos: dict[str, RasterInfo | Failure],
    *,
    seed: int = 0,
    fail_tile: set[tuple[str, int]] = frozenset(),  # type: ignore[assignment]
    crash_tile: set[tuple[str, int]] = frozenset(),  # type: ignore[assignment]
    fail_embed: set[tuple[str, int]] = frozenset(),  # type: ignore[assignment]
    low_valid: int = 0,
    lose: tuple[int, ...] = (),
    lose_at: int = 0,
    crash_once: set[tuple[str, int]] = frozenset(),  # type: ignore[assignment]
) -> list[Settled]:
    """Run the scheduler to the end, finishing in-flight work in random order
    (embedders not ready yet become ready at a random step, or when nothing
    else can happen). Windows are keyed ``(path, i)``: a window in
    ``fail_tile`` cannot be read (its task answers a Failure for it); a
    task holding one in ``crash_tile`` dies (all its windows). At step
    ``lose_at`` the embedders ``lose`` are lost with their node: their calls
    in flight fail, as Ray's would once the driver kills them."""
    rng = random.Random(seed)
    flight: list[Work] = []
    settled: list[Settled] = []
    seen: dict[str, int] = {}
    cut_in: dict[str, int] = {}  # batch -> the group whose tiling task cut it
    crashed: set[str] = set()  # batches of calls that crashed
    step = 0
    while not sched.done:
        step += 1
        if lose and step == lose_at:
            for actor in lose:
                sched.embedder_lost(actor)
        flight += sched.next_work()
        if not sched.ready and (not flight or rng.random() < 0.1):
            sched.embedders_ready()
            continue
        assert flight, "the scheduler is stuck: nothing in flight, nothing to start"
        work = flight.pop(rng.randrange(len(flight)))
        if isinstance(work, Probe):
            sched.probed(work.ticket, [infos[path] for path in work.paths])
        elif isinstance(work, Tile):
            keys = []
            for w in work.windows:
                keys.append((w.path, seen.get(w.path, 0)))
                seen[w.path] = keys[-1][1] + 1
            if crash_tile & set(keys):
                sched.failed(work.ticket, Failure("worker died", kind="crash"))
                continue
            stats: list[TileStats | Failure] = [
                Failure(f"{key[0]}: unreadable window")
                if key in fail_tile
                else TileStats(w.job.n_tiles, low_valid, w.job.n_tiles - low_valid)
                for key, w in zip(keys, work.windows, strict=True)
            ]
            cut_in.update((f"batch{key}", work.group) for key in keys)
            sched.tiled(work.ticket, stats, [f"batch{key}" for key in keys])
        else:
            _embed(sched, work, cut_in, crashed, fail_embed, crash_once)
        settled += sched.take_settled()
    return settled


def _embed(
    sched: Scheduler,
    work: Work,
    cut_in: dict[str, int],
    crashed: set[str],
    fail_embed: set[tuple[str, int]],
    crash_once: set[tuple[str, int]],
) -> None:
    """Answer an embed call as :func:`_drive` says (it crashes when its embedder
    is lost, once for a window in ``crash_once``, always for one in ``fail_embed``)."""
    assert isinstance(work, Embed)
    batches = {p.batch for p in work.parts}
    if sched.flow.is_lost(work.actor):
        why = "RayActorError: killed"
    elif ({f"batch{key}" for key in crash_once} & batches) - crashed:
        why = "ActorUnavailableError: gone"  # an actor dies mid-call, once
    elif {f"batch{key}" for key in fail_embed} & batches:
        why = "RayActorError: boom"
    else:
        # Every window goes to an embedder of the group (node) that cut it,
        # unless that group has lost all its embedders (or a call with it crashed).
        groups = sched.flow.groups
        for part in work.parts:
            cut = cut_in[str(part.batch)]
            lost = all(sched.flow.is_lost(i) for i, g in enumerate(groups) if g == cut)
            assert cut == groups[work.actor] or part.batch in crashed or lost
        sched.embedded(work.ticket, [part.n_tiles for part in work.parts])
        return
    crashed.update(batches)
    sched.failed(work.ticket, Failure(why, kind="crash"))


@pytest.mark.parametrize(
    ("seed", "kw"),
    [
        *((seed, {}) for seed in range(5)),
        (0, {"embed_tiles": 1}),  # one window per call
        (1, {"embed_tiles": 16, "hold_s": 1e9}),  # calls go out full, or when reading stops
        (2, {"probe_files": 2}),  # two headers per probe task
        *((seed, {"task_tiles": 8}) for seed in range(3)),  # small windows 2 a task
        (4, {"task_tiles": 1000}),  # every window of a file (and the next) in a task
        *((seed, {"ready": False, "startup_tiles": 20}) for seed in range(3)),
        (3, {"ready": False, "startup_tiles": 0}),  # no read-ahead, calls held until ready
    ],
)
def test_every_tile_is_embedded_in_any_order(seed: int, kw: dict[str, object]) -> None:
    paths, infos = _three_files()
    sched = _sched(paths, **kw)
    settled = _drive(sched, infos, seed=seed)
    assert sorted(s.path for s in settled) == paths and all(s.staged for s in settled)
    for p, info in infos.items():
        assert isinstance(info, RasterInfo)
        f = sched.files[p].report
        want = count_tiles(info.width, 256, 256) * count_tiles(info.height, 256, 256)
        assert (f.status, f.tiles_planned, f.tiles_written) == ("ok", want, want)
    assert sched.tiles_done == sched.tiles_planned == 8 + 11 * 2 + 1
    assert sched.files_done == 3 and not sched.in_flight


@pytest.mark.parametrize(
    ("seed", "kw"),
    [
        (0, {"groups": (0, 1, 1)}),
        (1, {"groups": (1, 0, 0), "embed_tiles": 4}),
        (2, {"groups": (0, 1, 2), "task_tiles": 8}),
        (3, {"groups": (0, 1, 2), "ready": False, "startup_tiles": 30}),
        (4, {"groups": (0, 0, 1), "hold_s": 1e9, "embed_tiles": 16}),
        (5, {"groups": (0, 1, 1), "fail_embed": {("/d/b.tif", 2)}, "task_tiles": 8}),
        (6, {"groups": (2, 1, 0), "max_inflight": 1}),
    ],
)
def test_windows_are_embedded_in_the_group_that_cut_them(seed: int, kw: dict[str, object]) -> None:
    """Embedders in groups (one per node): :func:`_drive` checks each call's
    windows were cut for its embedder's group; every group gets work."""
    fail_embed = kw.pop("fail_embed", frozenset())
    paths, infos = _three_files()
    sched = _sched(paths, n_embedders=3, **kw)
    calls: list[tuple[int, int]] = []
    _record_calls(sched, calls)
    settled = _drive(sched, infos, seed=seed, fail_embed=fail_embed)  # type: ignore[arg-type]
    assert sorted(s.path for s in settled) == paths
    assert {sched.flow.groups[a] for a, _ in calls} == set(range(sched.n_groups))
    failed = {p for p, _ in fail_embed}  # type: ignore[attr-defined]
    for p in paths:
        f = sched.files[p].report
        assert f.status == ("failed" if p in failed else "ok")
        assert f.tiles_written == f.tiles_planned or p in failed


@pytest.mark.parametrize(
    ("seed", "groups", "lose", "lose_at"),
    [
        (0, (0, 1, 1), (0,), 5),  # a node of one embedder leaves: its queue moves on
        (1, (0, 1, 1), (1,), 8),  # one of two embedders of a node: the other goes on
        (2, (0, 1, 2), (0, 2), 3),  # two of three nodes
        (3, (0, 0, 1), (0, 1), 12),
        (4, (0, 1), (1,), 1),  # before any call
        (5, (0, 1, 2), (2,), 14),
    ],
)
def test_lost_embedders_hand_their_windows_to_the_others(
    seed: int, groups: tuple[int, ...], lose: tuple[int, ...], lose_at: int
) -> None:
    """Every tile is still embedded once, all files ok, and no call goes to a
    lost embedder after its loss."""
    paths, infos = _three_files()
    sched = _sched(paths, n_embedders=len(groups), groups=groups, embed_tiles=4, task_tiles=4)
    calls: list[tuple[int, int]] = []
    _record_calls(sched, calls)
    settled = _drive(sched, infos, seed=seed, lose=lose, lose_at=lose_at)
    after = [actor for actor, live in calls if live < len(groups)]  # calls after the loss
    assert sorted(s.path for s in settled) == paths and all(s.staged for s in settled)
    assert all(sched.files[p].report.status == "ok" for p in paths)
    assert sched.tiles_done == sched.tiles_planned == 8 + 11 * 2 + 1
    assert after and not set(after) & set(lose)
    assert sched.flow.live_embedders == len(groups) - len(lose)


@pytest.mark.parametrize("seed", range(4))
def test_a_call_that_crashes_once_is_redone_not_failed(seed: int) -> None:
    """An embedder crashing a call (its actor or node going) does not fail the
    files: the windows go again, to another embedder while that one is suspect."""
    paths = ["/d/a.tif", "/d/b.tif"]
    infos: dict[str, RasterInfo | Failure] = {
        "/d/a.tif": _info("/d/a.tif", 1024, 512),
        "/d/b.tif": _info("/d/b.tif", 3000, 700),
    }
    sched = _sched(paths, n_embedders=2, groups=(0, 1), embed_tiles=4)
    crash = {("/d/a.tif", 0), ("/d/b.tif", 1), ("/d/b.tif", 3)}
    settled = _drive(sched, infos, seed=seed, crash_once=crash)
    assert sorted(s.path for s in settled) == paths and all(s.staged for s in settled)
    assert [sched.files[p].report.status for p in paths] == ["ok", "ok"]
    assert sched.tiles_done == sched.tiles_planned == 8 + 11 * 2


@pytest.mark.parametrize("groups", [(0, 2), (1, 1), (0,), (0, 0, 0)])
def test_groups_are_checked(groups: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="one per embedder"):
        _sched(["/d/a.tif"], n_embedders=2, groups=groups)


def _big(**kw: object) -> Scheduler:
    """A scheduler on one probed 4096 x 4096 file: 64 windows of 4 tiles (512 px)."""
    sched = _sched(["/d/big.tif"], **kw)
    (probe,) = sched.next_work()
    assert isinstance(probe, Probe)
    sched.probed(probe.ticket, [_info("/d/big.tif", 4096, 4096)])
    return sched


def _tile_all(sched: Scheduler, work: list[Work]) -> None:
    for t in work:
        assert isinstance(t, Tile)
        stats = [TileStats(w.job.n_tiles, 0, w.job.n_tiles) for w in t.windows]
        sched.tiled(t.ticket, stats, [f"b{t.ticket}"] * len(t.windows))


def _kinds(work: list[Work]) -> list[str]:
    return [type(w).__name__ for w in work]


def test_backpressure_and_embedder_slots() -> None:
    sched = _big(max_inflight=3, n_embedders=1, embed_slots=1, embed_tiles=8)
    tiles = sched.next_work()
    assert _kinds(tiles) == ["Tile"] * 3
    assert sched.next_work() == []  # 3 windows being read
    _tile_all(sched, tiles)
    work = sched.next_work()
    # 12 tiles wait: one call takes two windows (8 tiles); 4 waiting < 8: read on.
    assert _kinds(work) == ["Embed", "Tile", "Tile", "Tile"]
    embed = work[0]
    assert isinstance(embed, Embed) and embed.actor == 0 and embed.n_tiles == 8
    _tile_all(sched, work[1:])
    assert sched.next_work() == []  # 16 tiles wait, the embedder's one slot is taken
    with pytest.raises(ValueError, match="1 results for 2 windows"):
        sched.embedded(embed.ticket, [8])
    sched.embedded(embed.ticket, [4, 4])
    assert sched.tiles_done == 8
    # The slot is free: the next call; 8 tiles still wait, so no window is read.
    assert _kinds(sched.next_work()) == ["Embed"]


def test_calls_fill_up_or_go_after_hold_s() -> None:
    now = [0.0]
    sched = _big(max_inflight=2, n_embedders=1, embed_tiles=16, hold_s=0.05, clock=lambda: now[0])
    first, second = sched.next_work()
    _tile_all(sched, [first])
    (third,) = sched.next_work()  # 4 tiles wait for more; a window is read instead
    assert isinstance(third, Tile)
    assert sched.next_deadline() == pytest.approx(0.05)
    now[0] = 0.06
    (embed,) = sched.next_work()  # the oldest waited hold_s: it goes alone
    assert isinstance(embed, Embed) and embed.n_tiles == 4
    assert sched.next_deadline() is None
    _tile_all(sched, [second])
    assert sched.next_deadline() == pytest.approx(0.11)  # the embedder has a second slot
    (fourth,) = sched.next_work()
    now[0] = 0.2
    assert _kinds(sched.next_work()) == ["Embed"]  # the second slot
    _tile_all(sched, [third])
    assert sched.next_deadline() is None  # both slots taken: only a reply can change that
    assert _kinds(sched.next_work()) == ["Tile"]  # while 4 tiles wait, one more window
    assert isinstance(fourth, Tile)


def test_tiling_reads_ahead_while_the_embedders_start() -> None:
    """Not ready: no call goes out and windows keep being read (at most
    ``max_inflight`` at once) while fewer than ``startup_tiles`` tiles are cut
    or being cut; once ready, reading resumes when the queue is short again."""
    sched = _big(
        max_inflight=2, n_embedders=1, embed_slots=2, embed_tiles=4, ready=False, startup_tiles=10
    )
    read = 0
    while tiles := sched.next_work():
        assert _kinds(tiles) in (["Tile"], ["Tile", "Tile"])
        _tile_all(sched, tiles)
        read += len(tiles)
    assert read == 3  # 3 x 4 tiles >= 10: the read-ahead stops
    assert sched.next_deadline() is None
    sched.embedders_ready()
    calls = sched.next_work()
    assert _kinds(calls) == ["Embed", "Embed"]  # one window each (embed_tiles=4), two slots
    for call in calls:
        assert isinstance(call, Embed)
        sched.embedded(call.ticket, [4])
    assert _kinds(sched.next_work()) == ["Embed", "Tile", "Tile"]


def test_unreadable_file_fails_at_once_and_keeps_old_tiles() -> None:
    paths = ["/d/bad.tif", "/d/good.tif"]
    infos: dict[str, RasterInfo | Failure] = {
        "/d/bad.tif": Failure("/d/bad.tif: cannot open as a raster (not a TIFF)"),
        "/d/good.tif": _info("/d/good.tif", 512, 256),
    }
    sched = _sched(paths)
    settled = _drive(sched, infos)
    assert Settled("/d/bad.tif", staged=False) in settled
    assert Settled("/d/good.tif", staged=True) in settled
    bad = sched.files["/d/bad.tif"].report
    assert (
        bad.status == "failed" and bad.reason == "/d/bad.tif: cannot open as a raster (not a TIFF)"
    )
    assert sched.files["/d/good.tif"].report.status == "ok"


def test_a_probe_reads_several_files_and_each_answers_for_itself() -> None:
    paths = ["/d/a.tif", "/d/bad.tif", "/d/c.tif"]
    sched = _sched(paths, probe_files=2)
    first, second = sched.next_work()
    assert isinstance(first, Probe) and isinstance(second, Probe)
    assert (first.paths, second.paths) == (("/d/a.tif", "/d/bad.tif"), ("/d/c.tif",))
    with pytest.raises(ValueError, match="1 results for 2 files"):
        sched.probed(first.ticket, [_info("/d/a.tif")])
    sched.probed(first.ticket, [_info("/d/a.tif"), Failure("/d/bad.tif: not a TIFF")])
    assert sched.take_settled() == [Settled("/d/bad.tif", staged=False)]
    assert sched.files["/d/a.tif"].report.windows == 2  # planned
    sched.failed(second.ticket, Failure("WorkerCrashedError: gone", kind="crash"))  # the task died
    c = sched.files["/d/c.tif"].report
    assert (c.status, c.reason) == ("failed", "WorkerCrashedError: gone")
    assert sched.take_settled() == [Settled("/d/c.tif", staged=False)]


def test_failed_windows_count_against_their_file() -> None:
    infos: dict[str, RasterInfo | Failure] = {"/d/a.tif": _info("/d/a.tif", 2048, 512)}
    sched = _sched(["/d/a.tif"])
    _drive(sched, infos, crash_tile={("/d/a.tif", 0), ("/d/a.tif", 2)})
    f = sched.files["/d/a.tif"].report
    assert f.windows == 4 and f.windows_failed == 2 and f.status == "failed"
    assert f.reason == "2 windows failed; first: /d/a.tif: worker died"
    assert f.tiles_written == 8  # the two good windows still count
    assert sched.files_done == 1 and sched.done


@pytest.mark.parametrize("seed", range(3))
def test_a_window_that_fails_in_a_shared_task_fails_only_itself(seed: int) -> None:
    infos: dict[str, RasterInfo | Failure] = {"/d/a.tif": _info("/d/a.tif", 2048, 512)}
    sched = _sched(["/d/a.tif"], task_tiles=8)  # 4 windows of 4 tiles: 2 a task
    _drive(sched, infos, seed=seed, fail_tile={("/d/a.tif", 1)})
    f = sched.files["/d/a.tif"].report
    assert (f.windows, f.windows_failed, f.status) == (4, 1, "failed")
    assert f.reason == "/d/a.tif: unreadable window"
    assert f.tiles_written == 12  # window 0, cut by the same task, still counts
    assert sched.done


@pytest.mark.parametrize("seed", range(3))
def test_embed_failure_fails_only_its_window_and_frees_the_slot(seed: int) -> None:
    """A failed call of several windows is split: each window is tried alone,
    so only the bad window's file fails."""
    infos: dict[str, RasterInfo | Failure] = {
        "/d/a.tif": _info("/d/a.tif", 1024, 512),
        "/d/b.tif": _info("/d/b.tif", 1024, 512),
    }
    sched = _sched(list(infos), n_embedders=1, embed_slots=1)
    _drive(sched, infos, seed=seed, fail_embed={("/d/a.tif", 0)})
    f = sched.files["/d/a.tif"].report
    assert f.status == "failed" and f.reason == "/d/a.tif: embedding failed (RayActorError: boom)"
    assert f.tiles_written == 4 and f.windows_failed == 1
    b = sched.files["/d/b.tif"].report
    assert (b.status, b.tiles_written, b.windows_failed) == ("ok", 8, 0)
    assert sched.done and not sched.in_flight


def test_low_valid_and_too_small_files_are_skipped() -> None:
    infos: dict[str, RasterInfo | Failure] = {
        "/d/fill.tif": _info("/d/fill.tif", 512, 512),
        "/d/tiny.tif": _info("/d/tiny.tif", 100, 100),
    }
    sched = _sched(list(infos))
    settled = _drive(sched, infos, low_valid=4)
    fill, tiny = sched.files["/d/fill.tif"].report, sched.files["/d/tiny.tif"].report
    assert fill.status == "skipped" and fill.reason == "no valid tiles: 4 below --min-valid 0.5"
    assert tiny.status == "skipped" and tiny.reason == "100x100 is smaller than one 256x256 tile"
    assert {s.path for s in settled} == set(infos) and all(s.staged for s in settled)


def test_sparse_blocks_are_never_read() -> None:
    blocks = np.zeros((2, 4), dtype=bool)
    blocks[0, 0] = True
    info = _info("/d/sparse.tif", 1024, 512, data_blocks=blocks)
    sched = _sched(["/d/sparse.tif"], window_px=256)
    _drive(sched, {"/d/sparse.tif": info})
    f = sched.files["/d/sparse.tif"].report
    assert (f.tiles_planned, f.tiles_empty, f.windows, f.tiles_written) == (8, 7, 1, 1)


def test_a_retried_or_unknown_ticket_is_refused() -> None:
    sched = _sched(["/d/a.tif"])
    (probe,) = sched.next_work()
    sched.probed(probe.ticket, [_info("/d/a.tif", 256, 256)])
    with pytest.raises(KeyError):
        sched.probed(probe.ticket, [_info("/d/a.tif", 256, 256)])  # delivered twice
    (tile,) = sched.next_work()
    with pytest.raises(KeyError):
        sched.embedded(tile.ticket, [1])  # the wrong event for this ticket
    with pytest.raises(KeyError):
        sched.failed(999, Failure("x"))
    with pytest.raises(ValueError, match="2 results for 1 windows"):
        sched.tiled(tile.ticket, [TileStats(1, 0, 1)] * 2, ["b", "b"])
    sched.tiled(tile.ticket, [TileStats(1, 0, 1)], ["b"])
    (embed,) = sched.next_work()
    sched.embedded(embed.ticket, [1])
    assert sched.done and sched.files["/d/a.tif"].report.status == "ok"


def test_workers_import_neither_the_driver_nor_torch_needlessly() -> None:
    """A tiling worker imports tasks.py (no torch); an embedder worker imports
    actors.py (no driver: pipeline, scheduler; no Lance: it builds Arrow tables)."""
    code = (
        "import sys, ris_ray.ingest.tasks\n"
        "assert 'torch' not in sys.modules, 'tasks imports torch'\n"
        "import ris_ray.ingest.actors\n"
        "bad = {'ris_ray.ingest.pipeline', 'ris_ray.ingest.scheduler', 'lance', 'torch'}\n"
        "bad &= set(sys.modules)\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_call_carries_several_forward_passes() -> None:
    from ris_ray.core.config import CALL_TILES, IngestConfig
    from ris_ray.core.errors import InputError

    def cfg(**kw: object) -> IngestConfig:
        return IngestConfig(inputs=("a.tif",), db="d", **kw)  # type: ignore[arg-type]

    assert CALL_TILES == 256
    assert cfg().tiles_per_call == CALL_TILES  # 4 passes of the default --batch-size 64
    assert cfg(batch_size=1000).tiles_per_call == 1000  # never less than one pass
    assert cfg(batch_size=1000, call_tiles=1).tiles_per_call == 1  # one window per call
    with pytest.raises(InputError, match="call_tiles 0: must be >= 1"):
        cfg(call_tiles=0)


def test_small_windows_share_a_task_up_to_task_tiles() -> None:
    """Windows go to tiling tasks in order, several while their planned tiles
    fit ``task_tiles`` (a bigger window is a task of its own); each window's
    outcome counts for itself."""
    paths = ["/d/a.tif", "/d/b.tif", "/d/c.tif"]
    infos = {
        "/d/a.tif": _info("/d/a.tif", 1024, 512),  # 2 windows of 4 tiles (512 px windows)
        "/d/b.tif": _info("/d/b.tif", 512, 256),  # 1 window of 2 tiles
        "/d/c.tif": _info("/d/c.tif", 256, 256),  # 1 window of 1 tile
    }
    sched = _sched(paths, task_tiles=7, max_inflight=8, probe_files=3)
    (probe,) = sched.next_work()
    sched.probed(probe.ticket, [infos[p] for p in paths])
    first, second = sched.next_work()
    assert isinstance(first, Tile) and isinstance(second, Tile)
    assert [w.path for w in first.windows] == ["/d/a.tif"]  # 4 + 4 > 7
    assert [w.path for w in second.windows] == ["/d/a.tif", "/d/b.tif", "/d/c.tif"]
    assert (first.n_tiles, second.n_tiles) == (4, 7)
    with pytest.raises(ValueError, match="2 batches for 3 windows"):
        sched.tiled(
            second.ticket, [TileStats(4, 0, 4), TileStats(2, 0, 2), TileStats(1, 1, 0)], ["x", "y"]
        )
    stats = [TileStats(4, 0, 4), Failure("/d/b.tif: unreadable window"), TileStats(1, 1, 0)]
    sched.tiled(second.ticket, stats, ["a1", None, None])
    b, c = sched.files["/d/b.tif"].report, sched.files["/d/c.tif"].report
    assert (b.status, b.reason, b.windows_failed) == ("failed", "/d/b.tif: unreadable window", 1)
    assert (c.status, c.tiles_low_valid) == ("skipped", 1)
    sched.failed(first.ticket, Failure("WorkerCrashedError: gone", kind="crash"))  # the task died
    a = sched.files["/d/a.tif"].report
    assert a.windows_failed == 1 and a.reason == "/d/a.tif: WorkerCrashedError: gone"
    (embed,) = [w for w in sched.next_work() if isinstance(w, Embed)]
    assert [p.batch for p in embed.parts] == ["a1"]  # only the window that was cut
    sched.embedded(embed.ticket, [4])
    assert a.status == "failed" and a.tiles_written == 4 and sched.done
