"""k-nearest-neighbour queries over a ris_ray dataset.

The query vector comes from a stored tile (``tile_id``), a random stored tile
(seeded), or an external image embedded with the dataset's own model. The
search is Lance's exact vector scan (``use_index=False``): every fingerprint
is compared, in Lance's chunked, vectorised scan. Distances:

- ``l2``: Euclidean distance ``||x - q||`` (Lance reports its square; we take
  the root so numbers read as distances),
- ``cosine``: ``1 - cos(x, q)``.
"""

from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ris_ray.embed import Embedder, weights_for_model
from ris_ray.errors import InputError, QueryError
from ris_ray.store import dataset_params, open_dataset
from ris_ray.tiling import read_patch

__all__ = ["METRICS", "Neighbour", "QueryResult", "QueryTile", "query"]

METRICS = ("l2", "cosine")
_TILE_ID = re.compile(r"^[0-9a-f]{20}$")
_RESULT_COLUMNS = ["tile_id", "source", "row", "col", "lon", "lat", "thumbnail"]


@dataclass
class QueryTile:
    """What was searched for: a stored tile or a crop of an external image."""

    label: str
    tile_id: str | None = None
    source: str | None = None
    row: int | None = None
    col: int | None = None
    thumbnail: bytes | None = field(default=None, repr=False)
    pixels: np.ndarray | None = field(default=None, repr=False)


@dataclass
class Neighbour:
    rank: int
    distance: float
    tile_id: str
    source: str
    row: int
    col: int
    lon: float | None
    lat: float | None
    thumbnail: bytes | None = field(default=None, repr=False)


@dataclass
class QueryResult:
    query: QueryTile
    metric: str
    k: int
    model: str
    rows_scanned: int
    search_ms: float
    neighbours: list[Neighbour]

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
            "neighbours": [
                {k: v for k, v in asdict(n).items() if k != "thumbnail"} for n in self.neighbours
            ],
        }


def _check_tile_id(tile_id: str) -> str:
    if not _TILE_ID.match(tile_id):
        raise InputError(f"--tile-id {tile_id!r}: tile ids are 20 lowercase hex digits")
    return tile_id


def _row_query(row: dict[str, Any]) -> QueryTile:
    return QueryTile(
        label=f"{row['tile_id']}",
        tile_id=row["tile_id"],
        source=row["source"],
        row=row["row"],
        col=row["col"],
        thumbnail=row["thumbnail"],
    )


def _stored_vector(ds: Any, tile_id: str) -> tuple[np.ndarray, QueryTile]:
    t = ds.to_table(columns=[*_RESULT_COLUMNS, "fingerprint"], filter=f"tile_id = '{tile_id}'")
    if t.num_rows == 0:
        raise QueryError(f"tile id {tile_id} is not in {ds.uri}")
    row = t.slice(0, 1).to_pylist()[0]
    return np.asarray(row["fingerprint"], dtype=np.float32), _row_query(row)


def _random_vector(ds: Any, seed: int | None) -> tuple[np.ndarray, QueryTile]:
    n = ds.count_rows()
    if n == 0:
        raise QueryError(f"{ds.uri} holds no tiles")
    index = int(np.random.default_rng(seed).integers(n))
    row = ds.take([index], columns=[*_RESULT_COLUMNS, "fingerprint"]).to_pylist()[0]
    return np.asarray(row["fingerprint"], dtype=np.float32), _row_query(row)


def _image_vector(
    ds: Any,
    image: str,
    window: tuple[int, int, int, int] | None,
    weights_path: str | None,
    device: str,
) -> tuple[np.ndarray, QueryTile]:
    params = dataset_params(ds)
    pixels = read_patch(image, window, params.tile_size)
    embedder = Embedder(weights_for_model(params.model, weights_path), device=device)
    vector = embedder.embed(pixels[None])[0]
    label = image.rsplit("/", 1)[-1] + (f" [{','.join(map(str, window))}]" if window else "")
    return vector, QueryTile(
        label=label,
        source=image,
        row=window[1] if window else None,
        col=window[0] if window else None,
        pixels=pixels,
    )


def search(
    ds: Any, vector: np.ndarray, k: int, metric: str = "l2", exclude: str | None = None
) -> tuple[list[Neighbour], float]:
    """Exact top-``k`` over all rows (minus ``exclude``). Returns neighbours and ms."""
    if metric not in METRICS:
        raise InputError(f"--metric {metric!r}: use one of {', '.join(METRICS)}")
    if k < 1:
        raise InputError(f"--k {k}: must be >= 1")
    nearest = {
        "column": "fingerprint",
        "q": vector.astype(np.float32),
        "k": k,
        "metric": metric,
        "use_index": False,
    }
    kw: dict[str, Any] = {}
    if exclude is not None:
        kw = {"filter": f"tile_id != '{_check_tile_id(exclude)}'", "prefilter": True}
    t0 = time.perf_counter()
    table = ds.to_table(columns=[*_RESULT_COLUMNS, "_distance"], nearest=nearest, **kw)
    ms = (time.perf_counter() - t0) * 1000.0
    out = []
    for rank, row in enumerate(table.to_pylist(), start=1):
        d = float(row["_distance"])
        d = float(np.sqrt(max(d, 0.0))) if metric == "l2" else d
        out.append(
            Neighbour(
                rank,
                d,
                row["tile_id"],
                row["source"],
                row["row"],
                row["col"],
                row["lon"],
                row["lat"],
                row["thumbnail"],
            )
        )
    return out, ms


def query(
    db: str,
    *,
    tile_id: str | None = None,
    image: str | None = None,
    window: tuple[int, int, int, int] | None = None,
    seed: int | None = None,
    k: int = 10,
    metric: str = "l2",
    include_self: bool = False,
    weights_path: str | None = None,
    device: str = "auto",
) -> QueryResult:
    """Answer one k-NN query against the dataset at ``db``.

    Exactly one source of the query: ``tile_id``, ``image`` (optionally with
    ``window`` = col,row,width,height) or, when neither is given, a random
    tile chosen with ``seed``. A stored query tile is excluded from its own
    results unless ``include_self``.
    """
    if tile_id is not None and image is not None:
        raise InputError("give only one of --tile-id, --image, --random")
    if window is not None and image is None:
        raise InputError("--window needs --image")
    ds = open_dataset(db)
    params = dataset_params(ds)
    if image is not None:
        vector, q = _image_vector(ds, image, window, weights_path, device)
    elif tile_id is not None:
        vector, q = _stored_vector(ds, _check_tile_id(tile_id))
    else:
        vector, q = _random_vector(ds, seed)
    exclude = q.tile_id if (q.tile_id is not None and not include_self) else None
    neighbours, ms = search(ds, vector, k, metric, exclude)
    return QueryResult(q, metric, k, params.model, ds.count_rows(), ms, neighbours)
