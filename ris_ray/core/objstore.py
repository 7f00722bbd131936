"""Object storage: the user's AWS settings, prefix listings and object identity.

One configuration drives everything remote: the standard ``AWS_*``
environment variables a user already has (``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_REGION`` or
``AWS_DEFAULT_REGION``, and ``AWS_ENDPOINT_URL`` for S3-compatible stores)
become one frozen :class:`S3Settings`, from which come

- :meth:`S3Settings.gdal_options`: GDAL config options for ``/vsis3/`` reads
  (``AWS_S3_ENDPOINT=host:port``, ``AWS_HTTPS=NO`` for ``http://``,
  ``AWS_VIRTUAL_HOSTING=FALSE`` for a custom endpoint); GDAL reads the
  credentials themselves from the environment, as rasterio insists;
- :meth:`S3Settings.lance_storage_options`: Lance ``storage_options``
  (``endpoint``, ``allow_http``, ``region``, credentials);
- :meth:`S3Settings.worker_env`: the ``AWS_*`` variables to hand to Ray
  workers (job ``runtime_env``).

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

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ris_ray.core.errors import ObjectNotFoundError, ObjectStoreError
from ris_ray.core.uris import is_remote

if TYPE_CHECKING:
    from obstore.store import ClientConfig, RetryConfig, S3Config

__all__ = [
    "ObjectInfo",
    "S3Settings",
    "classify_error",
    "describe_error",
    "is_object_uri",
    "list_tiffs",
    "prefix_size",
    "split_uri",
    "stat",
    "to_url",
    "to_vsi",
]

#: URI scheme <-> GDAL virtual file system prefix.
_VSI = {"s3": "/vsis3/", "gs": "/vsigs/", "az": "/vsiaz/"}
_TIFF_SUFFIXES = (".tif", ".tiff")
#: Environment variables :meth:`S3Settings.worker_env` forwards.
_AWS_VARS = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
)


# --- URIs ---------------------------------------------------------------------------------


def split_uri(uri: str) -> tuple[str, str, str]:
    """``(scheme, bucket, key)`` of ``s3://bucket/key`` or ``/vsis3/bucket/key``.

    Raises :class:`ObjectStoreError` for anything that is not an object URI.
    """
    for scheme, prefix in _VSI.items():
        if uri.startswith(prefix):
            bucket, _, key = uri[len(prefix) :].partition("/")
            return scheme, bucket, key
        if uri.startswith(f"{scheme}://"):
            bucket, _, key = uri[len(scheme) + 3 :].partition("/")
            return scheme, bucket, key
    raise ObjectStoreError(f"{uri}: not an object-store URI (use s3://bucket/key or /vsis3/...)")


def is_object_uri(uri: str) -> bool:
    """True for ``s3://``, ``gs://``, ``az://`` URIs and their ``/vsi...`` forms."""
    if not is_remote(uri):
        return False
    return any(uri.startswith((f"{s}://", p)) for s, p in _VSI.items())


def to_vsi(uri: str) -> str:
    """``s3://b/k`` -> ``/vsis3/b/k`` (what GDAL opens); other paths pass unchanged."""
    if not is_object_uri(uri):
        return uri
    scheme, bucket, key = split_uri(uri)
    return f"{_VSI[scheme]}{bucket}/{key}"


def to_url(uri: str) -> str:
    """``/vsis3/b/k`` -> ``s3://b/k`` (what Lance and obstore open); others unchanged."""
    if not is_object_uri(uri):
        return uri
    scheme, bucket, key = split_uri(uri)
    return f"{scheme}://{bucket}/{key}"


# --- settings -----------------------------------------------------------------------------


def _first(env: Mapping[str, str], *names: str) -> str | None:
    for name in names:
        value = env.get(name, "").strip()
        if value:
            return value
    return None


