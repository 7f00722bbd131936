"""Lance datasets wherever they live: ``lance.dataset``/``write_dataset`` with
the storage options of the URI.

Every Lance open and write of ris_ray goes through :func:`open_lance` and
:func:`write_lance`: for ``s3://`` (and ``/vsis3/``) URIs they pass
:meth:`~ris_ray.core.objstore.S3Settings.lance_storage_options` from the user's
``AWS_*`` variables (endpoint, ``allow_http``, region, credentials), and turn
a store failure (unreachable endpoint, missing bucket, refused credentials)
into a one-line :class:`~ris_ray.core.errors.ObjectStoreError`. Local paths get
Lance's defaults and its errors unchanged.
"""

from __future__ import annotations

from typing import Any

from ris_ray.core.objstore import (
    S3Settings,
    classify_error,
    describe_error,
    is_object_uri,
    split_uri,
    to_url,
)

__all__ = ["open_lance", "storage_options", "write_lance"]


def storage_options(uri: str) -> dict[str, str] | None:
    """Lance ``storage_options`` for a dataset at ``uri``.

    The :class:`S3Settings` options for ``s3://`` (and ``/vsis3/``) URIs;
    ``None`` (Lance's own defaults and environment) for anything else.
    """
    if not is_object_uri(uri) or split_uri(uri)[0] != "s3":
        return None
    return S3Settings.from_env().lance_storage_options()


def _lance_error(exc: Exception, uri: str) -> Exception:
    """A store failure on a remote dataset as :class:`ObjectStoreError`; Lance's
    'not found' (and every local error) unchanged."""
    if not is_object_uri(uri) or "was not found" in str(exc) or classify_error(exc) is None:
        return exc
    return describe_error(exc, uri, S3Settings.from_env())


def open_lance(uri: str, **kwargs: Any) -> Any:
    """``lance.dataset(uri, **kwargs)`` with :func:`storage_options` for ``uri``.

    A missing dataset raises Lance's ``ValueError``; an unreachable endpoint,
    a missing bucket or refused credentials raise :class:`ObjectStoreError`.
    """
    import lance

    try:
        return lance.dataset(to_url(uri), storage_options=storage_options(uri), **kwargs)
    except (ValueError, OSError) as exc:
        raise _lance_error(exc, uri) from None


def write_lance(data: Any, uri: str, **kwargs: Any) -> Any:
    """``lance.write_dataset(data, uri, **kwargs)`` with :func:`storage_options` for ``uri``."""
    import lance

    try:
        return lance.write_dataset(
            data, to_url(uri), storage_options=storage_options(uri), **kwargs
        )
    except (ValueError, OSError) as exc:
        raise _lance_error(exc, uri) from None
