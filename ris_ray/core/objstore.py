"""Object storage: the user's AWS settings, prefix listings and object identity.

One configuration drives everything remote: the standard ``AWS_*``
environment variables a user already has (``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_REGION`` or
``AWS_DEFAULT_REGION``, and ``AWS_ENDPOINT_URL`` for S3-compatible stores)
become one frozen :class:`~ris_ray.core.s3settings.S3Settings` (re-exported
here), from which come

- :meth:`S3Settings.gdal_options`: GDAL config options for ``/vsis3/`` reads
  (``AWS_S3_ENDPOINT=host:port``, ``AWS_HTTPS=NO`` for ``http://``,
  ``AWS_VIRTUAL_HOSTING=FALSE`` for a custom endpoint); GDAL reads the
  credentials themselves from the environment, as rasterio insists;
- :meth:`S3Settings.lance_storage_options`: Lance ``storage_options``
  (``endpoint``, ``allow_http``, ``region``, credentials);
- :meth:`S3Settings.worker_env`: the ``AWS_*`` variables a Ray job's
  ``runtime_env`` may give (``jobs/``); an ingest passes the settings to its
  tasks as an argument instead (:func:`install` in the worker), so the secret
  never reaches Ray's logs (Ray's runtime-env agent logs its ``env_vars``).

Listing and HEAD go through ``obstore`` (the Python face of the Rust
``object_store`` crate Lance itself uses): :func:`list_tiffs` and
:func:`stat` return :class:`ObjectInfo` records (URI, size, ETag,
last-modified). Client errors become one-line :class:`ObjectStoreError`
messages naming the URI and the fix; they never contain a key or token.

URIs: ``s3://bucket/key`` and GDAL's ``/vsis3/bucket/key`` name the same
object (:func:`to_vsi`, :func:`to_url`); ``gs://``/``/vsigs/`` and
``az://``/``/vsiaz/`` map the same way (those stores are configured from
their own environment variables by ``object_store``; only S3 is tested).

Lance datasets on a store: :mod:`ris_ray.store.lance_io`; the writer lock of an
object-store dataset: :mod:`ris_ray.store.storelock`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ris_ray.core.errors import ObjectNotFoundError, ObjectStoreError
from ris_ray.core.location import Location
from ris_ray.core.s3settings import S3Settings, install, worker_settings

__all__ = [
    "ObjectInfo",
    "S3Settings",
    "classify_error",
    "describe_error",
    "install",
    "is_object_uri",
    "list_tiffs",
    "prefix_size",
    "split_uri",
    "stat",
    "to_url",
    "to_vsi",
    "worker_settings",
]

_TIFF_SUFFIXES = (".tif", ".tiff")
# --- URIs (kept for callers outside ris_ray; ris_ray itself carries a Location) ----------


def split_uri(uri: str | Location) -> tuple[str, str, str]:
    """``(scheme, bucket, key)`` of ``s3://bucket/key`` or ``/vsis3/bucket/key``.

    Raises :class:`ObjectStoreError` for anything that is not an object URI.
    """
    loc = Location.parse(uri)
    if not loc.is_object:
        raise ObjectStoreError(
            f"{uri}: not an object-store URI (use s3://bucket/key or /vsis3/...)"
        )
    return loc.scheme, loc.bucket, loc.key


def is_object_uri(uri: str | Location) -> bool:
    """True for ``s3://``, ``gs://``, ``az://`` URIs and their ``/vsi...`` forms."""
    return Location.parse(uri).is_object


def to_vsi(uri: str | Location) -> str:
    """``s3://b/k`` -> ``/vsis3/b/k`` (what GDAL opens); other paths pass unchanged."""
    loc = Location.parse(uri)
    return loc.vsi if loc.is_object else str(uri)


def to_url(uri: str | Location) -> str:
    """``/vsis3/b/k`` -> ``s3://b/k`` (what Lance and obstore open); others unchanged."""
    loc = Location.parse(uri)
    return loc.url if loc.is_object else str(uri)


# --- listing and identity -----------------------------------------------------------------


