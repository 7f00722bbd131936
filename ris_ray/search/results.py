"""What a query returns: the query tile, its members and the neighbours found.

Typed records shared by :mod:`ris_ray.search.query`, ``ris serve``, the exports
and the figures, and :class:`QueryBackend`, the protocol through which a
long-lived process (``ris serve``) answers a query from memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np

from ris_ray.core.records import TILE_REF_FIELDS, TileRef
from ris_ray.search.filters import SearchFilter

__all__ = [
    "DEFAULT_ALPHA",
    "RESULT_COLUMNS",
    "Neighbour",
    "QueryBackend",
    "QueryMember",
    "QueryResult",
    "QueryTile",
]


#: Weight of the negatives' mean in ``mean(pos) - alpha * mean(neg)``.
DEFAULT_ALPHA = 0.5
#: Columns a result row carries (a :class:`QueryBackend` returns them, plus ``fingerprint``).
RESULT_COLUMNS = (*TILE_REF_FIELDS, "thumbnail")


@dataclass
class QueryMember:
    """One tile or image crop that went into the query vector."""

    role: str  # "positive" | "negative"
    label: str
    tile_id: str | None = None
    source: str | None = None
    row: int | None = None
    col: int | None = None
    lon: float | None = None
    lat: float | None = None


@dataclass
class QueryTile:
    """What was searched for: a stored tile, a crop of an external image, or a
    combination of several (see ``members``).

    With a single positive, ``tile_id``/``source``/``row``/``col`` describe it;
    with several they are ``None`` and ``thumbnail``/``pixels`` show the first.
    """

    label: str
    tile_id: str | None = None
    source: str | None = None
    row: int | None = None
    col: int | None = None
    thumbnail: bytes | None = field(default=None, repr=False)
    pixels: np.ndarray | None = field(default=None, repr=False)
    lon: float | None = None
    lat: float | None = None
    members: list[QueryMember] = field(default_factory=list)
    alpha: float | None = None


@dataclass(kw_only=True)
class Neighbour(TileRef):
    """One search result: a stored tile (:class:`~ris_ray.core.records.TileRef`), its
    rank and distance to the query vector; ``dataset`` is the URI of the dataset
    it came from when a query searched several (``None``: the one searched)."""

    rank: int
    distance: float
    thumbnail: bytes | None = field(default=None, repr=False)
    dataset: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict: no thumbnail, and ``dataset`` only when it is known."""
        return {
            k: v
            for k, v in asdict(self).items()
            if k != "thumbnail" and not (k == "dataset" and v is None)
        }


@dataclass
class QueryResult:
    query: QueryTile
    metric: str
    k: int
    model: str
    rows_scanned: int
    search_ms: float
    neighbours: list[Neighbour]
    filter: str | None = None
    max_distance: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (thumbnails and pixels left out)."""
        q = {k: v for k, v in asdict(self.query).items() if k not in ("thumbnail", "pixels")}
        return {
            "query": q,
            "metric": self.metric,
            "k": self.k,
            "model": self.model,
            "rows_scanned": self.rows_scanned,
            "search_ms": round(self.search_ms, 3),
            "filter": self.filter,
            "max_distance": self.max_distance,
            "neighbours": [n.to_dict() for n in self.neighbours],
        }


class QueryBackend(Protocol):
    """Where :func:`query` reads stored tiles and ranks rows. Without one,
    :func:`query` opens ``db`` and asks Lance for both; a long-lived process
    (``ris serve``) passes one that keeps vectors and metadata in memory."""

    @property
    def ds(self) -> Any:
        """The open Lance dataset (parameters, places, random tiles, filters)."""

    def stored(self, tile_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Rows (:data:`RESULT_COLUMNS` and ``fingerprint``) of the ids that exist, by id."""

    def search(
        self,
        vector: np.ndarray,
        k: int,
        metric: str,
        exclude: Sequence[str],
        *,
        filters: SearchFilter,
        where: str | None,
        max_distance: float | None,
        exact: bool,
    ) -> tuple[list[Neighbour], float]:
        """What :func:`search` returns, for ``filters`` (``where`` is their SQL)."""
