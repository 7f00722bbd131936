"""Rows written as Lance fragments by the embedders, committed whole files at a time
(ris_ray.store.fragments, TileWriter's fragment path), without Ray."""

from __future__ import annotations

import itertools
import random
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from ris_ray.core.records import TileBatch
from ris_ray.store.dataset import open_dataset
from ris_ray.store.fragments import PendingFragments, Written
from ris_ray.store.schema import DatasetParams, encode_rows, to_record_batch
from ris_ray.store.tilestore import compact
from ris_ray.store.writer import TileWriter

PARAMS = DatasetParams(256, 256, "m")


def _batch(source: str, n: int, tag: int = 0, first: int = 0) -> TileBatch:
    batch = TileBatch(
        tile_id=np.array([f"{source}:{i}" for i in range(first, first + n)], dtype=object),
        source=np.array([source] * n, dtype=object),
        row=np.arange(n, dtype=np.int64), col=np.zeros(n, np.int32),
        width=np.full(n, 256, np.int32), height=np.full(n, 256, np.int32),
        valid_fraction=np.full(n, 1.0, np.float32),
        thumbnail=np.array([b"j"] * n, dtype=object),
        minx=np.zeros(n), miny=np.zeros(n), maxx=np.ones(n), maxy=np.ones(n),
        lon=np.zeros(n), lat=np.zeros(n), crs=None,
    )  # fmt: skip
    batch.fingerprint = np.full((n, 512), tag, np.float32)
    return batch


def _call(writer: TileWriter, *windows: tuple[str, int, int]) -> Written:
    """What an embedder call over ``windows`` ((source, tiles, tag) each) writes."""
    rows = [to_record_batch(_batch(s, n, tag), PARAMS, writer.fingerprint) for s, n, tag in windows]
    written = Written(tuple(r.num_rows for r in rows), writer.target().write(rows))
    writer.add_written([s for s, _, _ in windows], written)
    return written


def _data_files(db: Path) -> int:
    return len(list((db / "data").glob("*.lance")))


def _rows(db: Path) -> dict[str, tuple[int, float]]:
    """source -> (rows, the fingerprint's first element: the tag of the call that wrote them)."""
    table = open_dataset(db).to_table(columns=["source", "fingerprint"])
    out: dict[str, tuple[int, float]] = {}
    for source, fp in zip(table["source"].to_pylist(), table["fingerprint"].to_pylist()):
        n, _ = out.get(source, (0, 0.0))
        out[source] = (n + 1, float(fp[0]))
    return out


def _closed_subsets_max(fragments: list[frozenset[str]], finished: set[str]) -> set[str]:
    """The largest subset of ``finished`` that no fragment straddles, by brute force."""
    best: set[str] = set()
    for r in range(len(finished) + 1):
        for pick in itertools.combinations(sorted(finished), r):
            chosen = set(pick)
            if all(not (f & chosen) or f <= chosen for f in fragments) and len(chosen) > len(best):
                best = chosen
    return best


def test_committable_is_the_largest_set_no_fragment_straddles() -> None:
    rng = random.Random(7)
    sources = [f"s{i}" for i in range(6)]
    for _ in range(300):
        pending = PendingFragments()
        fragments = []
        for _ in range(rng.randint(0, 6)):
            held = rng.sample(sources, rng.randint(1, 3))
            pending.add(held, Written(tuple(1 for _ in held), ("{}",)))
            fragments.append(frozenset(held))
        finished = set(rng.sample(sources, rng.randint(0, 6)))
        got = pending.committable(rng.sample(sorted(finished), len(finished)))
        assert got == _closed_subsets_max(fragments, finished)


