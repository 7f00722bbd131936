"""``ris query`` and ``ris diff``: the analyst's commands."""

from __future__ import annotations

import json
import sys
from pathlib import Path, PurePosixPath
from typing import Annotated, Any

import typer
from rich.table import Table

from ris_ray.cli.app import DbOpt, app, out, parse_window
from ris_ray.core.errors import InputError

__all__ = ["diff", "query"]


#: ``ris query``'s ``--db``: repeatable, unlike the other commands' :data:`DbOpt`.
DbsOpt = Annotated[
    list[str],
    typer.Option(
        "--db",
        help="Lance dataset path or URI; repeat to search several (same model and tile size).",
    ),
]


@app.command()
def query(
    db: DbsOpt,
    tile_id: Annotated[
        list[str] | None,
        typer.Option(help="Query with this stored tile; repeat to average several."),
    ] = None,
    lonlat: Annotated[
        str | None, typer.Option(help="Query with the tile containing this WGS84 point: LON,LAT.")
    ] = None,
    point: Annotated[
        str | None, typer.Option(help="Query with the tile containing X,Y (in --crs).")
    ] = None,
    crs: Annotated[
        str | None, typer.Option(help="CRS of --point, e.g. EPSG:32633 (EPSG code, WKT, PROJ).")
    ] = None,
    random: Annotated[
        bool, typer.Option("--random", help="Query with a random stored tile (default).")
    ] = False,
    seed: Annotated[int | None, typer.Option(help="Seed for --random.")] = None,
    image: Annotated[
        str | None, typer.Option(help="Query with an external image (GeoTIFF/PNG/JPEG).")
    ] = None,
    window: Annotated[
        str | None, typer.Option(help="Crop of --image: COL,ROW,WIDTH,HEIGHT.")
    ] = None,
    bbox: Annotated[
        str | None,
        typer.Option(help="Crop of a georeferenced --image: MINX,MINY,MAXX,MAXY in its CRS."),
    ] = None,
    negatives: Annotated[
        list[str] | None,
        typer.Option("--not", help="Push results away from this stored tile (repeatable)."),
    ] = None,
    alpha: Annotated[
        float, typer.Option(help="Weight of negatives: query = mean(pos) - ALPHA*mean(neg).")
    ] = 0.5,
    source: Annotated[
        list[str] | None,
        typer.Option(help="Only rank tiles of sources matching this glob (path or file name)."),
    ] = None,
    bbox_wgs84: Annotated[
        str | None, typer.Option(help="Only rank tiles whose centre is inside W,S,E,N (degrees).")
    ] = None,
    exclude_same_source: Annotated[
        bool, typer.Option(help="Leave out tiles of the files the query comes from.")
    ] = False,
    max_distance: Annotated[
        float | None, typer.Option(help="Drop results farther than this (may return fewer).")
    ] = None,
    exact: Annotated[
        bool, typer.Option("--exact", help="Scan every row even if an ANN index exists.")
    ] = False,
    k: Annotated[int, typer.Option("--k", "-k", help="Number of neighbours.")] = 10,
    metric: Annotated[str, typer.Option(help="l2 (Euclidean) | cosine (1 - cos).")] = "l2",
    include_self: Annotated[
        bool, typer.Option(help="Keep the query tile in its own results.")
    ] = False,
    weights: Annotated[
        str | None, typer.Option(help="Weights file, for datasets built with one.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print results as JSON.")] = False,
    geojson: Annotated[
        Path | None, typer.Option(help="Write results as WGS84 tile polygons (GeoJSON).")
    ] = None,
    csv: Annotated[Path | None, typer.Option("--csv", help="Write results as CSV.")] = None,
    plot: Annotated[
        Path | None, typer.Option(help="Save a PNG of the query and neighbours.")
    ] = None,
    overview: Annotated[
        bool, typer.Option(help="Add a map panel to --plot: query, neighbours, footprints.")
    ] = False,
) -> None:
    """Find the k tiles most similar to a query tile, place or image."""
    from ris_ray.raster.geo import parse_bbox, parse_lonlat, parse_xy
    from ris_ray.search.filters import SearchFilter
    from ris_ray.search.query import query as run_query

    positives = (tile_id, lonlat, point, image)
    if random and any(p is not None for p in positives):
        raise InputError("give only one of --random and --tile-id/--lonlat/--point/--image")
    if overview and plot is None:
        raise InputError("--overview draws into --plot; add --plot FILE.png")
    _check_outputs(plot=plot, geojson=geojson, csv=csv)
    filters = SearchFilter(
        sources=tuple(source or ()),
        bbox_wgs84=parse_bbox(bbox_wgs84, "--bbox-wgs84") if bbox_wgs84 else None,
    )
    result = run_query(
        db,
        tile_id=tile_id,
        image=image,
        window=parse_window(window),
        bbox=parse_bbox(bbox, "--bbox") if bbox is not None else None,
        lonlat=parse_lonlat(lonlat) if lonlat is not None else None,
        point=parse_xy(point, "--point") if point is not None else None,
        point_crs=crs,
        negatives=tuple(negatives or ()),
        alpha=alpha,
        seed=seed,
        k=k,
        metric=metric,
        include_self=include_self,
        filters=filters,
        exclude_same_source=exclude_same_source,
        max_distance=max_distance,
        exact=exact,
        weights_path=weights,
    )
    written = _write_query_files(db, result, geojson, csv, plot, overview)
    if as_json:
        sys.stdout.write(json.dumps(result.to_dict(), indent=2) + "\n")
        return
    out.print(_neighbour_table(result, datasets=len(db)))
    if len(result.neighbours) < result.k:
        out.print(f"{len(result.neighbours)} of {result.k} results: no more tiles qualify")
    for what, path in written:
        out.print(f"{what}: {path}")


