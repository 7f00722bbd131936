"""float16 fingerprints in new datasets; datasets written before (float32)
keep working for query, diff and ingest (appends stay float32)."""

from __future__ import annotations

from pathlib import Path

import lance
import numpy as np
import pytest

from ris_ray.core.config import IngestConfig
from ris_ray.ingest.pipeline import ingest
from ris_ray.sample import landscape, write_geotiff
from ris_ray.search.diff import diff
from ris_ray.search.plot import plot_neighbours
from ris_ray.search.query import query
from ris_ray.store.schema import cast_fingerprints, fingerprint_type


def _ingest(files: list[Path], db: Path, **kw: object) -> None:
    cfg = IngestConfig(
        inputs=tuple(str(f) for f in files),
        db=str(db),
        weights="random",
        precision="fp32",  # bf16 output (auto on some CPUs) would fit float16 exactly
        progress=False,
        **kw,  # type: ignore[arg-type]
    )
    report = ingest(cfg)
    assert not report.files_failed


def _fingerprints(db: Path, source_name: str) -> tuple[list[str], np.ndarray]:
    t = lance.dataset(str(db)).to_table(columns=["tile_id", "source", "fingerprint"])
    keep = [i for i, s in enumerate(t["source"].to_pylist()) if s.endswith(source_name)]
    t = t.take(keep)
    fp = t["fingerprint"].combine_chunks()
    x = fp.values.to_numpy(zero_copy_only=False).astype(np.float32).reshape(len(fp), -1)
    order = np.argsort(t["tile_id"].to_pylist())
    return [t["tile_id"].to_pylist()[i] for i in order], x[order]


def _as_old_float32(db: Path) -> None:
    """Rewrite ``db`` as a dataset written before float16 (float32 fingerprints,
    same rows, same ris_ray metadata)."""
    ds = lance.dataset(str(db))
    table = cast_fingerprints(ds.to_table(), "float32")
    table = table.replace_schema_metadata(ds.schema.metadata)
    lance.write_dataset(table, str(db), mode="overwrite", data_storage_version="2.0")
    assert fingerprint_type(lance.dataset(str(db))) == "float32"


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    d = tmp_path_factory.mktemp("f16")
    scene = landscape(512, 768, seed=21)
    after = scene.copy()
    after[:, 20:230, 20:230] = 200  # one painted tile
    geo = {"origin": (600000.0, 5100000.0), "res": 0.2}
    return [
        write_geotiff(d / "before.tif", scene, **geo),  # type: ignore[arg-type]
        write_geotiff(d / "after.tif", after, **geo),  # type: ignore[arg-type]
        write_geotiff(d / "third.tif", landscape(512, 512, seed=22), **geo),  # type: ignore[arg-type]
    ]


def test_new_and_old_datasets(ray_session: None, scenes: list[Path], tmp_path: Path) -> None:
    new, old = tmp_path / "new.lance", tmp_path / "old.lance"
    _ingest(scenes[:2], old)
    _as_old_float32(old)

    # Appending to the old dataset keeps float32, at full precision.
    _ingest(scenes, old)
    _ingest(scenes, new, thumbnail_size=0)  # and no thumbnails: null, plots cope
    assert fingerprint_type(lance.dataset(str(old))) == "float32"
    assert fingerprint_type(lance.dataset(str(new))) == "float16"
    ids32, x32 = _fingerprints(old, "third.tif")
    ids16, x16 = _fingerprints(new, "third.tif")
    assert ids32 == ids16 and len(ids32) == 4
    assert not np.array_equal(x32, x32.astype(np.float16).astype(np.float32))
    assert np.array_equal(x16, x32.astype(np.float16).astype(np.float32))

    # Query: the same neighbours, distances equal to float16 precision.
    for db in (old, new):
        res = query(str(db), tile_id=ids32[0], k=5, include_self=True, exact=True)
        assert res.neighbours[0].tile_id == ids32[0] and res.neighbours[0].distance == 0.0
    r32 = query(str(old), tile_id=ids32[0], k=5, exact=True)
    r16 = query(str(new), tile_id=ids32[0], k=5, exact=True)
    assert [n.tile_id for n in r32.neighbours] == [n.tile_id for n in r16.neighbours]
    assert [n.distance for n in r16.neighbours] == pytest.approx(
        [n.distance for n in r32.neighbours], rel=5e-3
    )

    assert lance.dataset(str(new)).to_table(columns=["thumbnail"])["thumbnail"].null_count == 16
    assert r16.neighbours[0].thumbnail is None and r32.neighbours[0].thumbnail
    fig = plot_neighbours(r16)
    fig.savefig(tmp_path / "nothumbs.png")
    assert (tmp_path / "nothumbs.png").stat().st_size > 0

    # Diff: the painted tile first in both, distances to float16 precision.
    d32, d16 = diff(str(old), "before.tif", "after.tif"), diff(str(new), "before.tif", "after.tif")
    assert (d32.changes[0].row, d32.changes[0].col) == (0, 0)
    assert [(c.row, c.col) for c in d16.changes] == [(c.row, c.col) for c in d32.changes]
    assert [c.distance for c in d16.changes] == pytest.approx(
        [c.distance for c in d32.changes], rel=5e-3, abs=1e-3
    )

    # --rebuild writes a new dataset: float16.
    _ingest(scenes, old, rebuild=True)
    assert fingerprint_type(lance.dataset(str(old))) == "float16"