@dataclass(frozen=True)
class S3Settings:
    """S3 settings from the standard ``AWS_*`` variables (secrets kept out of repr)."""

    endpoint: str | None = None
    region: str | None = None
    access_key_id: str | None = field(default=None, repr=False)
    secret_access_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> S3Settings:
        """Read ``AWS_*`` from ``env`` (default: the process environment).

        ``AWS_ENDPOINT_URL_S3`` wins over ``AWS_ENDPOINT_URL`` (as in the AWS
        CLI); ``AWS_REGION`` over ``AWS_DEFAULT_REGION``. An endpoint must be
        an ``http://`` or ``https://`` URL.
        """
        env = os.environ if env is None else env
        endpoint = _first(env, "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
        if endpoint is not None:
            parts = urlsplit(endpoint)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ObjectStoreError(
                    f"AWS_ENDPOINT_URL={endpoint}: not an http(s) URL "
                    "(set it like http://127.0.0.1:9000 or https://s3.example.com)"
                )
            endpoint = endpoint.rstrip("/")
        return cls(
            endpoint=endpoint,
            region=_first(env, "AWS_REGION", "AWS_DEFAULT_REGION"),
            access_key_id=_first(env, "AWS_ACCESS_KEY_ID"),
            secret_access_key=_first(env, "AWS_SECRET_ACCESS_KEY"),
            session_token=_first(env, "AWS_SESSION_TOKEN"),
        )

    @property
    def allow_http(self) -> bool:
        """Plain-HTTP endpoint (a local S3-compatible server)."""
        return self.endpoint is not None and self.endpoint.startswith("http://")

    def gdal_options(self) -> dict[str, str]:
        """GDAL config options for ``/vsis3/`` (pass to ``rasterio.Env``).

        Credentials are not among them: rasterio refuses them as options and
        GDAL reads ``AWS_ACCESS_KEY_ID`` etc. from the environment itself.
        """
        opts: dict[str, str] = {}
        if self.region:
            opts["AWS_REGION"] = self.region
        if self.endpoint:
            opts["AWS_S3_ENDPOINT"] = urlsplit(self.endpoint).netloc
            opts["AWS_HTTPS"] = "NO" if self.allow_http else "YES"
            opts["AWS_VIRTUAL_HOSTING"] = "FALSE"
        return opts

    def lance_storage_options(self) -> dict[str, str]:
        """Lance ``storage_options`` for ``s3://`` datasets (secrets included: never log it)."""
        opts: dict[str, str] = {}
        if self.endpoint:
            opts["endpoint"] = self.endpoint
            opts["allow_http"] = "true" if self.allow_http else "false"
        if self.region:
            opts["region"] = self.region
        if self.access_key_id:
            opts["access_key_id"] = self.access_key_id
        if self.secret_access_key:
            opts["secret_access_key"] = self.secret_access_key
        if self.session_token:
            opts["session_token"] = self.session_token
        return opts

    def worker_env(self, env: Mapping[str, str] | None = None) -> dict[str, str]:
        """The ``AWS_*`` variables (set in ``env``) to give Ray workers' ``env_vars``."""
        env = os.environ if env is None else env
        return {name: env[name] for name in _AWS_VARS if env.get(name)}

    def redact(self, text: str) -> str:
        """``text`` with the secret key and session token replaced by ``***``."""
        for secret in (self.secret_access_key, self.session_token, self.access_key_id):
            if secret:
                text = text.replace(secret, "***")
        return text

    def object_store(self, scheme: str, bucket: str) -> Any:
        """An obstore store for ``bucket`` (S3 from these settings; ``gs``/``az``
        from their own environment variables)."""
        from obstore.store import S3Store, from_url

        retry: RetryConfig = {"max_retries": 2, "retry_timeout": timedelta(seconds=10)}
        client: ClientConfig = {
            "allow_http": self.allow_http,
            "connect_timeout": timedelta(seconds=5),
            "timeout": timedelta(seconds=60),
        }
        if scheme != "s3":
            return from_url(f"{scheme}://{bucket}", client_options=client, retry_config=retry)
        config: S3Config = {"region": self.region or "us-east-1"}
        if self.endpoint:
            config["endpoint"] = self.endpoint
        if self.access_key_id:
            config["access_key_id"] = self.access_key_id
        if self.secret_access_key:
            config["secret_access_key"] = self.secret_access_key
        if self.session_token:
            config["session_token"] = self.session_token
        return S3Store(bucket, config=config, client_options=client, retry_config=retry)


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


def list_tiffs(uri: str, settings: S3Settings | None = None) -> list[ObjectInfo]:
    """Objects under the prefix ``uri`` whose names end in ``.tif``/``.tiff`` (any case).

    Recursive, sorted by URI. ``s3://b/p`` and ``s3://b/p/`` both list under
    ``p/`` (a prefix names a folder, not a key stem). Raises
    :class:`ObjectStoreError` naming ``uri`` when the listing fails.
    """
    import obstore

    settings = settings or S3Settings.from_env()
    scheme, bucket, key = split_uri(uri)
    prefix = key.rstrip("/") + "/" if key.strip("/") else None
    store = settings.object_store(scheme, bucket)
    found: list[ObjectInfo] = []
    try:
        for chunk in obstore.list(store, prefix=prefix):
            found.extend(
                _info(scheme, bucket, meta)
                for meta in chunk
                if str(meta["path"]).lower().endswith(_TIFF_SUFFIXES)
            )
    except Exception as exc:
        raise describe_error(exc, uri, settings) from None
    return sorted(found, key=lambda o: o.uri)


def prefix_size(uri: str, settings: S3Settings | None = None) -> int:
    """Total bytes of every object under the prefix ``uri`` (one LIST per 1000 objects)."""
    import obstore

    settings = settings or S3Settings.from_env()
    scheme, bucket, key = split_uri(uri)
    prefix = key.rstrip("/") + "/" if key.strip("/") else None
    try:
        return sum(
            int(meta["size"])
            for chunk in obstore.list(settings.object_store(scheme, bucket), prefix=prefix)
            for meta in chunk
        )
    except Exception as exc:
        raise describe_error(exc, uri, settings) from None


def stat(uri: str, settings: S3Settings | None = None) -> ObjectInfo:
    """HEAD one object: its :class:`ObjectInfo`, or :class:`ObjectStoreError` naming it."""
    import obstore

    settings = settings or S3Settings.from_env()
    scheme, bucket, key = split_uri(uri)
    try:
        meta = obstore.head(settings.object_store(scheme, bucket), key)
    except Exception as exc:
        raise describe_error(exc, uri, settings) from None
    return _info(scheme, bucket, meta)


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


def describe_error(exc: BaseException, uri: str, settings: S3Settings | None = None) -> Exception:
    """A one-line :class:`ObjectStoreError` for a client error on ``uri``.

    Classified from the error's type and text (S3 error codes, HTTP status,
    transport failure); the message holds the URI, the cause, the endpoint and
    the fix, never the client's text (which could echo a credential).
    """
    cause, fix = classify_error(exc) or ("request failed", "check the URI and the AWS_* settings")
    where = ""
    if settings is not None and settings.endpoint:
        where = f" at {settings.endpoint}"
    message = f"{to_url(uri)}: {cause}{where}; {fix}"
    if settings is not None:
        message = settings.redact(message)
    if cause == "no such object":
        return ObjectNotFoundError(message)
    return ObjectStoreError(message)
