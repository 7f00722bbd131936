"""``ris info``, ``index``, ``compact``, ``demo``, ``serve``: upkeep, the demo and the map."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from ris_ray.cli.app import DbOpt, LockWaitOpt, app, err, out
from ris_ray.cli.ingest import print_ingest
from ris_ray.core.errors import InputError

__all__ = ["compact", "demo", "index", "info", "serve"]


@app.command()
def info(
    db: DbOpt,
    versions: Annotated[
        bool, typer.Option("--versions", help="Also list the dataset's version history.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """Describe a dataset: rows, sources, model, fingerprint type, version, size, indexes."""
    from ris_ray.store.dataset import dataset_info, version_history

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
        if key not in ("history", "indexes"):
            out.print(f"{key:>18}: {value}")
    for idx in data["indexes"]:
        out.print(f"{'index':>18}: {_describe_index(idx)}", markup=False, highlight=False)


def _describe_index(idx: dict[str, Any]) -> str:
    """One line for an index of ``ris info``: rows in it and not, and when to retrain."""
    from ris_ray.store.dataset import RETRAIN_GROWTH

    line = (
        f"{idx['name']} ({idx['type']}): {idx['indexed_rows']} rows indexed, "
        f"{idx['unindexed_rows']} not yet ({100 * float(idx['unindexed_share']):.1f} %, "
        f"scanned exactly); trained on {idx['trained_rows']}"
    )
    if idx["retrain"]:
        line += f": the rows have grown past {RETRAIN_GROWTH:g}x, retrain with ris index"
    return line


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
    from ris_ray.core.config import check_seconds
    from ris_ray.search.index import build_index

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
    """Merge small fragments, delete versions older than --keep-days and data
    files no version references (left by an interrupted or failed ingest)."""
    from ris_ray.core.config import check_seconds
    from ris_ray.store.tilestore import compact as run_compact

    if not keep_days >= 0:
        raise InputError(f"--keep-days {keep_days}: must be a number of days >= 0")
    check_seconds("--lock-wait", lock_wait)
    stats = run_compact(db, keep_days=keep_days, lock_wait_s=lock_wait)
    out.print(
        f"fragments: {stats['fragments_before']} -> {stats['fragments_after']}; "
        f"versions removed: {stats['versions_removed']}; bytes freed: {stats['bytes_removed']}"
        f"; bytes of files no version used: {stats['unreferenced_bytes_removed']}"
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
    from ris_ray.core.config import IngestConfig
    from ris_ray.core.outputs import save_figure
    from ris_ray.ingest.pipeline import ingest as run_ingest
    from ris_ray.model.embed import imagenet_cached
    from ris_ray.sample import make_samples
    from ris_ray.search.plot import plot_neighbours
    from ris_ray.search.query import query as run_query

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
                "ImageNet weights are not in the torch cache: the demo uses a "
                "seeded random init (neighbours are not meaningful). Pass --weights "
                "imagenet once you have network access, or --weights PATH.",
                style="yellow",
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
        IngestConfig(inputs=inputs, db=db, weights=weights),
        on_event=lambda m: err.print(m, markup=False),
    )
    print_ingest(result)
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
    basemap: Annotated[
        str | None,
        typer.Option(
            help="XYZ tile URL template drawn under the data, e.g. "
            "https://tile.openstreetmap.org/{z}/{x}/{y}.png (default: none, works offline)."
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
        basemap=basemap,
        announce=lambda url: err.print(f"serving {db} at {url} (API: {url}docs)", markup=False),
    )
