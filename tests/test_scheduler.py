"""The ingest scheduler without Ray: fake task outcomes fed in any order."""

from __future__ import annotations

import random
import subprocess
import sys

import numpy as np
import pytest

from ris_ray.records import Failure, TileStats
from ris_ray.scheduler import Embed, Probe, Scheduler, Settled, Tile, Work
from ris_ray.tiling import BandPlan, RasterInfo, TileSpec, count_tiles

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


def _drive(
    sched: Scheduler,
    infos: dict[str, RasterInfo | Failure],
    *,
    seed: int = 0,
    fail_tile: set[tuple[str, int]] = frozenset(),  # type: ignore[assignment]
    fail_embed: set[tuple[str, int]] = frozenset(),  # type: ignore[assignment]
    low_valid: int = 0,
) -> list[Settled]:
    """Run the scheduler to the end, finishing in-flight work in random order."""
    rng = random.Random(seed)
    flight: list[Work] = []
    settled: list[Settled] = []
    seen: dict[str, int] = {}
    while not sched.done:
        flight += sched.next_work()
        assert flight, "the scheduler is stuck: nothing in flight, nothing to start"
        work = flight.pop(rng.randrange(len(flight)))
        if isinstance(work, Probe):
            outcome = infos[work.path]
            if isinstance(outcome, Failure):
                sched.failed(work.ticket, outcome)
            else:
                sched.probed(work.ticket, outcome)
        elif isinstance(work, Tile):
            key = (work.path, seen.get(work.path, 0))
            seen[work.path] = key[1] + 1
            if key in fail_tile:
                sched.failed(work.ticket, Failure("worker died", kind="crash"))
            else:
                n = work.job.n_tiles - low_valid
                sched.tiled(work.ticket, TileStats(work.job.n_tiles, low_valid, n), f"batch{key}")
        else:
            key = (work.path, seen.get("e" + work.path, 0))
            seen["e" + work.path] = key[1] + 1
            if key in fail_embed:
                sched.failed(work.ticket, Failure("RayActorError: boom", kind="crash"))
            else:
                sched.embedded(work.ticket, work.n_tiles)
        settled += sched.take_settled()
    return settled


@pytest.mark.parametrize("seed", range(5))
def test_every_tile_is_embedded_in_any_order(seed: int) -> None:
    paths = ["/d/a.tif", "/d/b.tif", "/d/c.tif"]
    infos: dict[str, RasterInfo | Failure] = {
        "/d/a.tif": _info("/d/a.tif", 1024, 512),
        "/d/b.tif": _info("/d/b.tif", 3000, 700),
        "/d/c.tif": _info("/d/c.tif", 300, 300),
    }
    sched = _sched(paths)
    settled = _drive(sched, infos, seed=seed)
    assert sorted(s.path for s in settled) == paths and all(s.staged for s in settled)
    for p, info in infos.items():
        assert isinstance(info, RasterInfo)
        f = sched.files[p].report
        want = count_tiles(info.width, 256, 256) * count_tiles(info.height, 256, 256)
        assert (f.status, f.tiles_planned, f.tiles_written) == ("ok", want, want)
    assert sched.tiles_done == sched.tiles_planned == 8 + 11 * 2 + 1
    assert sched.files_done == 3 and not sched.in_flight


def test_backpressure_and_embedder_slots() -> None:
    sched = _sched(["/d/big.tif"], max_inflight=3, n_embedders=1, embed_slots=1)
    (probe,) = sched.next_work()
    assert isinstance(probe, Probe)
    sched.probed(probe.ticket, _info("/d/big.tif", 4096, 4096))
    tiles = sched.next_work()
    assert len(tiles) == 3 and all(isinstance(t, Tile) for t in tiles)
    assert sched.next_work() == []  # the pipeline is full
    for t in tiles:
        sched.tiled(t.ticket, TileStats(t.job.n_tiles, 0, t.job.n_tiles), "b")
    embeds = sched.next_work()
    assert len(embeds) == 1 and isinstance(embeds[0], Embed)  # one slot on one embedder
    assert embeds[0].actor == 0
    sched.embedded(embeds[0].ticket, embeds[0].n_tiles)
    more = sched.next_work()
    # The finished window frees room for one more window and the embedder's slot.
    assert sorted(type(w).__name__ for w in more) == ["Embed", "Tile"]


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


def test_failed_windows_count_against_their_file() -> None:
    infos: dict[str, RasterInfo | Failure] = {"/d/a.tif": _info("/d/a.tif", 2048, 512)}
    sched = _sched(["/d/a.tif"])
    _drive(sched, infos, fail_tile={("/d/a.tif", 0), ("/d/a.tif", 2)})
    f = sched.files["/d/a.tif"].report
    assert f.windows == 4 and f.windows_failed == 2 and f.status == "failed"
    assert f.reason == "2 windows failed; first: /d/a.tif: worker died"
    assert f.tiles_written == 8  # the two good windows still count
    assert sched.files_done == 1 and sched.done


def test_embed_failure_fails_the_file_and_frees_the_slot() -> None:
    infos: dict[str, RasterInfo | Failure] = {"/d/a.tif": _info("/d/a.tif", 1024, 512)}
    sched = _sched(["/d/a.tif"], n_embedders=1, embed_slots=1)
    _drive(sched, infos, fail_embed={("/d/a.tif", 0)})
    f = sched.files["/d/a.tif"].report
    assert f.status == "failed" and f.reason == "/d/a.tif: embedding failed (RayActorError: boom)"
    assert f.tiles_written == 4 and f.windows_failed == 1


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
    sched.probed(probe.ticket, _info("/d/a.tif", 256, 256))
    with pytest.raises(KeyError):
        sched.probed(probe.ticket, _info("/d/a.tif", 256, 256))  # delivered twice
    (tile,) = sched.next_work()
    with pytest.raises(KeyError):
        sched.embedded(tile.ticket, 1)  # the wrong event for this ticket
    with pytest.raises(KeyError):
        sched.failed(999, Failure("x"))
    sched.tiled(tile.ticket, TileStats(1, 0, 1), "b")
    (embed,) = sched.next_work()
    sched.embedded(embed.ticket, 1)
    assert sched.done and sched.files["/d/a.tif"].report.status == "ok"


def test_workers_import_neither_the_driver_nor_torch_needlessly() -> None:
    """A tiling worker imports tasks.py (no torch); an embedder worker imports
    actors.py (no driver: pipeline, scheduler)."""
    code = (
        "import sys, ris_ray.tasks; assert 'torch' not in sys.modules, 'tasks imports torch'\n"
        "import ris_ray.actors\n"
        "bad = {'ris_ray.pipeline', 'ris_ray.scheduler'} & set(sys.modules)\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
