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

import hmac
import json
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint

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
from ris_ray.web.session import Session, Snapshot

__all__ = ["STATIC", "TOKEN_COOKIE", "check_token", "create_app"]

STATIC = Path(__file__).with_name("static")
TOKEN_COOKIE = "ris_token"
_TILE_PROPS = ("tile_id", "source", "row", "col", "lon", "lat")
Format = Literal["json", "geojson", "csv"]


def check_token(request: Request, token: str) -> bool:
    """True when ``request`` carries ``token`` (header, ``?token=`` or cookie);
    compared in constant time."""
    auth = request.headers.get("authorization", "")
    given = [
        auth[7:] if auth[:7].lower() == "bearer " else "",
        request.query_params.get("token", ""),
        request.cookies.get(TOKEN_COOKIE, ""),
    ]
    return any(g and hmac.compare_digest(g.encode(), token.encode()) for g in given)


def _token_middleware(token: str) -> type[BaseHTTPMiddleware]:
    class TokenMiddleware(BaseHTTPMiddleware):
        async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
            if not check_token(request, token):
                return JSONResponse(
                    {"detail": "missing or wrong token: send Authorization: Bearer <token>"},
                    status_code=401,
                )
            response = await call_next(request)
            if request.url.path == "/" and "token" in request.query_params:
                response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="strict")
            return response

    return TokenMiddleware


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
        return JSONResponse({"detail": str(exc).splitlines()[0]}, status_code=status)

    @app.exception_handler(RequestValidationError)
    async def bad_parameter(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())[1:]) or "request"
        return JSONResponse({"detail": f"{where}: {first.get('msg', 'invalid')}"}, 422)


def create_app(db: str, token: str | None = None, *, check_every: float = 1.0) -> FastAPI:
    """The app over the dataset at ``db`` (opened now: a :class:`RisError` if
    it cannot be). ``token``: require it on every request (see module doc)."""
    session = Session(db, check_every=check_every)
    app = FastAPIOffline(  # /docs and /redoc with their scripts served here, not from a CDN
        title="ris serve",
        description="Rapid image search: the map and its read-only API.",
        version="1",
        swagger_ui_parameters={"validatorUrl": None},  # no badge fetched from swagger.io
        redoc_url=None,  # ReDoc fetches its logo from its CDN: /docs only
    )
    app.state.session = session
    _errors(app)
    if token:
        app.add_middleware(_token_middleware(token))
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


def _info_routes(app: FastAPI, session: Session) -> None:
    @app.get("/api/info", summary="Dataset facts")
    def info() -> JSONResponse:
        snap = session.current()
        params = dataset_params(snap.ds)
        return JSONResponse(
            {
                "uri": str(snap.ds.uri),
                "version": snap.version,
                "rows": snap.rows,
                "sources": snap.sources,
                "model": params.model,
                "tile_size": params.tile_size,
                "stride": params.stride,
                "indexes": {m: i for m, i in snap.indexes.items() if i},
                "bounds_wgs84": _bounds(snap),
            }
        )

    @app.get("/api/sources", summary="Source footprints (GeoJSON)")
    def sources() -> JSONResponse:
        snap = session.current()
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
        return JSONResponse({"type": "FeatureCollection", "features": features})

    @app.get("/api/tiles", summary="Tiles in a WGS84 box (GeoJSON)")
    def tiles(
        bbox: Annotated[str | None, Query(description="W,S,E,N in degrees")] = None,
        ungeoreferenced: Annotated[
            bool, Query(description="Instead: the tiles without a CRS")
        ] = False,
        limit: Annotated[int, Query(ge=1, le=5000)] = 500,
    ) -> JSONResponse:
        snap = session.current()
        if ungeoreferenced:
            mask = ~(snap.lon == snap.lon)  # NaN: no georeferencing
        elif bbox is None:
            raise InputError("bbox: give W,S,E,N (or ungeoreferenced=true)")
        else:
            f = SearchFilter(bbox_wgs84=parse_bbox(bbox, "bbox"))
            from ris_ray.web.session import filter_mask

            mask = filter_mask(f, snap.sources, snap.codes, snap.lon, snap.lat)
        hits = mask.nonzero()[0] if mask is not None else []
        rows = snap.row_dicts(hits[:limit])
        fc = feature_collection(rows, _TILE_PROPS)
        fc["total"] = len(hits)
        fc["truncated"] = len(hits) > limit
        return JSONResponse(fc)

    @app.get("/api/thumbnail/{tile_id}", summary="A tile's stored thumbnail (JPEG)")
    def thumbnail(tile_id: str) -> Response:
        snap = session.current()
        check_tile_id(tile_id, "tile_id")
        if tile_id not in snap.positions:
            raise QueryError(f"tile_id {tile_id}: not in {snap.ds.uri}")
        data = snap.thumbnail(tile_id)
        if data is None:
            raise QueryError(f"tile_id {tile_id}: has no thumbnail")
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "max-age=60"})


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
        snap = session.current()
        filters = SearchFilter(
            sources=tuple(source or ()),
            bbox_wgs84=parse_bbox(bbox_wgs84, "bbox_wgs84") if bbox_wgs84 else None,
        )
        result = run_query(
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

        result = run_diff(session.uri, before, after, metric=metric)
        if format == "geojson":
            return _as_file(changes_geojson(result, top), format, "ris-diff.geojson")
        if format == "csv":
            return _as_file(changes_csv(result), format, "ris-diff.csv")
        return JSONResponse(result.to_dict(top))
