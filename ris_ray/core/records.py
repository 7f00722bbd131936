"""Typed records that travel between stages (numpy only: no Ray, torch or Lance).

- :class:`TileBatch`: the tiles one window yields, columnar, from
  :func:`ris_ray.raster.reading.read_tiles` through the embedder actor to the writer;
- :class:`TileStats`: the window's counts, returned *beside* the batch;
- :class:`Failure`: every kind of task outcome that went wrong (an unusable
  file, an unreadable window, a crashed worker) as one value;
- :class:`FileIdent`: what identifies a source file between runs (size,
  mtime or last-modified, and an object's ETag);
- :class:`TileRef`: where a stored tile lies (id, source, pixel box, CRS
  bounds, WGS84 centre), the fields shared by query results, diff changes and
  exports.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Literal, NamedTuple

import numpy as np

__all__ = [
    "BOUNDS_FIELDS",
    "TILE_REF_FIELDS",
    "Failure",
    "FileIdent",
    "TileBatch",
    "TileRef",
    "TileStats",
]


class FileIdent(NamedTuple):
    """A source file's identity: ``(size, mtime_ns, etag)``.

    Local files: size and modification time (``etag`` is ``None``). Store
    objects: size, last-modified and ETag; the ETag changes whenever the object
    is replaced, so an unchanged object has the same size and ETag.
    """

    size: int
    mtime_ns: int
    etag: str | None = None


@dataclass(frozen=True)
class Failure:
    """A task outcome that went wrong, as a value.

    ``kind`` is ``"error"`` when the task ran and refused its input (the
    reason already names the file) and ``"crash"`` when Ray reports the task
    or actor itself failed (the reason is the exception text only).
    """

    reason: str
    kind: Literal["error", "crash"] = "error"


@dataclass(frozen=True)
class TileStats:
    """Counts of one window: tiles planned, dropped below ``--min-valid``, kept,
    and the Ray node that cut them (empty when unknown)."""

    n_planned: int
    n_low_valid: int
    n_tiles: int
    node: str = ""


@dataclass
class TileBatch:
    """The kept tiles of one window, one row per tile (all arrays length N).

    ``pixels`` is band-first ``(N, 3, T, T)`` uint8 (the embedder lays it out
    for the model on its device) until the embedder replaces it by
    ``fingerprint`` ``(N, FINGERPRINT_DIM)`` float32. ``thumbnail`` holds one
    JPEG (``bytes``) per tile once the embedder actor has made them
    (:mod:`ris_ray.model.thumbnail`); ``None`` per tile before that and with
    ``--thumbnail-size 0``.
    ``row``/``col`` are the pixel origins; ``minx..maxy`` the bounds in the
    file's CRS (``crs``) and ``lon``/``lat`` the WGS84 centre, NaN where unknown.
    """

    tile_id: np.ndarray
    source: np.ndarray
    row: np.ndarray
    col: np.ndarray
    width: np.ndarray
    height: np.ndarray
    valid_fraction: np.ndarray
    thumbnail: np.ndarray
    minx: np.ndarray
    miny: np.ndarray
    maxx: np.ndarray
    maxy: np.ndarray
    lon: np.ndarray
    lat: np.ndarray
    crs: str | None = None
    pixels: np.ndarray | None = field(default=None, repr=False)
    fingerprint: np.ndarray | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.tile_id)


@dataclass
class TileRef:
    """Where a stored tile lies: its id and file, pixel box (origin ``row``/``col``,
    ``width`` x ``height``), WGS84 centre ``lon``/``lat`` and bounds
    ``minx..maxy`` in the file's ``crs`` (``None`` without georeferencing).

    The field names are the dataset's column names; their order is the
    column order of the exports (:data:`ris_ray.search.export.NEIGHBOUR_FIELDS`).
    """

    tile_id: str
    source: str
    row: int
    col: int
    width: int | None = None
    height: int | None = None
    lon: float | None = None
    lat: float | None = None
    crs: str | None = None
    minx: float | None = None
    miny: float | None = None
    maxx: float | None = None
    maxy: float | None = None


#: The location fields of a tile, in :class:`TileRef` order (dataset column names).
TILE_REF_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(TileRef))
#: The fields that outline a tile: its CRS and bounds in it.
BOUNDS_FIELDS: tuple[str, ...] = ("crs", "minx", "miny", "maxx", "maxy")
assert set(BOUNDS_FIELDS) <= set(TILE_REF_FIELDS)