def test_files_commit_with_all_their_fragments_and_replace_their_old_rows(tmp_path: Path) -> None:
    db = tmp_path / "db.lance"
    writer = TileWriter(db, PARAMS, fingerprint="float16")
    _call(writer, ("a", 3, 1), ("b", 2, 1))  # one fragment, two files
    _call(writer, ("b", 4, 1))
    writer.finish("a")
    assert writer.commit() == (None, [])  # b is not finished: a waits with the fragment they share
    writer.finish("b")
    version, sources = writer.commit()
    assert sources == ["a", "b"] and _rows(db) == {"a": (3, 1.0), "b": (6, 1.0)}
    writer.close()

    # The next run: b changed (now 5 tiles), c is new; each commit is one new version.
    writer = TileWriter(db, PARAMS)
    assert writer.target().mode == "append" and writer.fingerprint == "float16"
    _call(writer, ("b", 5, 2), ("c", 1, 2))
    writer.finish("b")
    writer.finish("c")
    assert writer.commit() == (version + 1, ["b", "c"])  # type: ignore[operator]
    assert _rows(db) == {"a": (3, 1.0), "b": (5, 2.0), "c": (1, 2.0)}
    writer.close()
    assert open_dataset(db).version == version + 1  # type: ignore[operator]


def test_rows_a_restarted_embedder_returned_go_out_with_the_fragments(tmp_path: Path) -> None:
    db = tmp_path / "db.lance"
    writer = TileWriter(db, PARAMS, fingerprint="float16")
    _call(writer, ("a", 3, 1))
    rows = encode_rows(_batch("a", 2, 1, first=3), PARAMS, "float16")
    writer.add_encoded("a", rows)  # returned, not written
    writer.finish("a")
    assert writer.commit()[1] == ["a"] and writer.rows_committed == 5
    table = open_dataset(db).to_table(columns=["tile_id"])
    assert sorted(table["tile_id"].to_pylist()) == ["a:0", "a:1", "a:2", "a:3", "a:4"]
    writer.close()


def test_fragments_never_committed_are_removed(tmp_path: Path) -> None:
    db = tmp_path / "db.lance"
    writer = TileWriter(db, PARAMS, fingerprint="float16")
    _call(writer, ("a", 3, 1))
    writer.finish("a")
    writer.commit()
    _call(writer, ("b", 2, 1))  # never finished (--strict, Ctrl-C)
    writer.target().write([to_record_batch(_batch("x", 2), PARAMS, "float16")])  # a lost call's
    assert _data_files(db) == 3
    writer.close()
    assert _data_files(db) == 1 and _rows(db) == {"a": (3, 1.0)}

    # ris compact finds what a crashed run left, and keeps every version.
    writer = TileWriter(db, PARAMS)
    writer.target().write([to_record_batch(_batch("y", 2), PARAMS, "float16")])
    assert _data_files(db) == 2
    stats = compact(db)
    assert stats["unreferenced_bytes_removed"] > 0 and _data_files(db) == 1
    assert stats["versions_removed"] == 0 and _rows(db) == {"a": (3, 1.0)}


def test_rebuild_overwrites_with_the_fragments(tmp_path: Path) -> None:
    db = tmp_path / "db.lance"
    writer = TileWriter(db, PARAMS, fingerprint="float32")
    _call(writer, ("a", 3, 1))
    writer.finish("a")
    writer.commit()
    writer.close()
    writer = TileWriter(db, PARAMS, rebuild=True, fingerprint="float16")
    assert writer.target().mode == "overwrite"
    _call(writer, ("b", 2, 3))
    writer.finish("b")
    assert writer.commit() == (None, [])  # rebuild: nothing until finalize
    writer.finalize()
    writer.close()
    ds = open_dataset(db)
    assert _rows(db) == {"b": (2, 3.0)}
    assert ds.schema.field("fingerprint").type.value_type == pa.float16()


@pytest.mark.parametrize("rows", [0, 2])
def test_a_file_with_no_rows_left_deletes_its_old_ones(tmp_path: Path, rows: int) -> None:
    db = tmp_path / "db.lance"
    writer = TileWriter(db, PARAMS, fingerprint="float16")
    _call(writer, ("a", 3, 1), ("b", 1, 1))
    writer.finish("a")
    writer.finish("b")
    writer.commit()
    if rows:
        _call(writer, ("a", rows, 5))
    writer.finish("a")  # skipped now (no valid tiles), or fewer tiles
    writer.commit()
    writer.close()
    assert _rows(db) == ({"a": (2, 5.0)} if rows else {}) | {"b": (1, 1.0)}
