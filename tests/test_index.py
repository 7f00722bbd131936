"""The in-memory exact scan and the IVF_PQ index."""

from __future__ import annotations

from pathlib import Path

import lance
import numpy as np
import pytest

from ris_ray.core.errors import InputError
from ris_ray.sample import synthetic_fingerprints, write_fingerprint_dataset
from ris_ray.search.index import build_index, vector_index
from ris_ray.search.query import query, search
from ris_ray.search.scan import FlatScan
from ris_ray.store.schema import fingerprint_type


def _brute(x: np.ndarray, q: np.ndarray, metric: str) -> np.ndarray:
    x64, q64 = x.astype(np.float64), q.astype(np.float64)
    if metric == "l2":
        return np.asarray(np.sqrt(((x64 - q64) ** 2).sum(axis=1)))
    return np.asarray(1 - x64 @ q64 / (np.linalg.norm(x64, axis=1) * np.linalg.norm(q64)))


@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_flat_scan_matches_brute_force(metric: str) -> None:
    x = synthetic_fingerprints(5000, seed=1)
    x[100] = x[7]  # an exact duplicate: a tie at distance 0 for query 7
    scan = FlatScan(x, chunk_rows=1024)  # several chunks
    for qi in (7, 42, 4999):
        idx, dist = scan.search(x[qi], 10, metric)
        d = _brute(x, x[qi], metric)
        assert dist == pytest.approx(np.sort(d)[:10], abs=1e-9)
        if qi == 7:
            assert set(idx[:2]) == {7, 100} and dist[1] == pytest.approx(0.0, abs=1e-12)
        else:
            assert idx[0] == qi and dist[0] == pytest.approx(0.0, abs=1e-12)
        assert (np.diff(dist) >= 0).all()


@pytest.mark.parametrize("k", [1, 3000, 6000])
def test_flat_scan_any_k_across_chunks(k: int) -> None:
    """k larger than a chunk, and k >= N, still give exactly the brute-force order."""
    x = synthetic_fingerprints(5000, seed=2)
    q = x[4321] + 0.01
    idx, dist = FlatScan(x, chunk_rows=1024).search(q, k)
    d = _brute(x, q, "l2")
    assert len(idx) == min(k, len(x))
    assert dist == pytest.approx(d[idx], abs=1e-9)
    assert dist == pytest.approx(np.sort(d)[: len(idx)], abs=1e-9)
    assert len(set(idx.tolist())) == len(idx)


def test_flat_scan_breaks_ties_by_tile_id() -> None:
    """Copies of one vector (one scene ingested twice) come in tile_id order,
    whatever the row order: as ris query and several datasets give them."""
    x = synthetic_fingerprints(40, seed=5)
    x[[3, 17, 30]] = x[8]  # four equal rows
    ids = [f"id{39 - i:02d}" for i in range(40)]  # row order opposite to id order
    idx, dist = FlatScan(x, ids, chunk_rows=16).search(x[8], 4)
    assert sorted(idx.tolist()) == [3, 8, 17, 30] and np.all(dist == 0.0)
    assert [ids[i] for i in idx] == sorted(ids[i] for i in (3, 8, 17, 30))
    idx, _ = FlatScan(x, chunk_rows=16).search(x[8], 4)  # no ids: row order
    assert idx.tolist() == [3, 8, 17, 30]


def test_flat_scan_rows_round_trip() -> None:
    x = synthetic_fingerprints(2500, seed=4)
    scan = FlatScan(x, chunk_rows=1000)  # last block is partial
    idx = np.array([2499, 0, 1000, 999, 1500])
    assert np.array_equal(scan.rows(idx), x[idx]) and len(scan) == 2500


def test_flat_scan_rejects_unknown_metric() -> None:
    with pytest.raises(ValueError, match="metric"):
        FlatScan(synthetic_fingerprints(10, seed=0)).search(np.zeros(512), 1, "dot")


def test_flat_scan_from_dataset(gen_db: Path) -> None:
    scan = FlatScan.from_dataset(lance.dataset(str(gen_db)))
    assert scan.ids is not None and len(scan.ids) == len(scan) > 3
    idx, dist = scan.search(scan.rows([3])[0], 1)
    assert idx[0] == 3 and dist[0] == 0.0


@pytest.fixture(scope="module", params=["float16", "float32"])
def synthetic_db(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, np.ndarray]:
    """A 10k-row dataset in both fingerprint types (float32: a dataset written
    before float16), and the vectors as stored."""
    db = tmp_path_factory.mktemp("ann") / "syn.lance"
    x = synthetic_fingerprints(10_000, seed=3)
    write_fingerprint_dataset(str(db), x, fingerprint=request.param)
    ds = lance.dataset(str(db))
    assert fingerprint_type(ds) == request.param
    return db, x.astype(request.param).astype(np.float32)


