"""k-NN queries against ingested datasets, checked against numpy brute force."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lance
import numpy as np
import pytest

from ris_ray.core.errors import DatasetError, InputError, QueryError
from ris_ray.search.plot import plot_neighbours
from ris_ray.search.query import query


def _all(db: Path) -> tuple[list[str], np.ndarray]:
    t = lance.dataset(str(db)).to_table(columns=["tile_id", "fingerprint"])
    return t.column("tile_id").to_pylist(), np.stack(
        t.column("fingerprint").to_numpy(zero_copy_only=False)
    ).astype(np.float64)


def _brute(x: np.ndarray, q: np.ndarray, metric: str) -> np.ndarray:
    if metric == "l2":
        return np.sqrt(((x - q) ** 2).sum(axis=1))
    return 1.0 - (x @ q) / (np.linalg.norm(x, axis=1) * np.linalg.norm(q))


def test_every_tile_finds_itself_first(db: Path) -> None:
    ids, _ = _all(db)
    for tid in ids:
        res = query(str(db), tile_id=tid, k=3, include_self=True)
        assert res.neighbours[0].tile_id == tid
        assert res.neighbours[0].distance == pytest.approx(0.0, abs=1e-3)


@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_distances_match_brute_force(db: Path, metric: str) -> None:
    ids, x = _all(db)
    k = min(10, len(ids) - 1)
    for i in range(0, len(ids), max(1, len(ids) // 12)):
        res = query(str(db), tile_id=ids[i], k=k, metric=metric)
        d = _brute(x, x[i], metric)
        d[i] = np.inf  # the query tile is excluded by default
        order = np.argsort(d, kind="stable")[:k]
        got = [n.distance for n in res.neighbours]
        assert got == pytest.approx(d[order].tolist(), rel=1e-3, abs=1e-4)
        assert ids[i] not in [n.tile_id for n in res.neighbours]
        # Ids agree wherever distances are not tied.
        for rank, n in enumerate(res.neighbours):
            if np.sum(np.isclose(d, d[order[rank]], rtol=1e-5)) == 1:
                assert n.tile_id == ids[order[rank]]
        assert [n.rank for n in res.neighbours] == list(range(1, k + 1))


def test_random_query_is_seeded(db: Path) -> None:
    a = query(str(db), seed=3, k=2)
    b = query(str(db), seed=3, k=2)
    assert a.query.tile_id == b.query.tile_id is not None
    assert [n.tile_id for n in a.neighbours] == [n.tile_id for n in b.neighbours]


def test_image_query_with_window_finds_the_tile(gen_db: Path, gen_dir: Path) -> None:
    rows = (
        lance.dataset(str(gen_db))
        .to_table(
            columns=["tile_id", "source", "row", "col", "fingerprint"],
            filter="source LIKE '%/rgb.tif'",
        )
        .to_pylist()
    )
    target = next(r for r in rows if r["col"] == 256)
    res = query(str(gen_db), image=str(gen_dir / "rgb.tif"), window=(256, 0, 256, 256), k=3)
    assert res.neighbours[0].tile_id == target["tile_id"]
    # The same pixels give the same vector, up to its float16 storage: rounding to
    # float16 moves each component by at most 2^-11 of it, so |x - q| <= 2^-11 |x|
    # (with random weights |x| is ~25, so this is ~0.012, not a fixed 1e-3).
    stored = np.linalg.norm(np.asarray(target["fingerprint"], np.float64))
    assert res.neighbours[0].distance <= 2.0**-11 * stored * 1.001
    assert res.query.tile_id is None and res.query.pixels is not None


def test_image_query_on_a_png(gen_db: Path, tmp_path: Path) -> None:
    from PIL import Image

    png = tmp_path / "photo.png"
    Image.fromarray(np.full((300, 400, 3), 120, np.uint8)).save(png)
    res = query(str(gen_db), image=str(png), k=2)
    assert len(res.neighbours) == 2


def test_query_errors(gen_db: Path, tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no Lance dataset"):
        query(str(tmp_path / "missing.lance"))
    with pytest.raises(QueryError, match="not in"):
        query(str(gen_db), tile_id="0" * 20)
    with pytest.raises(InputError, match="20 lowercase hex"):
        query(str(gen_db), tile_id="x' OR 1=1 --")
    with pytest.raises(InputError, match="--metric"):
        query(str(gen_db), metric="manhattan")
    with pytest.raises(InputError, match="--window needs --image"):
        query(str(gen_db), window=(0, 0, 1, 1))


def test_plot_layout(gen_db: Path) -> None:
    res = query(str(gen_db), seed=0, k=5)
    fig = plot_neighbours(res)
    assert len(fig.axes) == 1 + len(res.neighbours) == 6
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[0].startswith("query")
    for n, title in zip(res.neighbours, titles[1:]):
        assert title.startswith(f"#{n.rank}  d=")
    # Query panel on the left, neighbours to its right.
    left = fig.axes[0].get_position().x1
    assert all(ax.get_position().x0 >= left - 1e-6 for ax in fig.axes[1:])


def _json_roundtrip(res: Any) -> None:
    import json

    data = json.loads(json.dumps(res.to_dict()))
    assert len(data["neighbours"]) == res.k


def test_result_json(gen_db: Path) -> None:
    _json_roundtrip(query(str(gen_db), seed=1, k=4))
