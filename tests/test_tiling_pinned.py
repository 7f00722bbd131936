"""The tiles cut from the real GeoTIFFs in ../shared/data are pinned.

The digests below were computed with the tiling code before the vectorised
rewrite (issue 11, commit 702bde1): per file and tiling, the number of kept
tiles, a SHA-1 of their ids, of their valid fractions (rounded to 6 digits)
and of their pixels laid out as ``(N, T, T, 3)`` uint8. Any change in which
tiles are kept, their valid fractions or their pixels fails here.

A tile id hashes the file's full path, which differs from one checkout to
the next, so the pinned id digest is over ids made from the bare file name
at each kept tile's origin; each batch's own ids are checked against
:func:`~ris_ray.raster.tiling.tile_id` of the real path at those origins.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from ris_ray.raster.reading import probe, read_tiles
from ris_ray.raster.tiling import TileSpec, plan_windows, tile_id

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason="../shared/data is absent")

#: (tile, stride, window_px, min_valid)
TILINGS = {
    "default": (256, 256, 2048, 0.5),
    "overlap": (256, 192, 1024, 0.3),
}


def hwc(pixels: np.ndarray) -> np.ndarray:
    """Tiles as ``(N, T, T, 3)`` whatever layout the batch uses (band-first has 3 at axis 1)."""
    if pixels.ndim == 4 and pixels.shape[1] == 3 and pixels.shape[-1] != 3:
        return np.ascontiguousarray(pixels.transpose(0, 2, 3, 1))
    return np.ascontiguousarray(pixels)


def digest(path: Path, tile: int, stride: int, window_px: int, min_valid: float) -> tuple:
    info = probe(str(path))
    spec = TileSpec(tile, stride, min_valid, "pin")
    ids: list[str] = []
    fracs: list[float] = []
    pix = hashlib.sha1()
    n_low = 0
    for job in plan_windows(
        info.width, info.height, tile, stride, block_shape=info.block_shape, target_px=window_px
    ):
        batch, stats = read_tiles(info, job, spec)
        origins = list(zip(batch.row.tolist(), batch.col.tolist(), strict=True))
        assert list(batch.tile_id) == [
            tile_id(info.path, r, c, tile, stride, "pin") for r, c in origins
        ]
        ids += [tile_id(path.name, r, c, tile, stride, "pin") for r, c in origins]
        fracs += [round(float(f), 6) for f in batch.valid_fraction]
        pix.update(hwc(np.asarray(batch.pixels)).tobytes())
        n_low += stats.n_low_valid
    return (
        len(ids),
        n_low,
        hashlib.sha1("\n".join(ids).encode()).hexdigest()[:16],
        hashlib.sha1(repr(fracs).encode()).hexdigest()[:16],
        pix.hexdigest()[:16],
    )


EXPECTED: dict[tuple[str, str], tuple] = {
    ("default", "deepforest__2019_YELL_2_541000_4977000_image_crop.tiff"): (
        16,
        0,
        "1807aa84d6d2d5fd",
        "13dbe7c75b8e2963",
        "63000eb26079be95",
    ),
    ("default", "deepforest__5b90f92da0d7280005fab355_4310.tif"): (
        52,
        12,
        "1a5082d3b27888d5",
        "f6ba617a758cfe00",
        "1386a2e15d83401e",
    ),
    ("default", "deepforest__australia.tif"): (
        4,
        0,
        "48b7eed03ef7e883",
        "01a295908de37bfe",
        "df69ef52a46a7ebb",
    ),
    ("default", "opengeos__m_4709963_se_14_1_20200831.tif"): (
        6,
        0,
        "87ca791b674f8a0a",
        "e523ab90e77e3596",
        "ecb90f06675003ed",
    ),
    ("default", "riocogeo__image_webp.tif"): (
        4,
        0,
        "005b82d55832974f",
        "01a295908de37bfe",
        "74c76885408d8c12",
    ),
    ("default", "riotiler__cog_rgb_mask.tif"): (
        0,
        0,
        "da39a3ee5e6b4b0d",
        "97d170e1550eee4a",
        "da39a3ee5e6b4b0d",
    ),
    ("default", "riotiler__pix4d_alpha_nodata.tif"): (
        4,
        0,
        "bd1bc469912b65d1",
        "e948c9c6c6420f90",
        "505a4845581bee78",
    ),
    ("default", "solaris__sample_geotiff.tif"): (
        9,
        0,
        "dc91a9d98f61c348",
        "0eade983a78122e2",
        "7c2c1361f8d1a9a3",
    ),
    ("default", "tcd__5c15321f63d9810007f8b06f_10_00000.tif"): (
        49,
        15,
        "609ed3103fd04fc8",
        "1dd72e1769dc5bbf",
        "dc21786ab43e2998",
    ),
    ("overlap", "deepforest__2019_YELL_2_541000_4977000_image_crop.tiff"): (
        30,
        0,
        "791c936b4dfdee81",
        "8b5e004f1f71ce17",
        "78248e3e692420b7",
    ),
    ("overlap", "deepforest__5b90f92da0d7280005fab355_4310.tif"): (
        84,
        16,
        "635454ff93bbc627",
        "a054b293f6ce5170",
        "9c90802446ebaaca",
    ),
    ("overlap", "deepforest__australia.tif"): (
        9,
        0,
        "aa4ca83690313f5b",
        "0eade983a78122e2",
        "34e130c1b4be74ea",
    ),
    ("overlap", "opengeos__m_4709963_se_14_1_20200831.tif"): (
        12,
        0,
        "6c453f2064338939",
        "133b5a6c7cede4a6",
        "db3b12694266df16",
    ),
    ("overlap", "riocogeo__image_webp.tif"): (
        4,
        0,
        "12b88c5c8fa0b467",
        "01a295908de37bfe",
        "c39df3eefdc06aa1",
    ),
    ("overlap", "riotiler__cog_rgb_mask.tif"): (
        0,
        0,
        "da39a3ee5e6b4b0d",
        "97d170e1550eee4a",
        "da39a3ee5e6b4b0d",
    ),
    ("overlap", "riotiler__pix4d_alpha_nodata.tif"): (
        9,
        0,
        "a65dad2cb18eb27d",
        "2ca9a0b0c542416c",
        "2fc619802c25d09a",
    ),
    ("overlap", "solaris__sample_geotiff.tif"): (
        16,
        0,
        "d3d6c78ac837cb1d",
        "fae94c653a5a7c53",
        "dd8c1e6e11921daf",
    ),
    ("overlap", "tcd__5c15321f63d9810007f8b06f_10_00000.tif"): (
        82,
        18,
        "a722d1917938fafe",
        "4c923fe52fa8a1e8",
        "85858d927989f69a",
    ),
}


@pytest.mark.parametrize("tiling", sorted(TILINGS))
def test_tiles_match_the_pinned_digests(tiling: str) -> None:
    files = sorted(p for p in DATA.iterdir() if p.suffix in (".tif", ".tiff"))
    got = {(tiling, p.name): digest(p, *TILINGS[tiling]) for p in files}
    want = {k: v for k, v in EXPECTED.items() if k[0] == tiling}
    assert got == want