@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_exact_search_ranks_in_float32(synthetic_db: tuple[Path, np.ndarray], metric: str) -> None:
    """Exact search = brute force in float64 over the stored values, distances
    to float32 precision, on float16 and float32 datasets alike."""
    db, x = synthetic_db
    ds = lance.dataset(str(db))
    for qi in range(3, 10_000, 997):
        q = x[qi] + 0.01
        got, _ = search(ds, q, 10, metric, exact=True)
        ref = _brute(x, q, metric)
        truth = np.argsort(ref, kind="stable")[:10]
        assert [int(n.tile_id, 16) for n in got] == truth.tolist()
        assert [n.distance for n in got] == pytest.approx(ref[truth], rel=1e-4, abs=1e-6)


def test_index_is_used_and_recall_is_high(synthetic_db: tuple[Path, np.ndarray]) -> None:
    db, x = synthetic_db
    info = build_index(str(db), partitions=64, sub_vectors=64)
    assert info["rows"] == 10_000 and info["partitions"] == 64
    ds = lance.dataset(str(db))
    assert vector_index(ds, "l2") == "fingerprint_ivf_pq_l2"
    assert vector_index(ds, "cosine") is None
    hits = 0
    queries = range(0, 10_000, 499)
    for qi in queries:
        exact, _ = search(ds, x[qi], 10, exact=True)
        approx, _ = search(ds, x[qi], 10)
        truth = np.argsort(_brute(x, x[qi], "l2"), kind="stable")[:10]
        assert [int(n.tile_id, 16) for n in exact] == truth.tolist()
        hits += len({n.tile_id for n in approx} & {n.tile_id for n in exact})
        # Re-ranked candidates carry exact distances.
        for n in approx:
            assert n.distance == pytest.approx(
                _brute(x[[int(n.tile_id, 16)]], x[qi], "l2")[0], rel=1e-4
            )
    assert hits / (10 * len(queries)) >= 0.9


def test_index_needs_rows_and_valid_params(
    gen_db: Path, synthetic_db: tuple[Path, np.ndarray]
) -> None:
    with pytest.raises(InputError, match="too few"):
        build_index(str(gen_db))
    with pytest.raises(InputError, match="must divide 512"):
        build_index(str(synthetic_db[0]), sub_vectors=7)


def test_exact_flag_through_query(synthetic_db: tuple[Path, np.ndarray]) -> None:
    db, _ = synthetic_db
    build_index(str(db), partitions=32)
    res = query(str(db), tile_id=f"{5:020x}", k=5, exact=True, include_self=True)
    assert res.neighbours[0].tile_id == f"{5:020x}" and res.neighbours[0].distance == 0.0


def _append_copies(db: Path, n: int, tag: str) -> None:
    """Append ``n`` rows (copies of the first ones, new tile ids), as an ingest
    of new files would, without folding them into the index."""
    import pyarrow as pa

    t = lance.dataset(str(db)).to_table(limit=n)
    ids = pa.array([f"{tag}{i:019x}" for i in range(n)], pa.string())
    t = t.set_column(t.schema.get_field_index("tile_id"), t.schema.field("tile_id"), ids)
    lance.write_dataset(t, str(db), mode="append")


def test_info_shows_unindexed_rows_and_when_to_retrain(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``ris info``: rows appended after the build are counted as not indexed
    (and found by the next query); once ingest folds them in
    (``refresh_indices``) none are; past 2x the trained rows it says retrain."""
    from cli_run import run

    from ris_ray.store.dataset import dataset_info
    from ris_ray.store.tilestore import TileStore

    db = tmp_path / "grow.lance"
    x = synthetic_fingerprints(1000, seed=5)
    write_fingerprint_dataset(str(db), x)
    build_index(str(db), partitions=4, sub_vectors=16)
    (idx,) = dataset_info(str(db))["indexes"]
    assert (idx["indexed_rows"], idx["unindexed_rows"], idx["trained_rows"]) == (1000, 0, 1000)
    assert idx["name"] == "fingerprint_ivf_pq_l2" and not idx["retrain"]

    _append_copies(db, 600, "a")
    (idx,) = dataset_info(str(db))["indexes"]
    assert (idx["indexed_rows"], idx["unindexed_rows"]) == (1000, 600)
    assert idx["unindexed_share"] == pytest.approx(600 / 1600, abs=1e-4)
    res = query(str(db), tile_id=f"a{3:019x}", k=3, include_self=True)  # via the index
    assert {n.tile_id for n in res.neighbours[:2]} == {f"a{3:019x}", f"{3:020x}"}  # same vector

    assert TileStore(str(db)).refresh_indices()  # what ingest does after a commit
    _append_copies(db, 600, "b")
    (idx,) = dataset_info(str(db))["indexes"]
    assert (idx["indexed_rows"], idx["unindexed_rows"], idx["trained_rows"]) == (1600, 600, 1000)
    assert idx["retrain"]  # 2200 rows on centroids trained on 1000
    code, shown, _ = run(["info", "--db", str(db)], capsys)
    assert code == 0
    assert "1600 rows indexed, 600 not yet (27.3 %" in shown
    assert "trained on 1000: the rows have grown past 2x, retrain with ris index" in shown