@dataclass(frozen=True)
class ObjectInfo:
    """One object: its ``s3://`` URI, size in bytes, ETag and last-modified time.

    The ETag changes whenever the object is replaced (even with a same-size
    object), so ``(size, etag)`` is the identity an incremental run checks.
    """

    uri: str
    size: int
    etag: str | None
    last_modified: datetime | None

    @property
    def last_modified_ns(self) -> int:
        """Last-modified as integer nanoseconds since the epoch (0 when unknown)."""
        if self.last_modified is None:
            return 0
        return int(self.last_modified.timestamp()) * 1_000_000_000 + (
            self.last_modified.microsecond * 1000
        )


def _info(scheme: str, bucket: str, meta: Mapping[str, Any]) -> ObjectInfo:
    etag = meta.get("e_tag")
    return ObjectInfo(
        uri=f"{scheme}://{bucket}/{meta['path']}",
        size=int(meta["size"]),
        etag=etag.strip('"') if isinstance(etag, str) else None,
        last_modified=meta.get("last_modified"),
    )


def _where(uri: str | Location, settings: S3Settings | None) -> Location:
    loc = Location.parse(uri, settings)
    if not loc.is_object:
        raise ObjectStoreError(
            f"{uri}: not an object-store URI (use s3://bucket/key or /vsis3/...)"
        )
    return loc


def _is_marker(loc: Location, meta: Mapping[str, Any]) -> bool:
    """A folder marker (a 0-byte key ending in ``/``, listed without its ``/``):
    an empty object whose own name does not answer a HEAD."""
    import obstore

    if int(meta["size"]) != 0:
        return False
    try:
        obstore.head(loc.store, str(meta["path"]))
    except FileNotFoundError:
        return True
    return False


def _all_objects(loc: Location) -> list[ObjectInfo]:
    """Every object under ``loc``'s prefix, folder markers left out. A key that
    obstore cannot name (``c//a.tif``, ``c/./a.tif``, legal in S3) makes its
    listing fail; the prefix is then listed by :mod:`botocore`, if installed."""
    import obstore
    from obstore.exceptions import InvalidPathError

    found: list[ObjectInfo] = []
    try:
        for chunk in obstore.list(loc.store, prefix=loc.prefix):
            found.extend(
                _info(loc.scheme, loc.bucket, meta) for meta in chunk if not _is_marker(loc, meta)
            )
    except InvalidPathError:
        if not loc.is_s3:
            raise
        return _list_with_botocore(loc)
    return found


def _list_with_botocore(loc: Location) -> list[ObjectInfo]:
    """The S3 listing of ``loc``'s prefix through botocore (keys as S3 has them)."""
    try:
        import boto3  # type: ignore[import-untyped]
    except ImportError:
        raise ObjectStoreError(
            f"{loc.url}: a key under this prefix has an empty or '.' path segment "
            "(like a//b.tif); install boto3 to list such keys, or rename them"
        ) from None
    st = loc.settings
    client = boto3.client(
        "s3",
        endpoint_url=st.endpoint,
        region_name=st.region or "us-east-1",
        aws_access_key_id=st.access_key_id,
        aws_secret_access_key=st.secret_access_key,
        aws_session_token=st.session_token,
    )
    found: list[ObjectInfo] = []
    pages = client.get_paginator("list_objects_v2").paginate(
        Bucket=loc.bucket, Prefix=loc.prefix or ""
    )
    for page in pages:
        for obj in page.get("Contents", []):
            key = str(obj["Key"])
            if key.endswith("/"):
                continue  # a folder marker
            meta = {"path": key, "size": obj["Size"], "e_tag": obj.get("ETag")}
            found.append(
                _info(loc.scheme, loc.bucket, meta | {"last_modified": obj.get("LastModified")})
            )
    return found


def list_tiffs(uri: str | Location, settings: S3Settings | None = None) -> list[ObjectInfo]:
    """Objects under the prefix ``uri`` whose names end in ``.tif``/``.tiff`` (any case).

    Recursive, sorted by URI. ``s3://b/p`` and ``s3://b/p/`` both list under
    ``p/`` (a prefix names a folder, not a key stem); ``s3://b`` lists the
    bucket. Folder markers (``p/x.tif/``) are no objects. Raises
    :class:`ObjectStoreError` naming ``uri`` when the listing fails.
    """
    loc = _where(uri, settings)
    try:
        found = [o for o in _all_objects(loc) if o.uri.lower().endswith(_TIFF_SUFFIXES)]
    except ObjectStoreError:
        raise
    except Exception as exc:
        raise describe_error(exc, loc, loc.settings) from None
    return sorted(found, key=lambda o: o.uri)


