"""The one way to open a raster: GDAL settings, non-UTF-8 names, one-line errors.

Every module that reads pixels or headers (tiling, geo's bbox lookups, image
queries) opens files through :func:`open_raster`, so they share the GDAL
block cache setting, the handling of file names that are not valid UTF-8
(opened by descriptor) and the error message style. Objects in a store
(``s3://bucket/key``) are opened as GDAL's ``/vsis3/bucket/key`` with GDAL
options from the user's ``AWS_*`` settings (endpoint, https, region), and
:func:`file_identity` is the one stat of a source file, local or remote.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator
from typing import Any

import rasterio
from rasterio.errors import NodataShadowWarning, NotGeoreferencedWarning

from ris_ray.core.errors import ObjectStoreError, RasterReadError
from ris_ray.core.location import Location
from ris_ray.core.objstore import stat as stat_object
from ris_ray.core.records import FileIdent

__all__ = [
    "GDAL_ENV",
    "display_path",
    "file_identity",
    "gdal_env",
    "gdal_reason",
    "open_raster",
]

# Rasterio/GDAL settings for our reads: a modest block cache per process.
GDAL_ENV = {"GDAL_CACHEMAX": 256, "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR"}


def display_path(path: str) -> str:
    """``path`` as valid UTF-8 text for storage and messages.

    File names that are not UTF-8 reach Python with surrogate escapes, which
    Arrow strings cannot hold; their raw bytes are shown as ``\\xNN``.
    Valid names pass unchanged.
    """
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def gdal_reason(exc: BaseException) -> str:
    """The most specific message in a rasterio/GDAL exception chain (GDAL puts
    the useful text, e.g. 'got 0 bytes, expected 786432', in the causes)."""
    messages: list[str] = []
    seen: BaseException | None = exc
    while seen is not None and len(messages) < 8:
        text = str(seen).splitlines()[0].strip() if str(seen) else ""
        if text and "See previous exception" not in text:
            messages.append(text)
        seen = seen.__cause__ or seen.__context__
    return messages[-1] if messages else type(exc).__name__


def file_identity(path: str | Location) -> FileIdent | None:
    """The identity of a source file: ``(size, mtime_ns, None)`` of a local
    file, ``(size, last_modified_ns, etag)`` of a store object (one HEAD);
    ``None`` for other remote paths (``/vsicurl/``, ``https://``: nothing to
    compare, they are read on every run). Raises :class:`RasterReadError`
    naming the file when it is missing or unreachable."""
    loc = Location.parse(path)
    if loc.is_object:
        try:
            obj = stat_object(loc)
        except ObjectStoreError as exc:
            raise RasterReadError(str(exc)) from None
        return FileIdent(obj.size, obj.last_modified_ns, obj.etag)
    if loc.is_remote:
        return None
    try:
        st = os.stat(str(path))
    except OSError as exc:
        raise RasterReadError(f"{display_path(str(path))}: {exc.strerror or exc}") from None
    return FileIdent(st.st_size, st.st_mtime_ns)


@contextlib.contextmanager
def gdal_env(location: Location | None = None) -> Iterator[None]:
    """Our GDAL settings (plus the ``/vsis3/`` options of ``location``, see
    :attr:`Location.gdal_options`), minus the rasterio warnings we handle
    ourselves (missing georeferencing becomes null columns; nodata beside
    alpha is fine)."""
    remote = location.gdal_options if location is not None else {}
    with rasterio.Env(**GDAL_ENV, **remote), warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        warnings.simplefilter("ignore", NodataShadowWarning)
        yield


@contextlib.contextmanager
def open_raster(path: str | Location) -> Iterator[Any]:
    """Open ``path`` with rasterio, raising :class:`RasterReadError` naming it.

    GDAL takes UTF-8 paths only; a local file whose name is not valid UTF-8
    is opened by descriptor (``/proc/self/fd/N``) instead; ``s3://bucket/key``
    as ``/vsis3/bucket/key``. The dataset is used under :func:`gdal_env`'s
    settings.
    """
    fd = None
    loc = Location.parse(path)
    path = str(path)
    target = loc.vsi if loc.is_remote else path  # s3://b/k -> /vsis3/b/k (not boto3's s3://)
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError as exc:
            raise RasterReadError(f"{display_path(path)}: {exc.strerror or exc}") from None
        target = f"/proc/self/fd/{fd}"
    try:
        with gdal_env(loc):
            try:
                src = rasterio.open(target)
            except rasterio.RasterioIOError as exc:
                msg = gdal_reason(exc).replace(target, "").strip(" :") or type(exc).__name__
                raise RasterReadError(
                    f"{display_path(path)}: cannot open as a raster ({msg})"
                ) from None
            with src:
                yield src
    finally:
        if fd is not None:
            os.close(fd)
