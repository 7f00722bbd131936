"""One writer at a time on an object-store dataset: a lock object made with a
conditional PUT.

``DB/_ris_ingest.lock`` is created with ``If-None-Match: *`` (S3 since 2024,
GCS, Azure and moto enforce it), so of two runs that try at once exactly one
gets it; the other fails with one line naming the holder (host, pid, start
time) and the fix. Local datasets need no lock here (:func:`dataset_lock`
returns a no-op).
"""

from __future__ import annotations

import os

from ris_ray.errors import LockedError
from ris_ray.objstore import S3Settings, describe_error, is_object_uri, split_uri, to_url

__all__ = ["LOCK_NAME", "StoreLock", "acquire_lock", "dataset_lock"]


class StoreLock:
    """A lock object created with a conditional PUT (``If-None-Match: *``).

    Holding it means no other ``ris`` run holds the same one; :meth:`release`
    deletes it (once; later calls do nothing). Its body says who holds it
    (host, pid, start time); no secret.
    """

    def __init__(self, uri: str, settings: S3Settings) -> None:
        self.uri = uri
        self._settings = settings
        self._held = True

    def release(self) -> None:
        import obstore

        if not self._held:
            return
        self._held = False
        scheme, bucket, key = split_uri(self.uri)
        try:
            obstore.delete(self._settings.object_store(scheme, bucket), key)
        except Exception as exc:
            raise describe_error(exc, self.uri, self._settings) from None


def acquire_lock(uri: str, holder: str, settings: S3Settings | None = None) -> StoreLock:
    """Create the lock object ``uri`` with body ``holder``, only if it does not exist.

    Raises :class:`~ris_ray.errors.LockedError` naming the lock, its holder and
    the fix when it exists (another run holds it, or a dead run left it).
    """
    import obstore
    from obstore.exceptions import AlreadyExistsError, PreconditionError

    settings = settings or S3Settings.from_env()
    scheme, bucket, key = split_uri(uri)
    store = settings.object_store(scheme, bucket)
    try:
        obstore.put(store, key, holder.encode(), mode="create")
    except (AlreadyExistsError, PreconditionError):
        try:
            other = bytes(obstore.get(store, key).bytes()).decode(errors="replace")
        except Exception:
            other = "unknown"
        raise LockedError(
            f"{to_url(uri)}: held by {other.strip() or 'unknown'}; wait for that run to "
            f"finish, or delete {to_url(uri)} if it is no longer running"
        ) from None
    except Exception as exc:
        raise describe_error(exc, uri, settings) from None
    return StoreLock(to_url(uri), settings)


class _NoLock:
    """What :func:`dataset_lock` returns for a local dataset (nothing to release)."""

    def release(self) -> None:
        return None


LOCK_NAME = "_ris_ingest.lock"


def dataset_lock(db: str) -> StoreLock | _NoLock:
    """The writer lock of an object-store dataset (``DB/_ris_ingest.lock``),
    held by this host and process; a no-op for local datasets."""
    if not is_object_uri(db):
        return _NoLock()
    import socket
    import time

    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    holder = f"ris on {socket.gethostname()} pid {os.getpid()} since {since}"
    return acquire_lock(f"{to_url(db).rstrip('/')}/{LOCK_NAME}", holder)
