"""Several datasets searched as one (``ris query --db A --db B``): the merged
top-k equals the top-k over one dataset holding every row.

The datasets are written here, without Ray: seeded random fingerprints for
tiles of three georeferenced sources, encoded by the store's own schema
(:func:`ris_ray.store.schema.to_table`), dealt round-robin into three shards;
``all.lance`` is the three shards' rows end to end (so a seeded random tile is
the same row in both).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import lance
import numpy as np
import pyarrow as pa
import pytest
from cli_run import run
from rich.console import Console

from ris_ray.core.config import FINGERPRINT_DIM
from ris_ray.core.errors import InputError, ModelMismatchError, QueryError
from ris_ray.core.records import TileBatch
from ris_ray.raster.geo import WGS84, transform_points
from ris_ray.raster.tiling import tile_id
from ris_ray.search.filters import SearchFilter
from ris_ray.search.query import query
from ris_ray.search.results import Neighbour
from ris_ray.search.shards import merge, open_shards
from ris_ray.store.schema import DatasetParams, to_table

MODEL = "resnet18/random-seed0"
PARAMS = DatasetParams(256, 256, MODEL)
CRS = "EPSG:32633"
RES = 0.5  # metres per pixel
SOURCES = [f"/data/flight_{i}.tif" for i in range(3)]
GRID = 6  # GRID x GRID tiles per source


@dataclass(frozen=True)
class Split:
    """One dataset of every row and the same rows dealt into ``shards``."""

    all: Path
    shards: list[Path]
    ids: list[list[str]]  # tile ids of each shard


def _batch(source: str, origin_x: float, seed: int, params: DatasetParams) -> TileBatch:
    """``GRID x GRID`` georeferenced tiles of one source with random fingerprints."""
    size = params.tile_size
    rows, cols = np.divmod(np.arange(GRID * GRID), GRID)
    rows, cols = rows * size, cols * size
    minx = origin_x + cols * RES
    maxy = 4_000_000.0 - rows * RES
    miny, maxx = maxy - size * RES, minx + size * RES
    lon, lat = transform_points(CRS, WGS84, (minx + maxx) / 2, (miny + maxy) / 2)
    n = len(rows)
    ids = [
        tile_id(source, int(r), int(c), size, params.stride, params.model)
        for r, c in zip(rows, cols)
    ]
    return TileBatch(
        tile_id=np.array(ids, object),
        source=np.array([source] * n, object),
        row=rows,
        col=cols,
        width=np.full(n, size),
        height=np.full(n, size),
        valid_fraction=np.ones(n, np.float32),
        thumbnail=np.array([None] * n, object),
        minx=minx,
        miny=miny,
        maxx=maxx,
        maxy=maxy,
        lon=np.asarray(lon),
        lat=np.asarray(lat),
        crs=CRS,
        fingerprint=np.random.default_rng(seed).normal(2.0, 1.0, (n, FINGERPRINT_DIM)),
    )


def _tiles(params: DatasetParams, sources: list[str]) -> pa.Table:
    return pa.concat_tables(
        to_table(_batch(src, 500_000.0 + i * 10_000.0, i, params), params)
        for i, src in enumerate(sources)
    )


def _split(root: Path, params: DatasetParams, parts: int, sources: list[str] = SOURCES) -> Split:
    table = _tiles(params, sources)
    idx = np.arange(table.num_rows)
    shards = [table.take(pa.array(idx[idx % parts == p])) for p in range(parts)]
    paths = [root / f"shard{p}.lance" for p in range(parts)]
    for path, shard in zip(paths, shards):
        lance.write_dataset(shard, str(path))
    lance.write_dataset(pa.concat_tables(shards), str(root / "all.lance"))
    ids = [s.column("tile_id").to_pylist() for s in shards]
    return Split(root / "all.lance", paths, ids)


@pytest.fixture(scope="module")
def split(tmp_path_factory: pytest.TempPathFactory) -> Split:
    return _split(tmp_path_factory.mktemp("shards"), PARAMS, 3)


def _hits(neighbours: list[Neighbour]) -> list[tuple[str, float]]:
    return [(n.tile_id, n.distance) for n in neighbours]


def _dbs(split: Split) -> list[str]:
    return [str(p) for p in split.shards]


def _shard_of(split: Split, tid: str) -> str:
    return next(
        str(lance.dataset(str(p)).uri) for p, ids in zip(split.shards, split.ids) if tid in ids
    )


@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_merged_top_k_equals_one_dataset(split: Split, metric: str) -> None:
    for shard_ids in split.ids:  # a query tile from each shard
        for tid in shard_ids[:3]:
            one = query(str(split.all), tile_id=tid, k=12, metric=metric, exact=True)
            many = query(_dbs(split), tile_id=tid, k=12, metric=metric, exact=True)
            assert _hits(many.neighbours) == _hits(one.neighbours)
            assert [n.rank for n in many.neighbours] == list(range(1, 13))
            assert many.rows_scanned == one.rows_scanned == 3 * GRID * GRID
            assert many.query.tile_id == tid
            # Every neighbour names the shard that holds it; one dataset names none.
            assert [n.dataset for n in many.neighbours] == [
                _shard_of(split, n.tile_id) for n in many.neighbours
            ]
            assert {n.dataset for n in one.neighbours} == {None}
            # The nearest rows come from more than one shard: a real merge.
            assert len({n.dataset for n in many.neighbours}) > 1


def test_examples_filters_and_random_across_shards(split: Split) -> None:
    pos, other, neg = split.ids[0][5], split.ids[1][4], split.ids[2][7]  # one per shard
    one = query(str(split.all), tile_id=[pos, other], negatives=[neg], k=8, exact=True)
    many = query(_dbs(split), tile_id=[pos, other], negatives=[neg], k=8, exact=True)
    assert _hits(many.neighbours) == _hits(one.neighbours)
    assert not {pos, other, neg} & {n.tile_id for n in many.neighbours}
    assert [m.tile_id for m in many.query.members] == [pos, other, neg]

    only = SearchFilter(sources=("flight_1.tif",))
    one = query(str(split.all), tile_id=pos, k=50, filters=only, exact=True)
    many = query(_dbs(split), tile_id=pos, k=50, filters=only, exact=True)
    assert _hits(many.neighbours) == _hits(one.neighbours)
    assert len(many.neighbours) == GRID * GRID  # every tile of that one source
    limit = many.neighbours[4].distance
    near = query(_dbs(split), tile_id=pos, k=50, filters=only, max_distance=limit)
    assert _hits(near.neighbours) == _hits(many.neighbours[:5])

    drawn: set[str] = set()
    for seed in range(6):  # a random tile: the same row of all rows, in any shard
        one = query(str(split.all), seed=seed, k=5)
        many = query(_dbs(split), seed=seed, k=5)
        assert many.query.tile_id == one.query.tile_id is not None
        assert _hits(many.neighbours) == _hits(one.neighbours)
        drawn.add(_shard_of(split, many.query.tile_id))
    assert len(drawn) > 1


def test_source_glob_needs_to_match_in_one_dataset(split: Split, tmp_path: Path) -> None:
    extra = _split(tmp_path, PARAMS, 1, ["/data/extra.tif"])
    dbs = [*_dbs(split), str(extra.all)]
    only = SearchFilter(sources=("extra.tif",))
    found = query(dbs, tile_id=split.ids[0][0], k=100, filters=only, exact=True)
    assert {n.tile_id for n in found.neighbours} == set(extra.ids[0])
    assert {n.dataset for n in found.neighbours} == {str(lance.dataset(str(extra.all)).uri)}
    with pytest.raises(QueryError, match=r"matches none of the 4 sources in .*shard0.*all\.lance"):
        query(dbs, tile_id=split.ids[0][0], filters=SearchFilter(sources=("nowhere.tif",)))


def test_place_found_in_the_shard_that_holds_it(split: Split) -> None:
    t = lance.dataset(str(split.shards[2])).to_table(columns=["tile_id", "lon", "lat"]).to_pylist()
    target = t[len(t) // 2]
    lonlat = (target["lon"], target["lat"])
    many = query(_dbs(split), lonlat=lonlat, k=5, exact=True)
    assert many.query.tile_id == target["tile_id"]
    assert _hits(many.neighbours) == _hits(query(str(split.all), lonlat=lonlat, k=5).neighbours)


def test_unknown_tile_and_repeated_db(split: Split) -> None:
    with pytest.raises(QueryError, match=r"is not in any of .*shard0.* .*shard2"):
        query(_dbs(split), tile_id="0" * 20)
    with pytest.raises(InputError, match="given twice"):
        query([str(split.shards[0]), str(split.shards[0])], seed=1)


def test_mismatch_is_one_line(tmp_path: Path, split: Split) -> None:
    other = _split(tmp_path / "small", DatasetParams(128, 128, MODEL), 1).all
    model = _split(tmp_path / "model", DatasetParams(256, 256, "resnet18/random-seed1"), 1).all
    for odd, what in ((other, "tile 128"), (model, "random-seed1")):
        with pytest.raises(ModelMismatchError) as info:
            open_shards([str(split.shards[0]), str(odd)])
        text = str(info.value)
        assert "\n" not in text and what in text
        assert str(split.shards[0].name) in text and str(odd) in text
    # Only the stride differs: searched together.
    stride = _split(tmp_path / "stride", DatasetParams(256, 128, MODEL), 1).all
    assert open_shards([str(split.shards[0]), str(stride)]).params == PARAMS


def test_merge_orders_by_distance_then_given_order() -> None:
    def n(tid: str, d: float, rank: int) -> Neighbour:
        return Neighbour(tile_id=tid, source="s", row=0, col=0, rank=rank, distance=d)

    a = [n("a1", 0.1, 1), n("a2", 0.5, 2), n("a3", 0.9, 3)]
    b = [n("b1", 0.2, 1), n("b2", 0.5, 2)]
    got = merge([a, b], 4)
    assert [(x.tile_id, x.rank) for x in got] == [("a1", 1), ("b1", 2), ("a2", 3), ("b2", 4)]
    assert [x.rank for x in b] == [1, 2]  # the inputs are left as they were
    assert merge([[], b], 5) == [n("b1", 0.2, 1), n("b2", 0.5, 2)]


def test_cli_several_dbs(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    split: Split,
    tmp_path: Path,
) -> None:
    tid = split.ids[1][0]
    argv = ["query", "--tile-id", tid, "-k", "6", "--exact"]
    code, out, err = run([*argv, "--json", "--db", str(split.all)], capsys)
    assert code == 0, err
    one = json.loads(out)
    many_argv = [*argv, *(a for p in split.shards for a in ("--db", str(p)))]
    code, out, err = run([*many_argv, "--json"], capsys)
    assert code == 0, err
    many = json.loads(out)
    pairs = [(h["tile_id"], h["distance"]) for h in many["neighbours"]]
    assert pairs == [(h["tile_id"], h["distance"]) for h in one["neighbours"]]
    assert all("dataset" not in h for h in one["neighbours"])  # one --db: as before
    assert {h["dataset"] for h in many["neighbours"]} <= {
        str(lance.dataset(str(p)).uri) for p in split.shards
    }

    wide = Console(width=200, highlight=False, soft_wrap=True)  # no column cut to "shard…"
    monkeypatch.setattr("ris_ray.cli.search.out", wide)
    code, out, err = run([*many_argv, "--csv", str(tmp_path / "hits.csv")], capsys)
    assert code == 0, err
    assert "3 datasets" in out
    for h in many["neighbours"]:  # each row names its dataset, by its last path part
        (line,) = [line for line in out.splitlines() if h["tile_id"] in line]
        assert f" {Path(h['dataset']).name} " in line
    assert (tmp_path / "hits.csv").read_text().count("\n") == 7

    odd = _split(tmp_path / "odd", DatasetParams(128, 128, MODEL), 1).all
    code, out, err = run(["query", "--db", str(split.all), "--db", str(odd), "--seed", "1"], capsys)
    assert code == 1 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --db ") and "tile 128" in lines[0]
