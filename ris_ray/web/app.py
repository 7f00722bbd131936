"""The ``ris serve`` web app: one map page and a small read-only JSON API.

``create_app(db, token=None)`` builds the FastAPI app over a
:class:`ris_ray.web.session.Session` (the dataset held open, reloaded when
a new version is committed). Endpoints (OpenAPI schema at ``/openapi.json``,
browsable at ``/docs``: Swagger UI, working offline, its script and style
from the installed ``fastapi-offline`` served under ``/static-offline-docs/``;
no ``/redoc``, whose page loads a logo from ReDoc's CDN):

- ``GET /`` the map page; ``/static/...`` its script and style;
  ``/static/leaflet/...`` Leaflet from the installed ``XStatic-Leaflet``;
- ``GET /api/info``: dataset facts (version, rows, indexes, WGS84 bounds);
- ``GET /api/sources``: each source's footprint as GeoJSON;
- ``GET /api/tiles?bbox=W,S,E,N``: tiles centred in the box as GeoJSON
  (``?ungeoreferenced=true``: the tiles without a CRS, geometry null);
- ``GET /api/thumbnail/{tile_id}``: the stored JPEG thumbnail;
- ``GET /api/query``: ``ris query``'s options as parameters, the same JSON
  as ``ris query --json`` (``format=geojson|csv``: the files ``--geojson``
  and ``--csv`` write);
- ``GET /api/diff``: ``ris diff`` (``format=json|geojson|csv``).

Errors: a :class:`RisError` becomes ``{"detail": "<one line>"}`` with 404
for :class:`QueryError` (nothing found) and 400 otherwise; parameters of the
wrong type give 422 with the same one-line shape.

Token (see :func:`check_token`): when set, every request must carry it as
``Authorization: Bearer <token>``, ``?token=<token>`` or the ``ris_token``
cookie, which the app sets (HttpOnly, SameSite=Strict) on a page load that
carried the token, so the page's own assets, thumbnails and API calls
authenticate without putting it in every URL.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline

from ris_ray.core.config import METRICS
from ris_ray.core.errors import InputError, QueryError, RisError
from ris_ray.raster.geo import parse_bbox, parse_xy, ring_to_geometry, source_footprints
from ris_ray.search.export import (
    changes_csv,
    changes_geojson,
    feature_collection,
    neighbours_csv,
    neighbours_geojson,
)
from ris_ray.search.filters import SearchFilter, check_tile_id
from ris_ray.search.query import DEFAULT_ALPHA
from ris_ray.search.query import query as run_query
from ris_ray.store.schema import dataset_params
from ris_ray.web.guard import (
    LOOPBACK_NAMES,
    TOKEN_COOKIE,
    basemap_origin,
    check_token,
    guard_middleware,
    host_name,
    one_line,
)
from ris_ray.web.session import DatasetUnavailable, Session, Snapshot, filter_mask

__all__ = ["STATIC", "TOKEN_COOKIE", "check_token", "create_app"]

STATIC = Path(__file__).with_name("static")
#: Most tiles one /api/tiles answer holds (the page asks for this many).
TILE_CAP = 2000
IMMUTABLE = "public, max-age=31536000, immutable"
_TILE_PROPS = ("tile_id", "source", "row", "col", "lon", "lat")
Format = Literal["json", "geojson", "csv"]


def _download(text: str, media: str, name: str) -> Response:
    return Response(
        text, media_type=media, headers={"Content-Disposition": f'attachment; filename="{name}"'}
    )


def _as_file(data: dict[str, Any] | str, fmt: Format, name: str) -> Response:
    """The text the CLI writes for ``--geojson`` / ``--csv`` (see export.write_text)."""
    if isinstance(data, dict):
        return _download(json.dumps(data, indent=1) + "\n", "application/geo+json", name)
    return _download(data, "text/csv; charset=utf-8", name)


def _bounds(snap: Snapshot) -> list[float] | None:
    """WGS84 box around every source footprint (``None``: nothing georeferenced)."""
    rings = list(_footprints(snap).values())
    if not rings:
        return None
    lons = [x for r in rings for x, _ in r]
    lats = [y for r in rings for _, y in r]
    return [min(lons), min(lats), max(lons), max(lats)]


def _footprints(snap: Snapshot) -> dict[str, Any]:
    if "footprints" not in snap.cache:
        snap.cache["footprints"] = source_footprints(snap.ds)
    return snap.cache["footprints"]  # type: ignore[no-any-return]


def _errors(app: FastAPI) -> None:
    @app.exception_handler(RisError)
    async def ris_error(request: Request, exc: RisError) -> JSONResponse:
        status = 404 if isinstance(exc, QueryError) else 400
        if isinstance(exc, DatasetUnavailable):
            status = 503
        return JSONResponse({"detail": one_line(str(exc))}, status_code=status)

    @app.exception_handler(RequestValidationError)
    async def bad_parameter(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())[1:]) or "request"
        return JSONResponse({"detail": one_line(f"{where}: {first.get('msg', 'invalid')}")}, 422)

    @app.exception_handler(OSError)
    async def unreadable(request: Request, exc: OSError) -> JSONResponse:
        # Lance's reads of a dataset changed under the server (answer() retried once)
        return JSONResponse({"detail": one_line(f"dataset unreadable now: {exc}; retry")}, 503)


def create_app(
    db: str,
    token: str | None = None,
    *,
    check_every: float = 1.0,
    host: str = "127.0.0.1",
    basemap: str | None = None,
) -> FastAPI:
    """The app over the dataset at ``db`` (opened now: a :class:`RisError` if
    it cannot be). ``token``: require it on every request (see module doc);
    ``host``: the bound address, allowed in ``Host`` besides loopback names;
    ``basemap``: an XYZ URL template drawn under the tiles (its origin is
    allowed in the page's image policy)."""
    origin = basemap_origin(basemap) if basemap else None
    session = Session(db, check_every=check_every)
    app = FastAPIOffline(  # /docs and /redoc with their scripts served here, not from a CDN
        title="ris serve",
        description="Rapid image search: the map and its read-only API.",
        version="1",
        swagger_ui_parameters={"validatorUrl": None},  # no badge fetched from swagger.io
        redoc_url=None,  # ReDoc fetches its logo from its CDN: /docs only
    )
    app.state.session = session
    app.state.basemap = basemap
    _errors(app)
    hosts = LOOPBACK_NAMES | {host_name(host)}
    app.add_middleware(guard_middleware(token or None, hosts, origin))
    import xstatic.pkg.leaflet as leaflet

    app.mount("/static/leaflet", StaticFiles(directory=leaflet.BASE_DIR), name="leaflet")
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> Response:
        return Response(status_code=204)

    _info_routes(app, session)
    _query_routes(app, session)
    return app


def _info(app: FastAPI, snap: Snapshot) -> dict[str, Any]:
    params = dataset_params(snap.ds)
    return {
        "uri": str(snap.ds.uri),
        "version": snap.version,
        "tag": snap.tag,  # thumbnail URLs carry it: /api/thumbnail/ID?v=TAG
        "rows": snap.rows,
        "sources": sorted(snap.sources),
        "model": params.model,
        "tile_size": params.tile_size,
        "stride": params.stride,
        "indexes": {m: i for m, i in snap.indexes.items() if i},
        "bounds_wgs84": _bounds(snap),
        "basemap": app.state.basemap,
        "tile_cap": TILE_CAP,
    }


def _sources(snap: Snapshot) -> dict[str, Any]:
    rings = _footprints(snap)
    counts = snap.meta.group_by("source").aggregate([("tile_id", "count")]).to_pylist()
    features = [
        {
            "type": "Feature",
            "geometry": ring_to_geometry(rings.get(c["source"])),
            "properties": {"source": c["source"], "tiles": c["tile_id_count"]},
        }
        for c in sorted(counts, key=lambda c: str(c["source"]))
    ]
    return {"type": "FeatureCollection", "features": features}


def _tiles(snap: Snapshot, bbox: str | None, ungeoreferenced: bool, limit: int) -> dict[str, Any]:
    if ungeoreferenced:
        mask = ~(snap.lon == snap.lon)  # NaN: no georeferencing
    elif bbox is None:
        raise InputError("bbox: give W,S,E,N (or ungeoreferenced=true)")
    else:
        box = parse_bbox(bbox, "bbox")
        try:
            f = SearchFilter(bbox_wgs84=box)
        except InputError as exc:  # the filter names the CLI's option: name this parameter
            raise InputError(str(exc).replace("--bbox-wgs84", "bbox", 1)) from None
        mask = filter_mask(f, snap.sources, snap.codes, snap.lon, snap.lat)
    hits = mask.nonzero()[0] if mask is not None else np.arange(snap.rows)
    fc = feature_collection(snap.row_dicts(hits[:limit]), _TILE_PROPS)
    fc["total"] = len(hits)
    fc["truncated"] = len(hits) > limit
    return fc


def _thumbnail(snap: Snapshot, tile_id: str, v: str | None) -> Response:
    check_tile_id(tile_id, "tile_id")
    if tile_id not in snap.positions:
        raise QueryError(f"tile_id {tile_id}: not in {snap.ds.uri}")
    data = snap.thumbnail(tile_id)
    if data is None:
        raise QueryError(f"tile_id {tile_id}: has no thumbnail")
    # ?v=<this version's tag>: the URL names these bytes for good (a new
    # version has a new tag), so the browser keeps them and never asks again
    cache = IMMUTABLE if v == snap.tag else "no-cache"
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": cache})


def _info_routes(app: FastAPI, session: Session) -> None:
    @app.get("/api/info", summary="Dataset facts")
    def info() -> JSONResponse:
        return JSONResponse(session.answer(lambda snap: _info(app, snap)))

    @app.get("/api/sources", summary="Source footprints (GeoJSON)")
    def sources() -> JSONResponse:
        return JSONResponse(session.answer(_sources))

    @app.get("/api/tiles", summary="Tiles in a WGS84 box (GeoJSON)")
    def tiles(
        bbox: Annotated[str | None, Query(description="W,S,E,N in degrees")] = None,
        ungeoreferenced: Annotated[
            bool, Query(description="Instead: the tiles without a CRS")
        ] = False,
        limit: Annotated[int, Query(ge=1, le=5000)] = 500,
    ) -> JSONResponse:
        return JSONResponse(session.answer(lambda snap: _tiles(snap, bbox, ungeoreferenced, limit)))

    @app.get("/api/thumbnail/{tile_id}", summary="A tile's stored thumbnail (JPEG)")
    def thumbnail(
        tile_id: str,
        v: Annotated[str | None, Query(description="The version tag (/api/info): cached")] = None,
    ) -> Response:
        check_tile_id(tile_id, "tile_id")
        return session.answer(lambda snap: _thumbnail(snap, tile_id, v))


def _query_routes(app: FastAPI, session: Session) -> None:
    @app.get("/api/query", summary="k nearest tiles (ris query --json)")
    def query(
        tile_id: Annotated[list[str] | None, Query(description="Positive tile (repeat)")] = None,
        negatives: Annotated[
            list[str] | None, Query(alias="not", description="Negative tile (repeat)")
        ] = None,
        lonlat: Annotated[str | None, Query(description="The tile containing LON,LAT")] = None,
        k: Annotated[int, Query(le=1000)] = 10,
        metric: Annotated[str, Query(description=" | ".join(METRICS))] = "l2",
        alpha: float = DEFAULT_ALPHA,
        source: Annotated[list[str] | None, Query(description="Source glob (repeat)")] = None,
        exclude_same_source: bool = False,
        bbox_wgs84: Annotated[str | None, Query(description="W,S,E,N in degrees")] = None,
        max_distance: float | None = None,
        include_self: bool = False,
        exact: bool = False,
        seed: int | None = None,
        format: Format = "json",
    ) -> Response:
        filters = SearchFilter(
            sources=tuple(source or ()),
            bbox_wgs84=parse_bbox(bbox_wgs84, "bbox_wgs84") if bbox_wgs84 else None,
        )

        def ask(snap: Snapshot) -> Any:
            return run_query(
                session.uri,
                tile_id=tile_id,
                lonlat=parse_xy(lonlat, "lonlat") if lonlat else None,
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
                backend=snap,
            )

        result = session.answer(ask)
        if format == "geojson":
            return _as_file(neighbours_geojson(result), format, "ris-query.geojson")
        if format == "csv":
            return _as_file(neighbours_csv(result), format, "ris-query.csv")
        return JSONResponse(result.to_dict())

    @app.get("/api/diff", summary="Most changed locations (ris diff --json)")
    def diff(
        before: str,
        after: str,
        metric: str = "l2",
        top: Annotated[int, Query(ge=1, le=1_000_000)] = 10,
        format: Format = "json",
    ) -> Response:
        from ris_ray.search.diff import diff as run_diff

        result = session.answer(lambda snap: run_diff(session.uri, before, after, metric=metric))
        if format == "geojson":
            return _as_file(changes_geojson(result, top), format, "ris-diff.geojson")
        if format == "csv":
            return _as_file(changes_csv(result), format, "ris-diff.csv")
        return JSONResponse(result.to_dict(top))
