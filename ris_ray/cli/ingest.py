"""``ris ingest``: files to fingerprints."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, cast

import typer
from rich.table import Table

from ris_ray.cli.app import EXIT_PARTIAL, DbOpt, LockWaitOpt, app, err, out
from ris_ray.core.errors import InputError
from ris_ray.core.location import Location

__all__ = ["ingest", "print_ingest"]


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
        int | None, typer.Option(help="Embedder actors (default: one per GPU, else 1 a node).")
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
    write_rows: Annotated[
        str,
        typer.Option(
            help="Who writes the tiles' rows: embedders (Lance fragments from each node, "
            "committed by the driver per file) | driver | auto (embedders when --db is in "
            "object storage, or on this host with a GPU embedder or several; else driver)."
        ),
    ] = "auto",
) -> None:
    """Tile, embed and store GeoTIFFs in a Lance dataset."""
    from ris_ray.core.config import Device, IngestConfig, Precision, WriteRows, parse_bands
    from ris_ray.ingest.pipeline import ingest as run_ingest

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
        write_rows=cast(WriteRows, write_rows),
    )
    report = _report_path(cfg.location, report)
    result = run_ingest(cfg, on_event=None if quiet else (lambda m: err.print(m, markup=False)))
    if report is not None:
        try:
            report.write_text(json.dumps(result.to_dict(), indent=2))
        except OSError as exc:
            raise InputError(
                f"--report {report}: cannot write ({exc.strerror or exc}); the data is committed"
            ) from None
    if not quiet:
        print_ingest(result)
        if report is not None:
            out.print(f"report: {report}")
    if not result.committed:
        err.print(
            f"error: --strict: {len(result.files_failed)} file(s) failed; nothing was committed",
            markup=False,
        )
    if result.files_failed:
        raise typer.Exit(EXIT_PARTIAL)


def _report_path(db: Location, report: Path | None) -> Path | None:
    """The report file (``DB.report.json`` beside a local dataset by default), with
    ``--db`` and it checked writable before any work (see :mod:`ris_ray.ingest.preflight`)."""
    from ris_ray.ingest.preflight import check_db, check_report

    if report is None and db.is_local:
        report = Path(f"{str(db).rstrip('/')}.report.json")
    check_db(db)  # pipeline.ingest checks it too; first here so --db is named first
    if report is not None:
        check_report(report)
    return report


def print_ingest(r: Any) -> None:
    read = r.files_read
    if read:
        table = Table(title="files read", show_lines=False)
        for col in ("status", "tiles", "low valid"):
            table.add_column(col)
        table.add_column("file / reason", overflow="fold")  # a path in full, never cut
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
    if r.nodes > 1:
        crossed = r.pixel_bytes_crossed / 1e6
        lines.append(
            f"nodes: {r.nodes} with embedders | pixels embedded where they were cut: "
            f"{100 * r.pixels_local_share:.1f} % ({crossed:.1f} MB crossed nodes)"
        )
    lines.append(f"dataset: {r.db} (version {r.version}, {r.commits} commits this run)")
    out.print("\n".join(lines))
