"""Figures of a query and its neighbours. Functions return a Figure; they never show it."""

from __future__ import annotations

import io
import math
from collections.abc import Mapping
from pathlib import PurePath

import numpy as np
from matplotlib import patheffects
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Polygon
from PIL import Image

from ris_ray.raster.geo import Ring
from ris_ray.search.diff import DiffResult
from ris_ray.search.results import QueryResult

__all__ = ["change_grid", "plot_change", "plot_neighbours", "plot_overview", "short_label"]


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


def plot_neighbours(
    result: QueryResult,
    *,
    cell_inches: float = 2.0,
    footprints: Mapping[str, Ring] | None = None,
) -> Figure:
    """Query on the left (spanning the grid's height), neighbours in a grid on the right.

    Each neighbour is titled with its rank, distance and a short source label
    with the tile's pixel origin. The figure has ``1 + len(neighbours)`` axes,
    plus a last one, the overview (:func:`plot_overview`), when ``footprints``
    is given (``{}`` draws the overview without outlines).
    """
    n = len(result.neighbours)
    ncols = max(1, math.ceil(math.sqrt(n))) if n else 1
    nrows = max(1, math.ceil(n / ncols))
    extra = nrows if footprints is not None else 0
    fig = Figure(
        figsize=(cell_inches * (ncols + nrows + extra), cell_inches * nrows + 0.6),
        layout="constrained",
    )
    grid = fig.add_gridspec(nrows, nrows + ncols + extra)
    q = result.query
    ax = fig.add_subplot(grid[:, :nrows])
    ax.imshow(_image(q.thumbnail, q.pixels))
    if q.source:
        where = f"\n{short_label(q.source, 30)} r{q.row} c{q.col}"
    elif len(q.members) > 1:
        npos = sum(m.role == "positive" for m in q.members)
        where = f"\nmean of {npos}" + (
            f", {len(q.members) - npos} negative" if len(q.members) > npos else ""
        )
    else:
        where = ""
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
    if footprints is not None:
        plot_overview(fig.add_subplot(grid[:, nrows + ncols :]), result, footprints)
    fig.suptitle(
        f"{result.k} nearest ({result.metric}) among {result.rows_scanned} tiles · {result.model}",
        fontsize=9,
    )
    return fig


def plot_overview(ax: Axes, result: QueryResult, footprints: Mapping[str, Ring]) -> Axes:
    """Where the query and its neighbours lie: lon/lat of tile centres over the
    sources' footprint outlines (WGS84). Positives are red stars, negatives
    black crosses, neighbours dots numbered by rank. Tiles without
    georeferencing are left out (counted in the title)."""
    for source, ring in sorted(footprints.items()):
        ax.add_patch(Polygon(ring, closed=True, facecolor="0.92", edgecolor="0.45", linewidth=0.8))
        xs, ys = zip(*ring[:-1])
        ax.annotate(
            short_label(source, 16),
            (float(np.mean(xs)), float(np.max(ys))),
            fontsize=6,
            color="0.3",
            ha="center",
            va="bottom",
        )
    located = [
        (float(nb.lon), float(nb.lat), nb.rank)
        for nb in result.neighbours
        if nb.lon is not None and nb.lat is not None
    ]
    if located:
        ax.scatter(
            [p[0] for p in located],
            [p[1] for p in located],
            c=[p[2] for p in located],
            cmap="viridis_r",
            s=30,
            edgecolors="k",
            linewidths=0.4,
            zorder=3,
            label="neighbours",
        )
        for lon, lat, rank in located:
            ax.annotate(
                str(rank),
                (lon, lat),
                fontsize=6,
                xytext=(3, 3),
                textcoords="offset points",
                zorder=4,
            )
    for role, marker, colour in (("positive", "*", "red"), ("negative", "X", "black")):
        pts = [
            (float(m.lon), float(m.lat))
            for m in result.query.members
            if m.role == role and m.lon is not None and m.lat is not None
        ]
        if pts:
            ax.scatter(
                [p[0] for p in pts],
                [p[1] for p in pts],
                marker=marker,
                s=160,
                c=colour,
                edgecolors="white",
                zorder=5,
                label="query" if role == "positive" else "negative",
            )
    lats = [p[1] for ring in footprints.values() for p in ring] + [p[1] for p in located]
    if lats:
        ax.set_aspect(1.0 / max(math.cos(math.radians(float(np.mean(lats)))), 0.05))
        ax.autoscale_view()
    missing = len(result.neighbours) - len(located)
    ax.set_title(
        "where (WGS84)" + (f" · {missing} without location" if missing else ""), fontsize=9
    )
    ax.set_xlabel("lon", fontsize=8)
    ax.set_ylabel("lat", fontsize=8)
    ax.tick_params(labelsize=6)
    ax.locator_params(nbins=4)
    if located or result.query.members:
        ax.legend(fontsize=6, loc="best")
    return ax


def change_grid(result: DiffResult) -> tuple[np.ndarray, int]:
    """Distances on the before capture's tile grid: ``grid[row // stride,
    col // stride]`` (NaN where no pair), and the stride in pixels."""
    step = result.stride
    nr = max((c.row // step for c in result.changes), default=-1) + 1
    nc = max((c.col // step for c in result.changes), default=-1) + 1
    grid = np.full((nr, nc), np.nan)
    for c in result.changes:
        grid[c.row // step, c.col // step] = c.distance
    return grid, step


def plot_change(
    result: DiffResult, *, top: int = 10, pairs: int = 5, cell_inches: float = 2.0
) -> Figure:
    """Heat map of the fingerprint distance per location (before capture's pixel
    grid, first axes; the ``top`` most changed locations numbered), and the
    ``pairs`` most changed before/after thumbnails side by side on the right."""
    grid, step = change_grid(result)
    shown = result.changes[: max(pairs, 0)]
    rows = max(len(shown), 3)
    fig = Figure(figsize=(cell_inches * (rows + 2.4), cell_inches * rows), layout="constrained")
    spec = fig.add_gridspec(rows, rows + 2)
    ax = fig.add_subplot(spec[:, :rows])
    h, w = grid.shape
    im = ax.imshow(grid, cmap="magma", extent=(0, w * step, h * step, 0), interpolation="nearest")
    fig.colorbar(im, ax=ax, shrink=0.8, label=f"fingerprint distance ({result.metric})")
    for c in result.changes[:top]:
        ax.annotate(
            str(c.rank),
            (c.col + step / 2, c.row + step / 2),
            ha="center",
            va="center",
            fontsize=9,
            color="white",
            fontweight="bold",
            path_effects=[patheffects.withStroke(linewidth=2, foreground="black")],
        )
    ax.set_xlabel("column (px, before)", fontsize=8)
    ax.set_ylabel("row (px, before)", fontsize=8)
    ax.set_title(
        f"change: {short_label(result.before)} → {short_label(result.after)}\n"
        f"{len(result.changes)} locations ({result.pairing} pairing), "
        f"{result.unmatched_before}/{result.unmatched_after} unpaired",
        fontsize=9,
    )
    for i, c in enumerate(shown):
        for j, (thumb, name) in enumerate(
            ((c.before_thumbnail, "before"), (c.after_thumbnail, "after"))
        ):
            tax = fig.add_subplot(spec[i, rows + j])
            tax.imshow(_image(thumb, None))
            tax.set_title(f"#{c.rank} {name} d={c.distance:.3g}", fontsize=7)
            tax.set_axis_off()
    return fig
