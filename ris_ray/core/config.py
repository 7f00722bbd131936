"""Run configuration: plain frozen dataclasses, validated on construction.

The CLI, the ``jobs/`` scripts and tests all build these and hand them to the
library, so every option is checked in one place with one message style.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from ris_ray.core.errors import InputError
from ris_ray.core.location import Location

__all__ = [
    "FINGERPRINT_DIM",
    "METRICS",
    "Device",
    "IngestConfig",
    "Precision",
    "WriteRows",
    "check_device",
    "check_metric",
    "check_precision",
    "check_seconds",
    "parse_bands",
]

#: Length of a fingerprint: ResNet-18's pooled feature size.
FINGERPRINT_DIM = 512

Device = Literal["auto", "cpu", "cuda"]
Precision = Literal["auto", "fp32", "fp16", "bf16"]
#: Who writes the tiles' rows: the embedders (Lance fragments the driver
#: commits), the driver, or auto (embedders where they reach the dataset).
WriteRows = Literal["auto", "embedders", "driver"]
#: Distance metrics of every search in ris_ray (exact scans, Lance, diff).
METRICS = ("l2", "cosine")


def check_device(device: str) -> None:
    """Refuse a ``--device`` that is not auto, cpu or cuda."""
    if device not in get_args(Device):
        raise InputError(f"--device {device!r}: use auto, cpu or cuda")


def check_precision(precision: str) -> None:
    """Refuse a ``--precision`` that is not auto, fp32, fp16 or bf16."""
    if precision not in get_args(Precision):
        raise InputError(f"--precision {precision!r}: use auto, fp32, fp16 or bf16")


def check_seconds(option: str, value: float) -> None:
    """Refuse a duration option that is not a number of seconds >= 0 (NaN too)."""
    if not value >= 0.0:
        raise InputError(f"{option} {value}: must be a number of seconds >= 0")


def check_metric(metric: str) -> None:
    """Refuse a metric that is not one of :data:`METRICS` (a usage error)."""
    if metric not in METRICS:
        raise InputError(f"--metric {metric!r}: use one of {', '.join(METRICS)}")


def parse_bands(text: str | None) -> tuple[int, ...] | None:
    """Parse ``--bands 3,2,1`` (1-based band indexes, 1 or 3 of them)."""
    if text is None or text.strip() == "":
        return None
    try:
        bands = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise InputError(f"--bands {text!r}: expected 1-based band numbers like 3,2,1") from None
    if len(bands) not in (1, 3) or any(b < 1 for b in bands):
        raise InputError(f"--bands {text!r}: give one band or three, each >= 1 (e.g. 3,2,1)")
    return bands


#: Fewest tiles an embedder call may carry when windows wait (``--batch-size``
#: when larger): a call holds several forward passes, so Ray's own work per
#: call (about 1 ms in the driver and in the actor, more on loaded cores)
#: spreads over more tiles.
CALL_TILES = 256


@dataclass(frozen=True)
class IngestConfig:
    """Everything one ``ingest`` run needs.

    ``stride`` defaults to ``tile_size`` (no overlap). ``window_px`` is the
    target edge of the windows that tiling tasks read (rounded to whole tiles
    and, where it helps, to the file's internal blocks). ``call_tiles``
    (library only) sets :attr:`tiles_per_call`.
    """

    inputs: tuple[str, ...]
    db: str | Location  # parsed once, on construction: always a Location after it
    tile_size: int = 256
    stride: int | None = None
    min_valid: float = 0.5
    bands: tuple[int, ...] | None = None
    weights: str = "imagenet"
    batch_size: int = 64
    window_px: int = 2048
    address: str | None = None
    num_embedders: int | None = None
    device: Device = "auto"
    precision: Precision = "auto"
    thumbnail_size: int = 64
    commit_every_s: float = 120.0
    max_tasks_in_flight: int | None = None
    progress: bool = True
    rebuild: bool = False
    prune: bool = False
    compact_fragments: int = 64
    gpu_wait_s: float = 900.0
    strict: bool = False
    lock_wait_s: float = 0.0  # wait this long for another ingest of the same --db
    call_tiles: int | None = None
    write_rows: WriteRows = "auto"

    def __post_init__(self) -> None:
        object.__setattr__(self, "db", Location.parse(self.db))
        check_device(self.device)
        if self.write_rows not in get_args(WriteRows):
            raise InputError(f"--write-rows {self.write_rows!r}: use auto, embedders or driver")
        check_precision(self.precision)
        if not self.inputs:
            raise InputError("no INPUT given: pass GeoTIFF files or directories")
        if self.tile_size < 16:
            raise InputError(f"--tile-size {self.tile_size}: must be at least 16 pixels")
        if self.stride is not None and not (self.stride >= 1):
            raise InputError(f"--stride {self.stride}: must be a positive number of pixels")
        if not 0.0 <= self.min_valid <= 1.0:
            raise InputError(f"--min-valid {self.min_valid}: must be between 0 and 1")
        if self.batch_size < 1:
            raise InputError(f"--batch-size {self.batch_size}: must be >= 1")
        if self.call_tiles is not None and self.call_tiles < 1:
            raise InputError(f"call_tiles {self.call_tiles}: must be >= 1")
        self._check_seconds()
        if self.window_px < 1:
            raise InputError(f"--window-px {self.window_px}: must be a positive number of pixels")
        if self.window_px < self.tile_size:
            object.__setattr__(self, "window_px", self.tile_size)
        if self.num_embedders is not None and self.num_embedders < 1:
            raise InputError(f"--embedders {self.num_embedders}: must be >= 1")
        if self.thumbnail_size != 0 and not 8 <= self.thumbnail_size <= 512:
            raise InputError(
                f"--thumbnail-size {self.thumbnail_size}: must be 0 (no thumbnails) or 8..512"
            )

    def _check_seconds(self) -> None:
        """Every duration option is a number of seconds >= 0 (NaN is refused)."""
        for option, value in (
            ("--commit-every", self.commit_every_s),
            ("--gpu-wait", self.gpu_wait_s),
            ("--lock-wait", self.lock_wait_s),
        ):
            check_seconds(option, value)

    @property
    def location(self) -> Location:
        """Where the dataset is (``db``, parsed once on construction)."""
        return Location.parse(self.db)

    @property
    def tiles_per_call(self) -> int:
        """Most tiles one embedder call carries (at least one window):
        ``call_tiles`` when set, else ``max(batch_size, CALL_TILES)``."""
        if self.call_tiles is not None:
            return self.call_tiles
        return max(self.batch_size, CALL_TILES)

    @property
    def step(self) -> int:
        """The effective stride in pixels."""
        return self.stride if self.stride is not None else self.tile_size
