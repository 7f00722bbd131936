"""Several datasets searched as one: ``ris query --db A --db B``.

:func:`open_shards` opens each dataset and refuses a set that mixes models or
tile sizes (distances between their fingerprints would mean nothing; the
stride may differ, it changes which tiles exist, not what a fingerprint is).
A :class:`Shards` finds stored tiles in whichever dataset holds them and
counts their rows; :func:`merge` turns each dataset's top-k into one top-k
(:func:`ris_ray.search.query.search_many` runs the searches in parallel).

On the exact path the merged top-k is the top-k of one dataset holding every
row: a row's distance does not depend on the other rows, and every row of the
overall top-k is within the top-k of its own dataset. A tile id held by
several datasets (the same file ingested into each) is looked up in the first
that holds it, and may be found once per dataset.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from ris_ray.core.errors import InputError, ModelMismatchError
from ris_ray.core.sql import sql_in
from ris_ray.search.results import RESULT_COLUMNS, Neighbour
from ris_ray.store.dataset import open_dataset
from ris_ray.store.schema import DatasetParams, dataset_params

__all__ = ["Shards", "merge", "open_shards"]

#: What a lookup of a stored tile reads: a result row and its vector.
_STORED_COLUMNS = [*RESULT_COLUMNS, "fingerprint"]


@dataclass(frozen=True)
class Shards:
    """Open datasets of one model and tile size, in the order given; ``params``
    are the first dataset's (the others differ at most in stride)."""

    datasets: tuple[Any, ...]
    params: DatasetParams

    @classmethod
    def of(cls, datasets: Sequence[Any]) -> Shards:
        """The open ``datasets`` as one; :class:`ModelMismatchError` when one's
        model or tile size is not the first's, :class:`InputError` for a repeat."""
        if not datasets:
            raise InputError("--db: give at least one dataset")
        first, first_params = datasets[0], dataset_params(datasets[0])
        seen: set[str] = set()
        for ds in datasets:
            if str(ds.uri) in seen:
                raise InputError(f"--db {ds.uri}: given twice; name each dataset once")
            seen.add(str(ds.uri))
            params = dataset_params(ds)
            if (params.model, params.tile_size) != (first_params.model, first_params.tile_size):
                raise ModelMismatchError(
                    f"--db {first.uri} holds tiles of {first_params.describe()} but --db "
                    f"{ds.uri} of {params.describe()}; datasets searched together need "
                    "the same model and tile size"
                )
        return cls(tuple(datasets), first_params)

    @property
    def uri(self) -> str:
        """The datasets' URIs, comma-separated (one dataset: its URI)."""
        return ", ".join(str(ds.uri) for ds in self.datasets)

    @property
    def label(self) -> str:
        """Where a tile was looked for, for messages: ``A`` or ``any of A, B``."""
        return self.uri if len(self.datasets) == 1 else f"any of {self.uri}"

    def count_rows(self) -> int:
        return sum(int(ds.count_rows()) for ds in self.datasets)

    def stored(self, tile_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Rows (:data:`RESULT_COLUMNS` and ``fingerprint``) of the ids that exist,
        by id, each from the first dataset that holds it."""
        rows: dict[str, dict[str, Any]] = {}
        for ds in self.datasets:
            wanted = [t for t in dict.fromkeys(tile_ids) if t not in rows]
            if not wanted:
                break
            table = ds.to_table(columns=_STORED_COLUMNS, filter=sql_in("tile_id", wanted))
            for row in table.to_pylist():
                rows.setdefault(row["tile_id"], row)
        return rows

    def take(self, index: int) -> dict[str, Any]:
        """The row (as :meth:`stored`) at ``index`` of all rows laid end to end,
        the datasets in the order given; :class:`IndexError` past the last."""
        if index >= 0:
            for ds in self.datasets:
                n = int(ds.count_rows())
                if index < n:
                    return dict(ds.take([index], columns=_STORED_COLUMNS).to_pylist()[0])
                index -= n
        raise IndexError(f"row {index} is not in {self.uri}")


def open_shards(dbs: Sequence[str]) -> Shards:
    """Open the datasets at ``dbs`` (:func:`~ris_ray.store.dataset.open_dataset`)
    as one :class:`Shards`."""
    return Shards.of([open_dataset(db) for db in dbs])


def merge(ranked: Sequence[Sequence[Neighbour]], k: int) -> list[Neighbour]:
    """One top-``k`` from several rankings, each nearest first: by distance,
    equal distances in ``tile_id`` order, as within one dataset; ranks from 1."""
    best = itertools.islice(heapq.merge(*ranked, key=lambda n: (n.distance, n.tile_id)), k)
    return [replace(n, rank=rank) for rank, n in enumerate(best, start=1)]
