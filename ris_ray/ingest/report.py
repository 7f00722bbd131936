"""What an ingest run reports: the run's :class:`IngestReport` (the CLI writes
it as JSON), each file's manifest record (:func:`file_record`), the live
progress bar (:class:`Progress`) and the steady throughput
(:class:`SteadyRate`). No Ray.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

from ris_ray.core.records import FileIdent
from ris_ray.ingest.files import FileReport
from ris_ray.store.manifest import FileRecord

__all__ = ["IngestReport", "Progress", "SteadyRate", "file_record"]


@dataclass
class IngestReport:
    """Summary of one ``ingest`` run (also written as JSON by the CLI)."""

    db: str
    model: str
    weights: str
    device: str
    files: list[FileReport] = field(default_factory=list)
    wall_s: float = 0.0
    version: int | None = None
    commits: int = 0
    missing: list[str] = field(default_factory=list)
    pruned_files: int = 0
    pruned_tiles: int = 0
    ray_gcs_address: str | None = None
    committed: bool = True  # False: --strict saw a failed file and published nothing
    steady_tiles_per_s: float = 0.0  # from the embedders' start to the last embedded batch
    nodes: int = 1  # nodes with embedders (placement: their tiles are cut there)
    #: The driver process's CPU (all its threads) while tiles flowed: the run's
    #: loop, without start-up (Ray, actors) and the last commit.
    driver_loop_cpu_s: float = 0.0
    rows_written_by: str = "driver"  # or "embedders": Lance fragments, committed by the driver
    pixel_bytes_local: int = 0  # pixel bytes embedded on the node that cut them
    pixel_bytes_crossed: int = 0  # ... on another node (they crossed the network)

    @property
    def tiles_written(self) -> int:
        return sum(f.tiles_written for f in self.files)

    @property
    def tiles_low_valid(self) -> int:
        return sum(f.tiles_low_valid for f in self.files)

    @property
    def tiles_empty(self) -> int:
        return sum(f.tiles_empty for f in self.files)

    @property
    def files_failed(self) -> list[FileReport]:
        return [f for f in self.files if f.status == "failed"]

    @property
    def files_read(self) -> list[FileReport]:
        """Files this run opened (everything but ``unchanged``)."""
        return [f for f in self.files if f.status != "unchanged"]

    @property
    def pixels_local_share(self) -> float:
        """The share of pixel bytes embedded on the node that cut them (1 when none)."""
        total = self.pixel_bytes_local + self.pixel_bytes_crossed
        return self.pixel_bytes_local / total if total else 1.0

    @property
    def tiles_per_s(self) -> float:
        return self.tiles_written / self.wall_s if self.wall_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(
            tiles_written=self.tiles_written,
            files_read=len(self.files_read),
            tiles_low_valid=self.tiles_low_valid,
            tiles_empty=self.tiles_empty,
            files_failed=len(self.files_failed),
            tiles_per_s=round(self.tiles_per_s, 2),
            pixels_local_share=round(self.pixels_local_share, 4),
        )
        return d


class Progress:
    """Rich progress on stderr (tiles embedded of planned, files, tiles/s), or nothing."""

    def __init__(self, enabled: bool, n_files: int) -> None:
        self.enabled = enabled
        self.n_files = n_files
        if not enabled:
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self._p = Progress(
            TextColumn("[bold]ingest"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("tiles  {task.fields[files]}  {task.fields[rate]}"),
            TimeElapsedColumn(),
            transient=False,
        )
        self._task = self._p.add_task("tiles", total=None, files="", rate="")
        self._p.start()

    def update(self, tiles_done: int, tiles_planned: int, files_done: int, t0: float) -> None:
        if not self.enabled:
            return
        rate = tiles_done / max(time.monotonic() - t0, 1e-9)
        self._p.update(
            self._task,
            completed=tiles_done,
            total=max(tiles_planned, 1),
            files=f"files {files_done}/{self.n_files}",
            rate=f"{rate:.1f} tiles/s",
        )

    def stop(self) -> None:
        if self.enabled:
            self._p.stop()


def file_record(f: FileReport, version: int | None, ident: FileIdent | None) -> FileRecord:
    """The manifest record of a file from its report and identity (``None``: unknown)."""
    size, mtime, etag = ident or FileIdent(-1, -1)
    return FileRecord(
        path=f.path,
        size=size,
        mtime_ns=mtime,
        status=f.status,
        tiles=f.tiles_written,
        tiles_low_valid=f.tiles_low_valid,
        reason=f.reason,
        dataset_version=version,
        etag=etag,
    )


class SteadyRate:
    """Tiles/s from the moment the embedders take work (:meth:`start`) to the
    last embedded batch: the pipeline's throughput once it runs, without Ray
    start-up and model loading (every embedded tile counts: no call goes out
    before the start, and one call of a small run still gives a rate)."""

    def __init__(self) -> None:
        self.started: float | None = None
        self.last = 0.0
        self.tiles = 0

    def start(self) -> None:
        self.started = time.monotonic()

    def mark(self, rows: int) -> None:
        self.tiles += rows
        self.last = time.monotonic()

    @property
    def rate(self) -> float:
        span = self.last - (self.started or self.last)
        return self.tiles / span if span > 0 else 0.0
