"""Figures of a query and its neighbours. Functions return a Figure; they never show it."""

from __future__ import annotations

import io
import math
from pathlib import PurePath

import numpy as np
from matplotlib.figure import Figure
from PIL import Image

from ris_ray.query import QueryResult

__all__ = ["plot_neighbours", "short_label"]


def _image(thumbnail: bytes | None, pixels: np.ndarray | None) -> np.ndarray:
    if pixels is not None:
        return pixels
    if thumbnail:
        return np.asarray(Image.open(io.BytesIO(thumbnail)).convert("RGB"))
    return np.zeros((8, 8, 3), np.uint8)


def short_label(source: str, width: int = 22) -> str:
    """File stem, shortened in the middle to ``width`` characters."""
    stem = PurePath(source).stem
    if len(stem) <= width:
        return stem
    half = (width - 1) // 2
    return f"{stem[:half]}…{stem[-(width - 1 - half) :]}"


def plot_neighbours(result: QueryResult, *, cell_inches: float = 2.0) -> Figure:
    """Query on the left (spanning the grid's height), neighbours in a grid on the right.

    Each neighbour is titled with its rank, distance and a short source label
    with the tile's pixel origin. The figure has ``1 + len(neighbours)`` axes.
    """
    n = len(result.neighbours)
    ncols = max(1, math.ceil(math.sqrt(n))) if n else 1
    nrows = max(1, math.ceil(n / ncols))
    fig = Figure(
        figsize=(cell_inches * (ncols + nrows), cell_inches * nrows + 0.6), layout="constrained"
    )
    grid = fig.add_gridspec(nrows, nrows + ncols)
    q = result.query
    ax = fig.add_subplot(grid[:, :nrows])
    ax.imshow(_image(q.thumbnail, q.pixels))
    where = f"\n{short_label(q.source, 30)} r{q.row} c{q.col}" if q.source else ""
    ax.set_title(f"query{where}", fontsize=10)
    ax.set_axis_off()
    for i, nb in enumerate(result.neighbours):
        ax = fig.add_subplot(grid[i // ncols, nrows + i % ncols])
        ax.imshow(_image(nb.thumbnail, None))
        ax.set_title(
            f"#{nb.rank}  d={nb.distance:.3g}\n{short_label(nb.source)} r{nb.row} c{nb.col}",
            fontsize=7,
        )
        ax.set_axis_off()
    fig.suptitle(
        f"{result.k} nearest ({result.metric}) among {result.rows_scanned} tiles · {result.model}",
        fontsize=9,
    )
    return fig
