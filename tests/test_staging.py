"""Staged rows (ris_ray.store.staging) and the rows an embedder encodes (schema.encode_rows)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from ris_ray.core.records import TileBatch
from ris_ray.store.schema import DatasetParams, encode_rows, schema_for, to_table
from ris_ray.store.staging import Staging

PARAMS = DatasetParams(256, 256, "m")


def _batch(source: str, n: int, seed: int = 0) -> TileBatch:
    rng = np.random.default_rng(seed)
    geo = rng.normal(size=(6, n))
    geo[:, ::3] = np.nan  # no georeferencing: null bounds
    batch = TileBatch(
        tile_id=np.array([f"{source}-{seed}-{i}" for i in range(n)], dtype=object),
        source=np.array([source] * n, dtype=object),
        row=np.arange(n, dtype=np.int64), col=np.zeros(n, np.int32),
        width=np.full(n, 256, np.int32), height=np.full(n, 256, np.int32),
        valid_fraction=rng.random(n).astype(np.float32),
        thumbnail=np.array([None if i % 2 else bytes([i]) * (i + 1) for i in range(n)], object),
        minx=geo[0], miny=geo[1], maxx=geo[2], maxy=geo[3], lon=geo[4], lat=geo[5],
        crs="EPSG:32633" if seed % 2 == 0 else None,
    )  # fmt: skip
    batch.fingerprint = rng.normal(size=(n, 512)).astype(np.float32)
    return batch


def _reference(batch: TileBatch, fingerprint: str) -> pa.Table:
    """The same table built with ``pa.array`` (what to_table did before)."""
    n = len(batch)
    fp = np.asarray(batch.fingerprint, dtype=fingerprint).reshape(-1)

    def geo(name: str) -> pa.Array:
        values = np.asarray(getattr(batch, name), dtype=np.float64)
        return pa.array(values, mask=np.isnan(values), type=pa.float64())

    columns = {
        "tile_id": pa.array(list(batch.tile_id), pa.string()),
        "source": pa.array(list(batch.source), pa.string()),
        **{k: pa.array(getattr(batch, k), pa.int32()) for k in ("row", "col", "width", "height")},
        "crs": pa.array([batch.crs] * n, pa.string()),
        **{k: geo(k) for k in ("minx", "miny", "maxx", "maxy", "lon", "lat")},
        "valid_fraction": pa.array(batch.valid_fraction, pa.float32()),
        "model": pa.array([PARAMS.model] * n, pa.string()),
        "thumbnail": pa.array(list(batch.thumbnail), pa.binary()),
        "fingerprint": pa.FixedSizeListArray.from_arrays(pa.array(fp), 512),
    }
    return pa.Table.from_pydict(columns, schema=schema_for(PARAMS, fingerprint))


@pytest.mark.parametrize("fingerprint", ["float16", "float32"])
def test_encoded_rows_are_the_table_pa_array_builds(fingerprint: str) -> None:
    batch = _batch("a.tif", 7, seed=2)
    want = _reference(batch, fingerprint)
    assert to_table(batch, PARAMS, fingerprint).equals(want, check_metadata=True)
    encoded = encode_rows(batch, PARAMS, fingerprint)
    got = pa.ipc.read_record_batch(encoded.message, schema_for(PARAMS, fingerprint))
    assert encoded.rows == 7 and pa.Table.from_batches([got]).equals(want)
    assert got.column("thumbnail").null_count == 3 and got.column("minx").null_count == 3
    odd = _batch("b.tif", 3, seed=1)  # no CRS: a null column
    assert to_table(odd, PARAMS, fingerprint).equals(_reference(odd, fingerprint))


def test_encoding_rows_does_not_import_pandas(tmp_path: Path) -> None:
    """pa.array's first call imports pandas (~0.2 CPU-s per embedder actor); the
    actor's encoding must not (checked in a fresh interpreter)."""
    import subprocess

    code = (
        "import sys; sys.path.insert(0, 'tests'); from test_staging import _batch, PARAMS;"
        "from ris_ray.store.schema import encode_rows; encode_rows(_batch('a', 4), PARAMS);"
        "print('pandas' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def _messages(source: str, sizes: list[int]) -> list[tuple[pa.Buffer, int]]:
    return [
        (encode_rows(_batch(source, n, seed=i), PARAMS, "float16").message, n)
        for i, n in enumerate(sizes)
    ]


def _read(staging: Staging, sources: list[str]) -> list[str]:
    return staging.reader(sources).read_all().column("tile_id").to_pylist()


def test_staged_rows_stay_in_memory_within_the_budget(tmp_path: Path) -> None:
    staging = Staging(schema_for(PARAMS, "float16"), spill_dir=str(tmp_path))
    for source in ("a.tif", "b.tif"):
        for message, n in _messages(source, [3, 2]):
            staging.add(source, message, n)
    staging.seal("a.tif")
    assert staging.rows(["a.tif", "b.tif"]) == 10 and staging.spills == 0
    want = [f"a.tif-{seed}-{i}" for seed, n in ((0, 3), (1, 2)) for i in range(n)]
    assert _read(staging, ["a.tif"]) == want
    assert list(tmp_path.iterdir()) == []  # nothing touched the disk
    staging.drop("a.tif")
    assert staging.rows(["a.tif", "b.tif"]) == 5 and len(_read(staging, ["b.tif"])) == 5


def test_past_the_budget_the_largest_source_spills_and_reads_back_alike(tmp_path: Path) -> None:
    small, big = _messages("s.tif", [1]), _messages("big.tif", [6, 6, 6])
    one = len(big[0][0].to_pybytes())
    staging = Staging(schema_for(PARAMS, "float16"), budget=2 * one + 10, spill_dir=str(tmp_path))
    staging.add("s.tif", *small[0])
    staging.add("big.tif", *big[0])
    staging.seal("big.tif")  # sealed in memory, then spilled: its file must still be whole
    staging.add("big.tif", *big[1])  # over the budget: the largest (big.tif) spills
    assert staging.spills == 1
    (stage,) = tmp_path.iterdir()
    assert len(list(stage.iterdir())) == 1
    staging.add("big.tif", *big[2])  # later rows of a spilled source go to its file
    staging.seal("big.tif")
    want = [f"big.tif-{s}-{i}" for s in range(3) for i in range(6)]
    assert _read(staging, ["big.tif"]) == want and _read(staging, ["s.tif"]) == ["s.tif-0-0"]
    assert staging.rows(["big.tif", "s.tif"]) == 19
    staging.drop("big.tif")
    assert list(stage.iterdir()) == []
    staging.close()
    assert not stage.exists()


def test_writer_refuses_rows_encoded_in_another_schema(tmp_path: Path) -> None:
    from ris_ray.store.writer import TileWriter

    writer = TileWriter(str(tmp_path / "db.lance"), PARAMS, fingerprint="float16")
    try:
        writer.add_encoded("a.tif", encode_rows(_batch("a.tif", 2), PARAMS, "float16"))
        with pytest.raises(ValueError, match="b.tif: rows encoded in another schema"):
            writer.add_encoded("b.tif", encode_rows(_batch("b.tif", 2), PARAMS, "float32"))
        writer.finish("a.tif")
        version, sources = writer.commit()
        assert sources == ["a.tif"] and version == 1 and writer.rows_committed == 2
    finally:
        writer.close()


def test_a_file_spilled_to_disk_is_committed_whole(tmp_path: Path) -> None:
    """Past the budget, staged rows go to disk and still reach Lance in one commit."""
    import lance

    from ris_ray.store.writer import TileWriter

    writer = TileWriter(str(tmp_path / "db.lance"), PARAMS, stage_dir=str(tmp_path))
    writer.staging.budget = 1  # every file spills
    try:
        for i, n in enumerate([4, 3, 5]):
            writer.add_encoded("a.tif", encode_rows(_batch("a.tif", n, seed=i), PARAMS))
        writer.add_encoded("b.tif", encode_rows(_batch("b.tif", 2, seed=9), PARAMS))
        assert writer.staging.spills == 2
        writer.finish("a.tif")
        writer.finish("b.tif")
        version, sources = writer.commit()
        assert sources == ["a.tif", "b.tif"] and version == 1
        ids = lance.dataset(str(tmp_path / "db.lance")).to_table().column("tile_id").to_pylist()
        assert sorted(ids) == sorted(
            [f"a.tif-{s}-{j}" for s, n in enumerate([4, 3, 5]) for j in range(n)]
            + [f"b.tif-9-{j}" for j in range(2)]
        )
        assert not any(p.suffix == ".arrow" for p in tmp_path.rglob("*"))  # dropped once committed
    finally:
        writer.close()
    assert not any(p.name.startswith("ris-stage-") for p in tmp_path.iterdir())
