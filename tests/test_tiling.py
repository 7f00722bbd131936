"""Window/tile arithmetic and windowed reads (no Ray)."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import rasterio
import rasterio.warp
import rasterio.windows
from rasterio.enums import ColorInterp

from ris_ray.core.errors import RasterReadError, UnsupportedRasterError
from ris_ray.core.records import TileBatch, TileStats
from ris_ray.raster.bands import select_bands, to_rgb8
from ris_ray.raster.reading import probe, read_patch, read_tiles
from ris_ray.raster.tiling import (
    TileSpec,
    WindowJob,
    count_tiles,
    plan_windows,
    tile_id,
    tile_offsets,
)
from ris_ray.sample import landscape

SPEC = TileSpec(tile=256, stride=256, min_valid=0.5, model="m")


@pytest.mark.parametrize(
    ("length", "tile", "stride", "expected"),
    [
        (2048, 256, 256, 8),
        (2047, 256, 256, 7),
        (256, 256, 256, 1),
        (255, 256, 256, 0),
        (751, 256, 256, 2),
        (1000, 256, 128, 6),
        (512, 256, 100, 3),
        (0, 256, 256, 0),
    ],
)
def test_count_tiles_formula(length: int, tile: int, stride: int, expected: int) -> None:
    assert count_tiles(length, tile, stride) == expected
    offsets = tile_offsets(length, tile, stride)
    assert len(offsets) == expected
    assert all(o + tile <= length for o in offsets)


@pytest.mark.parametrize("shape", [(2048, 2048), (708, 751), (723, 934), (100, 5000), (5000, 300)])
@pytest.mark.parametrize("tile_stride", [(256, 256), (256, 128), (64, 80)])
@pytest.mark.parametrize("block", [(0, 0), (16, 99999), (512, 512), (256, 256), (128, 128)])
def test_plan_windows_covers_each_tile_once(
    shape: tuple[int, int], tile_stride: tuple[int, int], block: tuple[int, int]
) -> None:
    h, w = shape
    tile, stride = tile_stride
    if block[1] == 99999:
        block = (block[0], w)  # striped: blocks as wide as the image
    jobs = plan_windows(w, h, tile, stride, block_shape=block, target_px=700)
    seen = [
        (r, c)
        for j in jobs
        for r in range(j.first_row, j.first_row + j.n_rows)
        for c in range(j.first_col, j.first_col + j.n_cols)
    ]
    expected = set(
        itertools.product(range(count_tiles(h, tile, stride)), range(count_tiles(w, tile, stride)))
    )
    assert len(seen) == len(set(seen)) == len(expected)
    assert set(seen) == expected
    for j in jobs:
        win = j.window(tile, stride)
        assert win.col_off + win.width <= w and win.row_off + win.height <= h


def test_plan_windows_aligns_to_blocks() -> None:
    jobs = plan_windows(4096, 4096, 256, 256, block_shape=(512, 512), target_px=700)
    # 700 px -> 2 tiles, already a multiple of the 512 block: window starts on block edges.
    assert {j.window(256, 256).col_off % 512 for j in jobs} == {0}
    striped = plan_windows(3000, 3000, 256, 256, block_shape=(16, 3000), target_px=1024)
    assert all(j.n_cols == count_tiles(3000, 256, 256) for j in striped)


def test_tile_id_is_deterministic_and_distinct() -> None:
    a = tile_id("/x/a.tif", 0, 256, 256, 256, "resnet18/random-seed0")
    assert a == tile_id("/x/a.tif", 0, 256, 256, 256, "resnet18/random-seed0")
    assert len(a) == 20 and int(a, 16) >= 0
    assert a != tile_id("/x/a.tif", 256, 0, 256, 256, "resnet18/random-seed0")
    assert a != tile_id("/x/a.tif", 0, 256, 256, 128, "resnet18/random-seed0")
    assert a != tile_id("/x/a.tif", 0, 256, 256, 256, "resnet18/imagenet1k_v1")


def test_select_bands() -> None:
    rgb = [ColorInterp.red, ColorInterp.green, ColorInterp.blue]
    assert select_bands(3, rgb).indexes == (1, 2, 3)
    plan = select_bands(4, [*rgb, ColorInterp.alpha])
    assert plan.indexes == (1, 2, 3) and plan.alpha == 4
    assert select_bands(4, [*rgb, ColorInterp.undefined]).indexes == (1, 2, 3)  # NAIP RGBN
    assert select_bands(4, [*rgb, ColorInterp.undefined], (4, 3, 2)).indexes == (4, 3, 2)
    assert select_bands(1, [ColorInterp.gray]).indexes == (1,)
    assert select_bands(2, [ColorInterp.gray, ColorInterp.alpha]).indexes == (1,)
    assert select_bands(7, [ColorInterp.undefined] * 7).indexes == (1, 2, 3)
    with pytest.raises(UnsupportedRasterError, match="band 5"):
        select_bands(4, [*rgb, ColorInterp.undefined], (5, 1, 2))


def test_to_rgb8_stretch_mask_and_grey() -> None:
    data = np.array([[[100, 200], [300, 400]]], dtype=np.uint16)
    valid = np.array([[True, True], [True, False]])
    out = to_rgb8(data, valid, ((100.0, 300.0),))
    assert out.shape == (2, 2, 3) and out.dtype == np.uint8
    assert out[0, 0].tolist() == [0, 0, 0]
    assert out[0, 1].tolist() == [127, 127, 127]
    assert out[1, 0].tolist() == [255, 255, 255]
    assert out[1, 1].tolist() == [0, 0, 0]  # invalid
    nan = np.array([[[np.nan, 1.0]]], dtype=np.float32)
    assert to_rgb8(nan, np.ones((1, 2), bool), ((0.0, 1.0),))[0, :, 0].tolist() == [0, 255]


def _tiles(path: Path, **spec: object) -> tuple[TileBatch, TileStats]:
    info = probe(str(path))
    s = TileSpec(**{**SPEC.__dict__, **spec})  # type: ignore[arg-type]
    job = WindowJob(
        0, 0, count_tiles(info.height, s.tile, s.stride), count_tiles(info.width, s.tile, s.stride)
    )
    return read_tiles(info, job, s)


def test_rgba_alpha_is_the_mask(gen_dir: Path) -> None:
    batch, stats = _tiles(gen_dir / "rgba.tif")
    assert batch.col.tolist() == [256]  # the transparent left tile is skipped
    assert (stats.n_planned, stats.n_low_valid) == (2, 1)
    assert batch.valid_fraction.tolist() == [1.0]


def test_nodata_uint16_single_band(gen_dir: Path) -> None:
    info = probe(str(gen_dir / "pan16.tif"))
    assert info.mask == "dataset" and info.stretch is not None and info.bands.indexes == (1,)
    batch, _ = _tiles(gen_dir / "pan16.tif")
    assert batch.col.tolist() == [256, 512]
    px = batch.pixels
    assert px.dtype == np.uint8 and px.shape == (2, 3, 256, 256)  # band-first
    assert np.array_equal(px[:, 0], px[:, 1]) and np.array_equal(px[:, 0], px[:, 2])
    lo, hi = np.percentile(px, [1, 99])
    assert hi - lo > 100  # stretched to use the 8-bit range


def test_fill_without_nodata_is_skipped(gen_dir: Path) -> None:
    info = probe(str(gen_dir / "fill.tif"))
    assert info.mask == "fill"
    batch, stats = _tiles(gen_dir / "fill.tif")
    assert list(zip(batch.row.tolist(), batch.col.tolist())) == [(0, 256)]
    assert stats.n_low_valid == 3
    # The threshold decides: with min_valid=0 every tile is kept.
    assert len(_tiles(gen_dir / "fill.tif", min_valid=0.0)[0].row) == 4


def test_geo_columns_match_rasterio(gen_dir: Path) -> None:
    path = gen_dir / "rgb.tif"
    batch, _ = _tiles(path, stride=128)
    with rasterio.open(path) as src:
        for i, (r, c) in enumerate(zip(batch.row, batch.col)):
            b = rasterio.windows.bounds(rasterio.windows.Window(c, r, 256, 256), src.transform)
            got = (batch.minx[i], batch.miny[i], batch.maxx[i], batch.maxy[i])
            assert np.allclose(got, b)
            cx, cy = src.xy(r + 128, c + 128, offset="ul")
            lon, lat = rasterio.warp.transform(src.crs, "EPSG:4326", [cx], [cy])
            assert batch.lon[i] == pytest.approx(lon[0], abs=1e-9)
            assert batch.lat[i] == pytest.approx(lat[0], abs=1e-9)
    assert 14 < batch.lon[0] < 16  # UTM 33N central meridian is 15 E


def test_no_crs_gives_nan_geo(gen_dir: Path) -> None:
    info = probe(str(gen_dir / "nogeo.tif"))
    assert info.crs is None and info.transform is None
    batch, _ = _tiles(gen_dir / "nogeo.tif")
    assert len(batch.row) == 1
    for col in ("minx", "miny", "maxx", "maxy", "lon", "lat"):
        assert np.isnan(getattr(batch, col)).all()


def test_unsupported_dtype_and_unreadable(tmp_path: Path) -> None:
    path = tmp_path / "complex.tif"
    with rasterio.open(
        path, "w", driver="GTiff", width=32, height=32, count=1, dtype="complex64"
    ) as dst:
        dst.write(np.zeros((1, 32, 32), np.complex64))
    with pytest.raises(UnsupportedRasterError, match="complex64"):
        probe(str(path))
    bad = tmp_path / "text.tif"
    bad.write_text("not a tiff")
    with pytest.raises(RasterReadError, match="text.tif"):
        probe(str(bad))


def test_read_patch_matches_a_tile(gen_dir: Path) -> None:
    batch, _ = _tiles(gen_dir / "rgb.tif")
    patch = read_patch(str(gen_dir / "rgb.tif"), (256, 0, 256, 256), 256)
    assert np.array_equal(patch, batch.pixels[1].transpose(1, 2, 0))
    with pytest.raises(RasterReadError, match="not inside"):
        read_patch(str(gen_dir / "rgb.tif"), (500, 0, 256, 256), 256)


@pytest.mark.shared
def test_shared_files_probe(shared_data: Path) -> None:
    naip = probe(str(shared_data / "opengeos__m_4709963_se_14_1_20200831.tif"))
    assert naip.bands.indexes == (1, 2, 3) and naip.mask == "dataset"
    assert naip.mask_rule == "nodata" and naip.nodata == (0.0, 0.0, 0.0, 0.0)
    pix4d = probe(str(shared_data / "riotiler__pix4d_alpha_nodata.tif"))
    assert pix4d.bands.alpha == 4 and pix4d.bands.indexes == (1, 2, 3)
    assert pix4d.mask_rule == "alpha"
    masked = probe(str(shared_data / "riotiler__cog_rgb_mask.tif"))
    assert masked.mask == "dataset" and masked.mask_rule == "gdal"  # internal mask: GDAL's
    pan = probe(str(shared_data / "solaris__sample_geotiff.tif"))
    assert pan.dtype == "uint16" and pan.stretch is not None and pan.bands.indexes == (1,)
    neon = probe(str(shared_data / "deepforest__2019_YELL_2_541000_4977000_image_crop.tiff"))
    assert neon.crs is None and neon.transform is None
    tcd = probe(str(shared_data / "tcd__5c15321f63d9810007f8b06f_10_00000.tif"))
    assert tcd.mask == "fill"  # no nodata declared: black fill is detected by value


def test_landscape_is_seeded() -> None:
    assert np.array_equal(landscape(64, 64, 3), landscape(64, 64, 3))
    assert not np.array_equal(landscape(64, 64, 3), landscape(64, 64, 4))
