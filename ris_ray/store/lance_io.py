"""Lance datasets wherever they live: ``lance.dataset``/``write_dataset`` with
the storage options of the location.

Every Lance open and write of ris_ray goes through :func:`open_lance`,
:func:`write_lance` and :func:`commit_lance`, given a :class:`~ris_ray.core.location.Location` (or a
string, parsed once here): for ``s3://`` (and ``/vsis3/``) locations they pass
its :attr:`~ris_ray.core.location.Location.storage_options` (endpoint,
``allow_http``, region, credentials: built once per location), and turn a
store failure (unreachable endpoint, missing bucket, refused credentials) into
a one-line :class:`~ris_ray.core.errors.ObjectStoreError`. Local paths get
Lance's defaults and its errors unchanged.
"""

from __future__ import annotations

from typing import Any

from ris_ray.core.location import Location
from ris_ray.core.objstore import classify_error, describe_error

__all__ = ["commit_lance", "open_lance", "storage_options", "write_lance"]


def storage_options(where: str | Location) -> dict[str, str] | None:
    """Lance ``storage_options`` for a dataset at ``where`` (see
    :attr:`Location.storage_options`)."""
    return Location.parse(where).storage_options


def _lance_error(exc: Exception, loc: Location) -> Exception:
    """A store failure on a remote dataset as :class:`ObjectStoreError`; Lance's
    'not found' (and every local error) unchanged."""
    if not loc.is_object or "was not found" in str(exc) or classify_error(exc) is None:
        return exc
    return describe_error(exc, loc, loc.settings)


def open_lance(where: str | Location, **kwargs: Any) -> Any:
    """``lance.dataset(url, **kwargs)`` with the location's storage options.

    A missing dataset raises Lance's ``ValueError``; an unreachable endpoint,
    a missing bucket or refused credentials raise :class:`ObjectStoreError`.
    """
    import lance

    loc = Location.parse(where)
    try:
        return lance.dataset(loc.url, storage_options=loc.storage_options, **kwargs)
    except (ValueError, OSError) as exc:
        raise _lance_error(exc, loc) from None


def write_lance(data: Any, where: str | Location, **kwargs: Any) -> Any:
    """``lance.write_dataset(data, url, **kwargs)`` with the location's storage options."""
    import lance

    loc = Location.parse(where)
    try:
        return lance.write_dataset(data, loc.url, storage_options=loc.storage_options, **kwargs)
    except (ValueError, OSError) as exc:
        raise _lance_error(exc, loc) from None


def commit_lance(where: str | Location, operation: Any, **kwargs: Any) -> Any:
    """``LanceDataset.commit(url, operation, **kwargs)`` with the location's storage
    options: one transaction of fragments written elsewhere (:mod:`ris_ray.store.fragments`)."""
    from lance import LanceDataset

    loc = Location.parse(where)
    try:
        return LanceDataset.commit(
            loc.url, operation, storage_options=loc.storage_options, **kwargs
        )
    except (ValueError, OSError) as exc:
        raise _lance_error(exc, loc) from None
