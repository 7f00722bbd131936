"""What the benchmark stages share: the repository on sys.path, rows, timing and tables."""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))


__all__ = ["MARKDOWN", "REPO", "Row", "fmt", "median_ms", "synthetic_ortho", "table"]

Row = dict[str, Any]


def median_ms(fn: Callable[[], Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000.0)
    return statistics.median(times)


MARKDOWN: list[str] = []


def table(title: str, rows: list[Row]) -> None:
    """Print a plain-text table and keep a Markdown copy for ``results.md``."""
    print(f"\n## {title}")
    if not rows:
        return
    cols = list(dict.fromkeys(c for r in rows for c in r))
    MARKDOWN.extend([f"\n**{title}**\n", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)])
    MARKDOWN.extend("| " + " | ".join(fmt(r.get(c)) for c in cols) + " |" for r in rows)
    width = {c: max(len(c), *(len(fmt(r.get(c))) for r in rows)) for c in cols}
    print("  ".join(c.ljust(width[c]) for c in cols))
    for r in rows:
        print("  ".join(fmt(r.get(c)).ljust(width[c]) for c in cols))


def fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"
    return "" if v is None else str(v)


def synthetic_ortho(path: Path, size: int = 8192) -> Path:
    """A ``size`` x ``size`` RGB GeoTIFF like a drone ortho (512 px tiles,
    JPEG in YCbCr): 2048 px windows of 64 tiles each, unlike the small shared
    files (~16 tiles per window)."""
    import rasterio
    from rasterio.transform import from_origin

    from ris_ray.sample import landscape

    path.parent.mkdir(parents=True, exist_ok=True)
    profile = {
        "driver": "GTiff",
        "width": size,
        "height": size,
        "count": 3,
        "dtype": "uint8",
        "crs": "EPSG:32633",
        "transform": from_origin(500000.0, 5000000.0, 0.1, 0.1),
        "tiled": True,
        "blockxsize": 512,
        "blockysize": 512,
        "compress": "JPEG",
        "photometric": "YCBCR",
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(landscape(size, size, seed=3))
    return path
