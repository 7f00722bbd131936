"""Per-file state of an ingest run: each input file's report, its windows
still outstanding, the run's progress counts, and the files that settled.

A file *settles* when its last window is handled (or at once, when it cannot
be read or has nothing to read); the driver stages it for the next commit
(:meth:`FileBook.take_settled`). What a file's outcome is (``ok``,
``skipped``, ``failed``) and why is decided here. No Ray, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ris_ray.core.records import Failure
from ris_ray.ingest.planning import FilePlan
from ris_ray.raster.dataset import display_path
from ris_ray.raster.reading import RasterInfo

__all__ = ["FileBook", "FileReport", "FileState", "Settled"]


@dataclass
class FileReport:
    """What happened to one input file."""

    path: str
    status: str = "pending"  # ok | skipped | failed | unchanged
    tiles_planned: int = 0
    tiles_written: int = 0
    tiles_low_valid: int = 0
    tiles_empty: int = 0  # under absent blocks of a sparse TIFF: never read
    windows: int = 0
    windows_failed: int = 0
    reason: str | None = None


@dataclass(frozen=True)
class Settled:
    """A file whose work is over; ``staged``: its tiles go out with the next
    commit (False: nothing was staged and earlier tiles stay, e.g. unreadable)."""

    path: str
    staged: bool


@dataclass
class FileState:
    """One file's report, header and windows not yet fully handled."""

    report: FileReport
    info: RasterInfo | None = None
    outstanding: int = 0  # windows not yet fully handled


@dataclass
class FileBook:
    """The state of every file of a run, and the run's progress counts."""

    paths: list[str]
    min_valid: float
    tiles_planned: int = 0
    tiles_done: int = 0
    files_done: int = 0
    files: dict[str, FileState] = field(init=False)
    _settled: list[Settled] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        self.files = {p: FileState(FileReport(display_path(p))) for p in self.paths}

    @property
    def reports(self) -> list[FileReport]:
        return [s.report for s in self.files.values()]

    def take_settled(self) -> list[Settled]:
        """Files settled since the last call, in the order they settled."""
        out, self._settled = self._settled, []
        return out

    # ------------------------------------------------------------ events in

    def unreadable(self, path: str, failure: Failure) -> None:
        """``path`` cannot be used: it fails at once (its earlier tiles stay)."""
        f = self.files[path].report
        f.status, f.reason = "failed", failure.reason
        self._settle_now(path, staged=False)

    def planned(self, path: str, info: RasterInfo, plan: FilePlan) -> bool:
        """Record a probed file's ``plan``; True when it has windows to read
        (else it is skipped and settles: staged, which drops tiles of an
        earlier version)."""
        state = self.files[path]
        state.info = info
        f = state.report
        f.tiles_planned = plan.tiles_planned
        f.tiles_empty = plan.tiles_empty
        f.windows = len(plan.readable)
        self.tiles_planned += f.tiles_planned - f.tiles_empty
        if not plan.readable:
            f.status = "skipped"
            f.reason = plan.skip_reason
            self._settle_now(path, staged=True)  # drops tiles of an earlier version
            return False
        state.outstanding = len(plan.readable)
        return True

    def low_valid(self, path: str, n: int) -> None:
        """``n`` tiles of a window of ``path`` were below ``--min-valid``."""
        self.files[path].report.tiles_low_valid += n

    def written(self, path: str, n: int) -> None:
        """An embedder returned ``n`` tiles of a window of ``path``: the window is done."""
        self.files[path].report.tiles_written += n
        self.tiles_done += n
        self.window_done(path)

    def embed_failed(self, path: str, failure: Failure) -> None:
        """A window of ``path`` could not be embedded (alone)."""
        f = self.files[path].report
        f.windows_failed += 1
        f.reason = f"{path}: embedding failed ({failure.reason})"
        self.window_done(path)

    def window_failed(self, path: str, failure: Failure) -> None:
        """A window of ``path`` could not be read or cut."""
        f = self.files[path].report
        f.windows_failed += 1
        crashed = failure.kind == "crash"
        reason = f"{path}: {failure.reason}" if crashed else failure.reason
        first = f.windows_failed == 1
        f.reason = reason if first else f"{f.windows_failed} windows failed; first: {f.reason}"
        self.window_done(path)

    # ------------------------------------------------------------ settling

    def _settle_now(self, path: str, *, staged: bool) -> None:
        self.files_done += 1
        self._settled.append(Settled(path, staged))

    def window_done(self, path: str) -> None:
        """A window of ``path`` is handled; the last one settles the file."""
        state = self.files[path]
        state.outstanding -= 1
        if state.outstanding:
            return
        f = state.report
        if f.windows_failed:
            f.status = "failed"
        elif f.tiles_written == 0:
            f.status = "skipped"
            f.reason = f.reason or (
                f"no valid tiles: {f.tiles_low_valid} below --min-valid {self.min_valid}"
                + (f", {f.tiles_empty} in absent blocks" if f.tiles_empty else "")
            )
        else:
            f.status = "ok"
        self._settle_now(path, staged=True)
