"""Generated sample imagery for ``ris demo`` and the tests.

Seeded, georeferenced GeoTIFFs with aerial-looking content (fields with row
texture, roads, tree crowns, water), so the demo runs on a fresh machine with
no downloads. They exercise the layouts real captures have: RGB tiled
(JPEG-free, DEFLATE), RGBA with a transparent irregular footprint, and uint16
single-band with nodata.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import from_origin

from ris_ray.core.config import FINGERPRINT_DIM

__all__ = [
    "landscape",
    "make_samples",
    "synthetic_fingerprints",
    "write_fingerprint_dataset",
    "write_geotiff",
]


def landscape(height: int, width: int, seed: int) -> np.ndarray:
    """A ``(3, H, W)`` uint8 aerial-style scene, deterministic for ``seed``."""
    rng = np.random.default_rng(seed)
    img = np.empty((3, height, width), np.float32)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    palette = np.array(
        [[92, 120, 60], [150, 140, 90], [70, 95, 50], [180, 160, 120], [110, 130, 70]], np.float32
    )
    # Fields: a grid of parcels, each with a colour and a row texture.
    cell = int(rng.integers(96, 200))
    for r0 in range(0, height, cell):
        for c0 in range(0, width, cell):
            colour = palette[rng.integers(len(palette))]
            angle = rng.uniform(0, np.pi)
            period = rng.uniform(4, 14)
            rows = 12 * np.sin(
                (
                    xx[r0 : r0 + cell, c0 : c0 + cell] * np.cos(angle)
                    + yy[r0 : r0 + cell, c0 : c0 + cell] * np.sin(angle)
                )
                / period
            )
            img[:, r0 : r0 + cell, c0 : c0 + cell] = colour[:, None, None] + rows
    # Tree crowns.
    for _ in range(int(height * width / 4000)):
        cy, cx, rad = rng.integers(height), rng.integers(width), rng.integers(4, 12)
        y0, y1, x0, x1 = (
            max(cy - rad, 0),
            min(cy + rad, height),
            max(cx - rad, 0),
            min(cx + rad, width),
        )
        disk = (yy[y0:y1, x0:x1] - cy) ** 2 + (xx[y0:y1, x0:x1] - cx) ** 2 <= rad * rad
        for b, v in enumerate((40, 70, 35)):
            img[b, y0:y1, x0:x1][disk] = v
    # A road and a pond.
    r = int(rng.integers(height // 4, 3 * height // 4))
    img[:, r : r + 10, :] = np.array([120, 120, 118], np.float32)[:, None, None]
    pond = (yy - rng.integers(height)) ** 2 + (xx - rng.integers(width)) ** 2 < (height / 8) ** 2
    for b, v in enumerate((40, 70, 90)):
        img[b][pond] = v
    img += rng.normal(0, 6, img.shape).astype(np.float32)
    return np.clip(img, 1, 254).astype(np.uint8)


def write_geotiff(
    path: Path | str,
    data: np.ndarray,
    *,
    crs: str | None = "EPSG:32633",
    origin: tuple[float, float] = (500000.0, 5000000.0),
    res: float = 0.1,
    nodata: float | None = None,
    alpha: bool = False,
    tiled: bool = True,
    compress: str = "deflate",
) -> Path:
    """Write ``(bands, H, W)`` as a GeoTIFF (``crs=None``: no georeferencing).

    With ``alpha=True`` the last band is tagged as alpha.
    """
    path = Path(path)
    count, height, width = data.shape
    profile: dict[str, object] = {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "count": count,
        "dtype": data.dtype.name,
        "compress": compress,
    }
    if tiled and height >= 16 and width >= 16:
        profile.update(
            tiled=True,
            blockxsize=min(512, width // 16 * 16),
            blockysize=min(512, height // 16 * 16),
        )
    if crs is not None:
        profile.update(crs=crs, transform=from_origin(origin[0], origin[1], res, res))
    if nodata is not None:
        profile["nodata"] = nodata
    if alpha:
        profile["photometric"] = "RGB"
        profile["alpha"] = "YES"
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path


def make_samples(out_dir: Path | str, *, size: int = 1024, seed: int = 0) -> list[Path]:
    """Write three sample captures into ``out_dir`` and return their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rgb = landscape(size, size, seed)
    a = write_geotiff(out / "sample_rgb.tif", rgb, origin=(500000.0, 5000000.0))
    # RGBA with an irregular (circular) flight footprint.
    scene = landscape(size, size, seed + 1)
    yy, xx = np.mgrid[0:size, 0:size]
    footprint = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (0.48 * size) ** 2
    alpha = np.where(footprint, 255, 0).astype(np.uint8)
    scene[:, ~footprint] = 0
    b = write_geotiff(
        out / "sample_rgba.tif",
        np.concatenate([scene, alpha[None]]),
        origin=(500000.0 + size * 0.1, 5000000.0),
        alpha=True,
    )
    # Panchromatic uint16 with nodata=0 in the top strip.
    pan = (landscape(size, size, seed + 2).astype(np.uint16).mean(axis=0) * 40).astype(np.uint16)
    pan[: size // 8] = 0
    c = write_geotiff(
        out / "sample_pan_uint16.tif",
        pan[None],
        origin=(500000.0, 5000000.0 - size * 0.1),
        nodata=0,
    )
    return [a, b, c]


def synthetic_fingerprints(n: int, seed: int = 0, clusters: int = 256) -> np.ndarray:
    """``(n, 512)`` float32 vectors shaped like ResNet features: non-negative,
    clustered (so an index has structure to find), deterministic for ``seed``."""
    rng = np.random.default_rng(seed)
    centres = rng.gamma(2.0, 0.5, size=(clusters, FINGERPRINT_DIM)).astype(np.float32)
    out = np.empty((n, FINGERPRINT_DIM), np.float32)
    for start in range(0, n, 1 << 16):
        m = min(1 << 16, n - start)
        which = rng.integers(clusters, size=m)
        noise = rng.normal(0.0, 0.35, size=(m, FINGERPRINT_DIM)).astype(np.float32)
        out[start : start + m] = np.maximum(centres[which] + noise, 0.0)
    return out


def write_fingerprint_dataset(
    uri: str, vectors: np.ndarray, *, model: str = "synthetic", fingerprint: str = "float16"
) -> None:
    """A ris_ray dataset holding ``vectors`` as ``fingerprint`` (float16 or
    float32) fingerprints of made-up tiles (no thumbnails, no geo), for index
    tests and query benchmarks."""
    from ris_ray.core.records import TileBatch
    from ris_ray.store.schema import DatasetParams, to_table
    from ris_ray.store.writer import TileWriter

    params = DatasetParams(256, 256, model)
    writer = TileWriter(uri, params, fingerprint=fingerprint)
    try:
        for start in range(0, len(vectors), 1 << 16):
            chunk = vectors[start : start + (1 << 16)]
            n = len(chunk)
            rows = np.arange(start, start + n, dtype=np.int32)
            batch = TileBatch(
                tile_id=np.array([f"{i:020x}" for i in rows], dtype=object),
                source=np.array([f"synthetic/{i // 1024:06d}.tif" for i in rows], dtype=object),
                row=(rows // 1024) * 256,
                col=(rows % 1024) * 256,
                width=np.full(n, 256, np.int32),
                height=np.full(n, 256, np.int32),
                valid_fraction=np.ones(n, np.float32),
                thumbnail=np.array([b""] * n, dtype=object),
                fingerprint=chunk,
                minx=np.full(n, np.nan),
                miny=np.full(n, np.nan),
                maxx=np.full(n, np.nan),
                maxy=np.full(n, np.nan),
                lon=np.full(n, np.nan),
                lat=np.full(n, np.nan),
            )
            writer.add("synthetic", to_table(batch, params, writer.fingerprint))
        writer.finish("synthetic")
        writer.commit()
    finally:
        writer.close()
