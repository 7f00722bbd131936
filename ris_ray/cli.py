"""The ``ris`` command line: a thin layer over the library.

One error boundary (:func:`main`): our exceptions and usage errors print one
line ``error: ...`` on stderr and exit 1, never a traceback. ``ris ingest``
exits 2 when some input files failed (the rest was ingested and committed).
Logging is configured here and nowhere else.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Any, cast

import typer
from rich.console import Console
from rich.table import Table

from ris_ray.errors import InputError, RisError
from ris_ray.uris import is_remote

try:  # typer >= 0.22 vendors its own click
    from typer._click.exceptions import UsageError
except ImportError:  # pragma: no cover - older typer on real click
    from click.exceptions import UsageError  # type: ignore[assignment]

__all__ = ["app", "main"]

app = typer.Typer(
    name="ris",
    help="Rapid image search over GeoTIFF tiles: ingest with Ray, query with Lance.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

EXIT_PARTIAL = 2

DbOpt = Annotated[str, typer.Option("--db", help="Lance dataset path or URI.")]
LockWaitOpt = Annotated[
    float,
    typer.Option(help="Seconds to wait for another writer of the same --db (0: refuse)."),
]


def _parse_window(text: str | None) -> tuple[int, int, int, int] | None:
    if text is None:
        return None
    try:
        col, row, w, h = (int(v) for v in text.split(","))
    except ValueError:
        raise InputError(f"--window {text!r}: expected COL,ROW,WIDTH,HEIGHT in pixels") from None
    if col < 0 or row < 0 or w < 1 or h < 1:
        raise InputError(f"--window {text!r}: COL,ROW must be >= 0 and WIDTH,HEIGHT >= 1")
    return col, row, w, h


@app.callback()
def _root(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress details.")] = False,
) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )


@app.command()
def ingest(
    inputs: Annotated[list[str], typer.Argument(help="GeoTIFF files or directories (recursive).")],
    db: DbOpt,
    tile_size: Annotated[int, typer.Option(help="Tile edge in pixels.")] = 256,
    stride: Annotated[
        int | None, typer.Option(help="Step between tiles (default: tile size).")
    ] = None,
    min_valid: Annotated[
        float, typer.Option(help="Skip tiles whose valid fraction is below this.")
    ] = 0.5,
    bands: Annotated[
        str | None, typer.Option(help="1-based bands to use as RGB, e.g. 3,2,1.")
    ] = None,
    weights: Annotated[
        str, typer.Option(help="imagenet | random[:SEED] | PATH to a state dict.")
    ] = "imagenet",
    batch_size: Annotated[
        int,
        typer.Option(
            help="Tiles per forward pass on a GPU. An embedder call carries several "
            "(windows waiting for the embedder go together: up to 256 tiles, or "
            "this when larger).",
        ),
    ] = 64,
    window_px: Annotated[int, typer.Option(help="Target edge of each read window.")] = 2048,
    address: Annotated[
        str | None, typer.Option(help="Ray cluster address (default: RAY_ADDRESS or embedded).")
    ] = None,
    embedders: Annotated[
        int | None, typer.Option(help="Embedder actors (default: one per GPU, else 1).")
    ] = None,
    device: Annotated[
        str, typer.Option(help="auto | cpu | cuda (cuda on a cluster: waits for GPUs, --gpu-wait).")
    ] = "auto",
    gpu_wait: Annotated[
        float, typer.Option(help="--device cuda on a cluster: seconds to wait for GPUs to join.")
    ] = 900.0,
    precision: Annotated[
        str, typer.Option(help="auto | fp32 | fp16 | bf16 (auto: fp16 on GPU).")
    ] = "auto",
    report: Annotated[
        Path | None,
        typer.Option(help="Run report JSON (default: DB.report.json beside a local dataset)."),
    ] = None,
    strict: Annotated[
        bool, typer.Option(help="Commit nothing and exit 2 if any file fails.")
    ] = False,
    rebuild: Annotated[
        bool,
        typer.Option(
            help="Re-read every input and replace the dataset in one commit "
            "(needed to change tile size, stride or weights)."
        ),
    ] = False,
    prune: Annotated[
        bool, typer.Option(help="Delete tiles of files under INPUT that no longer exist.")
    ] = False,
    commit_every: Annotated[
        float, typer.Option(help="Seconds between commits of finished files (0: each file).")
    ] = 120.0,
    thumbnail_size: Annotated[
        int, typer.Option(help="Edge of the stored JPEG thumbnails (0: store none).")
    ] = 64,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="No progress bar or summary.")
    ] = False,
    lock_wait: LockWaitOpt = 0.0,
) -> None:
    """Tile, embed and store GeoTIFFs in a Lance dataset."""
    from ris_ray.config import Device, IngestConfig, Precision, parse_bands
    from ris_ray.pipeline import ingest as run_ingest

    cfg = IngestConfig(
        inputs=tuple(inputs),
        db=db,
        tile_size=tile_size,
        stride=stride,
        min_valid=min_valid,
        bands=parse_bands(bands),
        weights=weights,
        batch_size=batch_size,
        window_px=window_px,
        thumbnail_size=thumbnail_size,
        address=address,
        num_embedders=embedders,
        device=cast(Device, device),
        precision=cast(Precision, precision),
        progress=not quiet,
        rebuild=rebuild,
        prune=prune,
        commit_every_s=commit_every,
        gpu_wait_s=gpu_wait,
        strict=strict,
        lock_wait_s=lock_wait,
    )
    report = _report_path(db, report)
    result = run_ingest(cfg, on_event=None if quiet else (lambda m: err.print(m)))
    if report is not None:
        try:
            report.write_text(json.dumps(result.to_dict(), indent=2))
        except OSError as exc:
            raise InputError(
                f"--report {report}: cannot write ({exc.strerror or exc}); the data is committed"
            ) from None
    if not quiet:
        _print_ingest(result)
        if report is not None:
            out.print(f"report: {report}")
    if not result.committed:
        err.print(
            f"error: --strict: {len(result.files_failed)} file(s) failed; nothing was committed",
            markup=False,
        )
    if result.files_failed:
        raise typer.Exit(EXIT_PARTIAL)


def _report_path(db: str, report: Path | None) -> Path | None:
    """The report file (``DB.report.json`` beside a local dataset by default), with
    ``--db`` and it checked writable before any work (see :mod:`ris_ray.preflight`)."""
    from ris_ray.preflight import check_db, check_report

    if report is None and not is_remote(db):
        report = Path(f"{db.rstrip('/')}.report.json")
    check_db(db)  # pipeline.ingest checks it too; first here so --db is named first
    if report is not None:
        check_report(report)
    return report


def _print_ingest(r: Any) -> None:
    read = r.files_read
    if read:
        table = Table(title="files read", show_lines=False)
        for col in ("status", "tiles", "low valid", "file / reason"):
            table.add_column(col)
        for f in read:
            text = f.path if not f.reason else f"{f.path}\n  {f.reason}"
            table.add_row(f.status, str(f.tiles_written), str(f.tiles_low_valid), text)
        out.print(table)
    counts = {s: sum(1 for f in r.files if f.status == s) for s in ("ok", "skipped", "failed")}
    unchanged = len(r.files) - len(read)
    lines = [
        f"files: {len(read)} new or changed, read ({counts['ok']} ok, {counts['skipped']} "
        f"skipped, {counts['failed']} failed); {unchanged} unchanged",
        f"tiles: {r.tiles_written} written, {r.tiles_low_valid} skipped below --min-valid"
        f" | {r.wall_s:.1f} s, {r.tiles_per_s:.1f} tiles/s"
        + (f" ({r.steady_tiles_per_s:.1f} once running)" if r.steady_tiles_per_s else ""),
    ]
    if r.pruned_files:
        lines.append(f"pruned {r.pruned_files} files that no longer exist ({r.pruned_tiles} tiles)")
    elif r.missing:
        lines.append(f"{len(r.missing)} files no longer exist (--prune drops their tiles)")
    if read:
        lines.append(f"weights: {r.weights} | model: {r.model} | device: {r.device}")
    lines.append(f"dataset: {r.db} (version {r.version}, {r.commits} commits this run)")
    out.print("\n".join(lines))


@app.command()
def query(
    db: DbOpt,
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
    from ris_ray.filters import SearchFilter
    from ris_ray.geo import parse_bbox, parse_lonlat, parse_xy
    from ris_ray.query import query as run_query

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
        window=_parse_window(window),
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
    table = Table(
        title=f"query: {result.query.label}  ({result.metric}, "
        f"{result.rows_scanned} tiles, {result.search_ms:.1f} ms)"
    )
    for col in ("rank", "distance", "tile_id", "source", "row", "col", "lon", "lat"):
        table.add_column(col, justify="right" if col not in ("tile_id", "source") else "left")
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
        )
    out.print(table)
    if len(result.neighbours) < result.k:
        out.print(f"{len(result.neighbours)} of {result.k} results: no more tiles qualify")
    for what, path in written:
        out.print(f"{what}: {path}")


def _check_outputs(**paths: Path | None) -> None:
    """Refuse unusable output paths before any work (see :mod:`ris_ray.outputs`)."""
    from ris_ray.outputs import check_output

    for option, path in paths.items():
        if path is not None:
            check_output(path, f"--{option}", figure=option in ("plot", "heatmap"))


def _write_query_files(
    db: str,
    result: Any,
    geojson: Path | None,
    csv: Path | None,
    plot: Path | None,
    overview: bool,
) -> list[tuple[str, Path]]:
    from ris_ray.export import neighbours_csv, neighbours_geojson, write_text

    written = []
    if geojson is not None:
        written.append(("geojson", write_text(geojson, neighbours_geojson(result), "--geojson")))
    if csv is not None:
        written.append(("csv", write_text(csv, neighbours_csv(result), "--csv")))
    if plot is not None:
        from ris_ray.outputs import save_figure
        from ris_ray.plot import plot_neighbours

        footprints = None
        if overview:
            from ris_ray.geo import source_footprints
            from ris_ray.store import open_dataset

            sources = {n.source for n in result.neighbours}
            sources |= {m.source for m in result.query.members if m.source}
            footprints = source_footprints(open_dataset(db), sources)
        written.append(
            ("plot", save_figure(plot_neighbours(result, footprints=footprints), plot, "--plot"))
        )
    return written


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
    from ris_ray.diff import diff as run_diff
    from ris_ray.export import changes_csv, changes_geojson, write_text

    if top < 1:
        raise InputError(f"--top {top}: must be >= 1")
    _check_outputs(heatmap=heatmap, geojson=geojson, csv=csv)
    result = run_diff(db, before, after, metric=metric)
    written = []
    if heatmap is not None:
        from ris_ray.outputs import save_figure
        from ris_ray.plot import plot_change

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


@app.command()
def info(
    db: DbOpt,
    versions: Annotated[
        bool, typer.Option("--versions", help="Also list the dataset's version history.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """Describe a dataset: rows, sources, model, fingerprint type, version, size."""
    from ris_ray.store import dataset_info, version_history

    data = dataset_info(db)
    if versions:
        history = version_history(db)
        if not as_json:
            table = Table(title="versions")
            for col in ("version", "time (UTC)", "rows", "change", "operation"):
                table.add_column(col)
            for v in history:
                table.add_row(
                    str(v["version"]),
                    v["timestamp"],
                    str(v["rows"]),
                    f"{v['change']:+d}",
                    v["operation"],
                )
            out.print(table)
        data["history"] = history
    if as_json:
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
        return
    for key, value in data.items():
        if key != "history":
            out.print(f"{key:>18}: {value}")


@app.command()
def index(
    db: DbOpt,
    metric: Annotated[str, typer.Option(help="l2 | cosine: the metric queries will use.")] = "l2",
    partitions: Annotated[
        int | None, typer.Option(help="IVF partitions (default: sqrt(rows)).")
    ] = None,
    sub_vectors: Annotated[int, typer.Option(help="PQ sub-vectors (must divide 512).")] = 64,
    lock_wait: LockWaitOpt = 0.0,
) -> None:
    """Build an IVF_PQ index so queries on millions of tiles need not scan them all."""
    from ris_ray.config import check_seconds
    from ris_ray.index import build_index

    check_seconds("--lock-wait", lock_wait)
    info = build_index(
        db, metric=metric, partitions=partitions, sub_vectors=sub_vectors, lock_wait_s=lock_wait
    )
    out.print(
        f"index {info['name']}: {info['rows']} rows, {info['partitions']} partitions, "
        f"{info['sub_vectors']} sub-vectors, built in {info['seconds']} s "
        "(queries use it; --exact forces a full scan)"
    )


@app.command()
def compact(
    db: DbOpt,
    keep_days: Annotated[
        float, typer.Option(help="Keep versions newer than this many days (time travel).")
    ] = 7.0,
    lock_wait: LockWaitOpt = 0.0,
) -> None:
    """Merge small fragments and delete versions older than --keep-days."""
    from ris_ray.config import check_seconds
    from ris_ray.store import compact as run_compact

    if not keep_days >= 0:
        raise InputError(f"--keep-days {keep_days}: must be a number of days >= 0")
    check_seconds("--lock-wait", lock_wait)
    stats = run_compact(db, keep_days=keep_days, lock_wait_s=lock_wait)
    out.print(
        f"fragments: {stats['fragments_before']} -> {stats['fragments_after']}; "
        f"versions removed: {stats['versions_removed']}; bytes freed: {stats['bytes_removed']}"
    )


@app.command()
def demo(
    out_dir: Annotated[
        Path, typer.Option("--out", help="Folder for sample data, dataset and plot.")
    ] = Path("ris-demo"),
    data: Annotated[
        Path | None, typer.Option(help="Use these GeoTIFFs instead of generated samples.")
    ] = None,
    weights: Annotated[
        str | None, typer.Option(help="Default: imagenet if cached, else random.")
    ] = None,
    k: Annotated[int, typer.Option("--k", "-k", help="Neighbours to show.")] = 8,
) -> None:
    """Make sample imagery, ingest it on an embedded Ray, query it and plot the result."""
    from ris_ray.config import IngestConfig
    from ris_ray.embed import imagenet_cached
    from ris_ray.outputs import save_figure
    from ris_ray.pipeline import ingest as run_ingest
    from ris_ray.plot import plot_neighbours
    from ris_ray.query import query as run_query
    from ris_ray.sample import make_samples

    if k < 1:
        raise InputError(f"--k {k}: must be >= 1")
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"--out {out_dir}: is a file; give a folder (created if missing)")
    if data is not None and not data.exists():
        raise InputError(f"--data {data}: no such file or directory")
    if weights is None:
        weights = "imagenet" if imagenet_cached() else "random"
        if weights == "random":
            err.print(
                "[yellow]ImageNet weights are not in the torch cache: the demo uses a "
                "seeded random init (neighbours are not meaningful). Pass --weights "
                "imagenet once you have network access, or --weights PATH.[/]"
            )
    if data is None:
        paths = make_samples(out_dir / "samples")
        inputs: tuple[str, ...] = tuple(str(p) for p in paths)
        err.print(f"sample imagery: {len(paths)} generated GeoTIFFs in {out_dir / 'samples'}")
    else:
        inputs = (str(data),)
    db = str(out_dir / "tiles.lance")
    import shutil

    shutil.rmtree(db, ignore_errors=True)
    result = run_ingest(
        IngestConfig(inputs=inputs, db=db, weights=weights), on_event=lambda m: err.print(m)
    )
    _print_ingest(result)
    q = run_query(db, seed=0, k=k)
    png = out_dir / "query.png"
    save_figure(plot_neighbours(q), png, "--out")
    out.print(
        f"query {q.query.label} -> {len(q.neighbours)} neighbours in {q.search_ms:.1f} ms; "
        f"plot: {png}\nweights used: {result.weights}"
    )


@app.command()
def serve(
    db: DbOpt,
    host: Annotated[
        str, typer.Option(help="Address to bind; anything but loopback needs --token.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    token: Annotated[
        str | None,
        typer.Option(
            envvar="RIS_SERVE_TOKEN",
            show_envvar=True,
            help="Require this token on every request (Authorization: Bearer, or ?token=).",
        ),
    ] = None,
) -> None:
    """Serve the map and a JSON API over the dataset (read-only; Ctrl-C stops)."""
    from ris_ray.web.server import check_bind
    from ris_ray.web.server import serve as run_serve

    check_bind(host, port, token)
    run_serve(
        db,
        host=host,
        port=port,
        token=token,
        announce=lambda url: err.print(f"serving {db} at {url} (API: {url}docs)", markup=False),
    )


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``ris`` script: the one error boundary."""
    command = typer.main.get_command(app)
    try:
        code = command.main(args=argv, prog_name="ris", standalone_mode=False)
    except typer.Exit as exc:
        code = exc.exit_code
    except UsageError as exc:
        if not exc.format_message():  # `ris` alone: help was shown, nothing went wrong
            sys.exit(0)
        hint = f" (see `ris {exc.ctx.info_name} --help`)" if exc.ctx and exc.ctx.parent else ""
        err.print(f"error: {exc.format_message()}{hint}", markup=False)
        code = 1
    except (typer.Abort, KeyboardInterrupt):
        err.print("aborted", markup=False)
        code = 130
    except RisError as exc:
        err.print(f"error: {exc}", markup=False)
        code = getattr(exc, "exit_code", 1)  # StorageFullError: 2, the data is intact
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
