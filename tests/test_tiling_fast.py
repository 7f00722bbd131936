"""The vectorised tiling helpers against plain per-tile loops, and the mask
rules against GDAL's dataset mask (no Ray)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio

from ris_ray.raster.bands import band_planes, to_rgb8
from ris_ray.raster.reading import probe, read_tiles
from ris_ray.raster.tiling import TileSpec, WindowJob, count_tiles, cut_tiles, tile_valid_counts
from ris_ray.sample import landscape, write_geotiff


@pytest.mark.parametrize(("tile", "stride"), [(16, 16), (16, 8), (16, 12), (16, 7), (16, 32)])
def test_valid_counts_match_a_loop(tile: int, stride: int) -> None:
    rng = np.random.default_rng(tile * 100 + stride)
    valid = rng.random((100, 90)) > 0.3
    n_rows, n_cols = count_tiles(100, tile, stride), count_tiles(90, tile, stride)
    got = tile_valid_counts(valid, n_rows, n_cols, tile, stride)
    want = np.array(
        [
            [
                valid[i * stride : i * stride + tile, j * stride : j * stride + tile].sum()
                for j in range(n_cols)
            ]
            for i in range(n_rows)
        ]
    )
    assert got.shape == (n_rows, n_cols) and np.array_equal(got, want)


@pytest.mark.parametrize(("tile", "stride"), [(16, 16), (16, 12), (16, 24)])
def test_cut_tiles_matches_slicing(tile: int, stride: int) -> None:
    planes = np.random.default_rng(0).integers(0, 255, (3, 70, 66), dtype=np.uint8)
    rows, cols = np.array([0, 1, 2, 0]), np.array([0, 1, 0, 2])
    got = cut_tiles(planes, rows, cols, tile, stride)
    assert got.shape == (4, 3, tile, tile) and got.flags.c_contiguous
    for k, (i, j) in enumerate(zip(rows, cols)):
        r, c = i * stride, j * stride
        assert np.array_equal(got[k], planes[:, r : r + tile, c : c + tile])


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "float32"])
@pytest.mark.parametrize("bands", [1, 3])
def test_band_planes_equal_to_rgb8_band_first(dtype: str, bands: int) -> None:
    rng = np.random.default_rng(1)
    data = (rng.random((bands, 20, 30)) * 250).astype(dtype)
    if dtype == "float32":
        data[0, 0, 0] = np.nan
    valid = rng.random((20, 30)) > 0.2
    stretch = None if dtype == "uint8" else ((10.0, 200.0),) * bands
    want = to_rgb8(data.copy(), valid, stretch).transpose(2, 0, 1)
    got = band_planes(data.copy(), valid, stretch)
    assert got.shape == (3, 20, 30) and np.array_equal(got, want)


def _job(info_w: int, info_h: int, spec: TileSpec) -> WindowJob:
    return WindowJob(
        0,
        0,
        count_tiles(info_h, spec.tile, spec.stride),
        count_tiles(info_w, spec.tile, spec.stride),
    )


def test_tiling_leaves_thumbnails_to_the_embedder(tmp_path: Path) -> None:
    path = write_geotiff(tmp_path / "a.tif", landscape(64, 64, seed=1))
    spec = TileSpec(32, 32, 0.5, "m")
    batch, _ = read_tiles(probe(str(path)), _job(64, 64, spec), spec)
    assert len(batch.tile_id) == 4 and list(batch.thumbnail) == [None] * 4


def _gdal_fractions(path: Path, tile: int) -> list[float]:
    with rasterio.open(path) as src:
        mask = src.dataset_mask() > 0
    h, w = mask.shape
    return [
        float(mask[r : r + tile, c : c + tile].mean())
        for r in range(0, h - tile + 1, tile)
        for c in range(0, w - tile + 1, tile)
    ]


def test_nodata_rule_is_gdals_dataset_mask(tmp_path: Path) -> None:
    # 4 bands, nodata 7: a pixel is nodata only where all four bands are 7,
    # including the band that is not embedded.
    data = np.full((4, 64, 64), 7, np.uint16)  # (uint8 x 4 would be RGBA)
    data[0, :32, :32] = 9  # band 1 differs: valid
    data[3, 32:, :40] = 1  # only the unused band 4 differs: still valid
    path = write_geotiff(tmp_path / "nd.tif", data, nodata=7)
    info = probe(str(path))
    assert info.mask_rule == "nodata" and info.bands.indexes == (1, 2, 3)
    spec = TileSpec(16, 16, 0.0, "m")
    batch = read_tiles(info, _job(64, 64, spec), spec)[0]
    assert batch.valid_fraction.tolist() == _gdal_fractions(path, 16)
    assert 0.0 in batch.valid_fraction and 1.0 in batch.valid_fraction
    assert not batch.pixels[batch.valid_fraction == 0].any()  # invalid pixels are 0


def test_alpha_rule_is_gdals_dataset_mask(tmp_path: Path) -> None:
    data = np.concatenate([landscape(64, 64, seed=2), np.zeros((1, 64, 64), np.uint8)])
    data[3, 10:50, 5:60] = 200
    path = write_geotiff(tmp_path / "rgba.tif", data, alpha=True)
    info = probe(str(path))
    assert info.mask_rule == "alpha"
    spec = TileSpec(16, 16, 0.0, "m")
    batch = read_tiles(info, _job(64, 64, spec), spec)[0]
    assert batch.valid_fraction.tolist() == _gdal_fractions(path, 16)


def test_unrepresentable_nodata_falls_back_to_gdal(tmp_path: Path) -> None:
    path = write_geotiff(tmp_path / "f.tif", np.ones((1, 32, 32), np.uint16), nodata=0.5)
    assert probe(str(path)).mask_rule == "gdal"


def test_fill_rule_uses_the_dtype_maximum(tmp_path: Path) -> None:
    data = np.full((3, 32, 32), 1000, np.uint16)
    data[:, :16] = 65535  # all bands at the maximum: fill
    data[0, 16:, :16] = 0  # one band 0, the others not: valid
    path = write_geotiff(tmp_path / "fill16.tif", data)
    info = probe(str(path))
    assert info.mask == "fill"
    spec = TileSpec(16, 16, 0.0, "m")
    batch = read_tiles(info, _job(32, 32, spec), spec)[0]
    assert batch.valid_fraction.tolist() == [0.0, 0.0, 1.0, 1.0]


def test_thumbnail_size_option_is_checked() -> None:
    from ris_ray.core.config import IngestConfig
    from ris_ray.core.errors import InputError

    assert IngestConfig(inputs=("a.tif",), db="d", thumbnail_size=0).thumbnail_size == 0
    assert IngestConfig(inputs=("a.tif",), db="d").thumbnail_size == 64
    with pytest.raises(InputError, match="--thumbnail-size 4: must be 0"):
        IngestConfig(inputs=("a.tif",), db="d", thumbnail_size=4)