def prefix_size(uri: str | Location, settings: S3Settings | None = None) -> int:
    """Total bytes of every object under the prefix ``uri`` (one LIST per 1000 objects)."""
    loc = _where(uri, settings)
    try:
        return sum(o.size for o in _all_objects(loc))
    except ObjectStoreError:
        raise
    except Exception as exc:
        raise describe_error(exc, loc, loc.settings) from None


def stat(uri: str | Location, settings: S3Settings | None = None) -> ObjectInfo:
    """HEAD one object: its :class:`ObjectInfo`, or :class:`ObjectStoreError` naming it."""
    import obstore

    loc = _where(uri, settings)
    try:
        meta = obstore.head(loc.store, loc.key)
    except Exception as exc:
        raise describe_error(_why_refused(loc, exc), loc, loc.settings) from None
    return _info(loc.scheme, loc.bucket, meta)


def _why_refused(loc: Location, exc: Exception) -> Exception:
    """The error that says why a HEAD was refused: a 403 to a HEAD has no body,
    so wrong credentials and a missing grant look alike; a one-byte GET's
    answer names the S3 error code (``SignatureDoesNotMatch``, ``AccessDenied``)."""
    import obstore

    cause = classify_error(exc)
    if cause is None or cause[0] != "access denied":
        return exc
    try:
        obstore.get(loc.store, loc.key, options={"range": (0, 1)})
    except Exception as get_exc:
        return get_exc
    return exc


# --- errors -------------------------------------------------------------------------------

#: (markers in the client's message, what went wrong, the fix), most specific first.
_CAUSES: tuple[tuple[tuple[str, ...], str, str], ...] = (
    (
        ("NoSuchBucket", "bucket does not exist"),
        "no such bucket",
        "check the bucket name, or create it",
    ),
    (
        ("InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken"),
        "credentials rejected",
        "check AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN",
    ),
    (
        ("AccessDenied", "403 Forbidden", "PermissionDenied", "Unauthenticated"),
        "access denied",
        "grant these credentials s3:ListBucket/s3:GetObject (and s3:PutObject for --db)",
    ),
    (
        ("InvalidPath", "Could not parse path"),
        "key has an empty or '.' path segment",
        "name its prefix instead (listings read such keys), or rename it",
    ),
    (
        ("NoSuchKey", "not found", "NotFound"),
        "no such object",
        "check the key, or list the prefix",
    ),
    (
        ("error sending request", "connect", "dns error", "timed out", "Connection refused"),
        "endpoint unreachable",
        "check AWS_ENDPOINT_URL (or the network) and that the server is running",
    ),
)


def classify_error(exc: BaseException) -> tuple[str, str] | None:
    """``(cause, fix)`` for a client error, from its type and text; ``None``: not a store error."""
    text = f"{type(exc).__name__} {exc}".lower()
    if isinstance(exc, FileNotFoundError):
        text = "notfound " + text
    for markers, what, how in _CAUSES:
        if any(m.lower() in text for m in markers):
            return what, how
    return None


def describe_error(
    exc: BaseException, uri: str | Location, settings: S3Settings | None = None
) -> Exception:
    """A one-line :class:`ObjectStoreError` for a client error on ``uri``.

    Classified from the error's type and text (S3 error codes, HTTP status,
    transport failure); the message holds the URI, the cause, the endpoint and
    the fix, never the client's text (which could echo a credential).
    """
    cause, fix = classify_error(exc) or ("request failed", "check the URI and the AWS_* settings")
    where = ""
    if settings is not None and settings.endpoint:
        where = f" at {settings.endpoint}"
    message = f"{Location.parse(uri).url}: {cause}{where}; {fix}"
    if settings is not None:
        message = settings.redact(message)
    if cause == "no such object":
        return ObjectNotFoundError(message)
    return ObjectStoreError(message)