def _short_names(uris: set[str]) -> dict[str, str]:
    """Each dataset URI by its last path part (``tiles.lance``), unless two share one."""
    names = {uri: PurePosixPath(uri.rstrip("/")).name or uri for uri in uris}
    return names if len(set(names.values())) == len(names) else {u: u for u in uris}


def _neighbour_table(result: Any, datasets: int) -> Table:
    """The neighbours as a table; with several datasets, a column naming each one's."""
    where = f"{datasets} datasets, " if datasets > 1 else ""
    names = _short_names({n.dataset for n in result.neighbours if n.dataset})
    table = Table(
        title=f"query: {result.query.label}  ({result.metric}, "
        f"{result.rows_scanned} tiles, {where}{result.search_ms:.1f} ms)"
    )
    columns = ["rank", "distance", "tile_id", "source", "row", "col", "lon", "lat"]
    for col in columns + (["dataset"] if datasets > 1 else []):
        table.add_column(
            col, justify="left" if col in ("tile_id", "source", "dataset") else "right"
        )
    for n in result.neighbours:
        table.add_row(
            str(n.rank),
            f"{n.distance:.4g}",
            n.tile_id,
            n.source,
            str(n.row),
            str(n.col),
            "" if n.lon is None else f"{n.lon:.6f}",
            "" if n.lat is None else f"{n.lat:.6f}",
            *([names.get(n.dataset, "")] if datasets > 1 else []),
        )
    return table


def _check_outputs(**paths: Path | None) -> None:
    """Refuse unusable output paths before any work (see :mod:`ris_ray.core.outputs`)."""
    from ris_ray.core.outputs import check_output

    for option, path in paths.items():
        if path is not None:
            check_output(path, f"--{option}", figure=option in ("plot", "heatmap"))


def _write_query_files(
    dbs: list[str],
    result: Any,
    geojson: Path | None,
    csv: Path | None,
    plot: Path | None,
    overview: bool,
) -> list[tuple[str, Path]]:
    from ris_ray.search.export import neighbours_csv, neighbours_geojson, write_text

    written = []
    if geojson is not None:
        written.append(("geojson", write_text(geojson, neighbours_geojson(result), "--geojson")))
    if csv is not None:
        written.append(("csv", write_text(csv, neighbours_csv(result), "--csv")))
    if plot is not None:
        from ris_ray.core.outputs import save_figure
        from ris_ray.search.plot import plot_neighbours

        footprints = _footprints(dbs, result) if overview else None
        written.append(
            ("plot", save_figure(plot_neighbours(result, footprints=footprints), plot, "--plot"))
        )
    return written


def _footprints(dbs: list[str], result: Any) -> dict[str, Any]:
    """WGS84 outlines of the sources of the query and its neighbours, from every dataset."""
    from ris_ray.raster.geo import source_footprints
    from ris_ray.store.dataset import open_dataset

    sources = {n.source for n in result.neighbours}
    sources |= {m.source for m in result.query.members if m.source}
    found: dict[str, Any] = {}
    for db in dbs:
        found |= source_footprints(open_dataset(db), sources)
    return found


@app.command()
def diff(
    db: DbOpt,
    before: Annotated[
        str, typer.Option(help="Earlier capture: source path as ingested, file name or glob.")
    ],
    after: Annotated[str, typer.Option(help="Later capture of the same area (same forms).")],
    metric: Annotated[str, typer.Option(help="l2 (Euclidean) | cosine (1 - cos).")] = "l2",
    top: Annotated[int, typer.Option(help="How many of the most changed tiles to report.")] = 10,
    heatmap: Annotated[
        Path | None, typer.Option(help="Save a PNG heat map of the change per location.")
    ] = None,
    geojson: Annotated[
        Path | None, typer.Option(help="Write the --top most changed tiles as GeoJSON.")
    ] = None,
    csv: Annotated[
        Path | None, typer.Option("--csv", help="Write every paired location as CSV.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Rank the locations that changed most between two captures of the same area."""
    from ris_ray.search.diff import diff as run_diff
    from ris_ray.search.export import changes_csv, changes_geojson, write_text

    if top < 1:
        raise InputError(f"--top {top}: must be >= 1")
    _check_outputs(heatmap=heatmap, geojson=geojson, csv=csv)
    result = run_diff(db, before, after, metric=metric)
    written = []
    if heatmap is not None:
        from ris_ray.core.outputs import save_figure
        from ris_ray.search.plot import plot_change

        written.append(("heatmap", save_figure(plot_change(result, top=top), heatmap, "--heatmap")))
    if geojson is not None:
        written.append(("geojson", write_text(geojson, changes_geojson(result, top), "--geojson")))
    if csv is not None:
        written.append(("csv", write_text(csv, changes_csv(result), "--csv")))
    if as_json:
        sys.stdout.write(json.dumps(result.to_dict(top), indent=2) + "\n")
        return
    table = Table(title=f"most changed: {result.before} -> {result.after} ({result.metric})")
    for col in ("rank", "distance", "row", "col", "lon", "lat", "before tile", "after tile"):
        table.add_column(col, justify="left" if "tile" in col else "right")
    for c in result.top(top):
        table.add_row(
            str(c.rank),
            f"{c.distance:.4g}",
            str(c.row),
            str(c.col),
            "" if c.lon is None else f"{c.lon:.6f}",
            "" if c.lat is None else f"{c.lat:.6f}",
            c.before_tile_id,
            c.after_tile_id,
        )
    out.print(table)
    out.print(
        f"{len(result.changes)} locations paired ({result.pairing}); unpaired: "
        f"{result.unmatched_before} before, {result.unmatched_after} after"
    )
    for what, path in written:
        out.print(f"{what}: {path}")
