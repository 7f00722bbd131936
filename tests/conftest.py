"""Shared fixtures: one Ray instance per test session, generated and real GeoTIFFs."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from s3_server import MotoServer

from ris_ray.sample import landscape, write_geotiff

SHARED_DATA = Path(
    os.environ.get("RIS_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real GeoTIFFs in ../shared/data; tests using it skip cleanly without it."""
    if not (SHARED_DATA / "SOURCES.md").is_file():
        pytest.skip(f"real data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def ray_session() -> Iterator[None]:
    """One embedded Ray for the whole session (ingest() reuses an initialised Ray),
    started as ingest starts its own: local, loopback only, with a watchdog."""
    from ris_ray.ingest import raylocal

    raylocal.start(num_cpus=2)
    yield
    raylocal.stop()


@pytest.fixture(scope="session")
def gen_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Small seeded GeoTIFFs covering the band/mask layouts ingest must handle."""
    d = tmp_path_factory.mktemp("gen")
    rgb = landscape(300, 560, seed=1)  # 1 x 2 tiles at 256, partial edges dropped
    write_geotiff(d / "rgb.tif", rgb, origin=(500000.0, 4000000.0), res=0.5)
    # RGBA: left half transparent -> the left tile is skipped, the right one kept.
    rgba = np.concatenate([landscape(256, 512, seed=2), np.zeros((1, 256, 512), np.uint8)])
    rgba[3, :, 256:] = 255
    write_geotiff(d / "rgba.tif", rgba, alpha=True)
    # uint16 single band, nodata=0 on the first tile.
    pan = landscape(256, 768, seed=3).mean(axis=0).astype(np.uint16) * 50 + 1000
    pan[:, :256] = 0
    write_geotiff(d / "pan16.tif", pan[None], nodata=0)
    # No georeferencing at all.
    write_geotiff(d / "nogeo.tif", landscape(256, 256, seed=4), crs=None)
    # Smaller than a tile.
    write_geotiff(d / "tiny.TIF", landscape(100, 120, seed=5))
    # Black fill (no nodata declared) over 3 of 4 tiles.
    fill = landscape(512, 512, seed=6)
    fill[:, :, :256] = 0
    fill[:, 256:, 256:] = 0
    write_geotiff(d / "fill.tif", fill, tiled=False)
    return d


def copy_tree(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


@pytest.fixture(scope="session")
def gen_db(ray_session: None, gen_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The generated files ingested once (random weights)."""
    from ris_ray.core.config import IngestConfig
    from ris_ray.ingest.pipeline import ingest

    db = tmp_path_factory.mktemp("dbs") / "gen.lance"
    report = ingest(
        IngestConfig(inputs=(str(gen_dir),), db=str(db), weights="random", progress=False)
    )
    assert report.tiles_written > 0
    return db


@pytest.fixture(scope="session")
def shared_db(
    ray_session: None, shared_data: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, object]:
    """All of ../shared/data ingested once (random weights); yields (db, report)."""
    from ris_ray.core.config import IngestConfig
    from ris_ray.ingest.pipeline import ingest

    db = tmp_path_factory.mktemp("dbs") / "shared.lance"
    report = ingest(
        IngestConfig(inputs=(str(shared_data),), db=str(db), weights="random", progress=False)
    )
    return db, report


@pytest.fixture(scope="session")
def db(request: pytest.FixtureRequest) -> Path:
    """The shared-data dataset when available (more tiles), else the generated one."""
    try:
        return request.getfixturevalue("shared_db")[0]  # type: ignore[no-any-return]
    except pytest.skip.Exception:
        return request.getfixturevalue("gen_db")  # type: ignore[no-any-return]


@pytest.fixture(scope="session")
def s3() -> Iterator[MotoServer]:
    """A real S3 API server (moto, subprocess) on loopback for the whole session.

    Sets AWS_ACCESS_KEY_ID/SECRET/REGION and AWS_ENDPOINT_URL in this process's
    environment (so subprocesses and Ray workers started later inherit them)
    and restores the environment afterwards.
    """
    server = MotoServer()
    saved = {k: os.environ.get(k) for k in server.env()}
    os.environ.update(server.env())
    try:
        yield server
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        server.stop()


def float16_bound(db: Path, tile_id: str) -> float:
    """How far a fresh float32 fingerprint of a tile's own pixels may lie from
    its stored float16 copy: rounding moves each component by at most 2^-11 of
    it, so ``|x - q| <= 2^-11 |x|`` (~0.012 with random weights, where
    ``|x|`` is ~25; a fixed 1e-3 held only where the query was rounded too)."""
    import lance

    t = lance.dataset(str(db)).to_table(columns=["fingerprint"], filter=f"tile_id = '{tile_id}'")
    stored = np.asarray(t.column("fingerprint")[0].as_py(), np.float64)
    return float(2.0**-11 * np.linalg.norm(stored) * 1.001)
