"""One writer at a time on an object-store dataset: a lease held in a lock object.

``DB/_ris_ingest.lock`` is created with a conditional PUT (``If-None-Match:
*``; S3 since 2024, GCS, Azure and moto enforce it), so of two runs that try
at once exactly one gets it. Its body (JSON, no secret) names the holder:
host, pid, start time, the time it was last refreshed and a random token.

It is a *lease*, so a run that was killed cannot block the next nightly run
for ever:

- the holder rewrites the object every :data:`REFRESH_S` seconds from a
  daemon thread, conditionally on the ETag of its own last write
  (``If-Match``): if someone else has taken the lock over, the holder's write
  fails and it knows it lost the lease (it then never deletes the other's lock);
- a lock not refreshed for more than :data:`LEASE_S` seconds is *stale*, and so
  is one whose holder is on this host with a pid that no longer runs; a stale
  lock is taken over with a PUT conditional on the stale object's ETag, so of
  two runs that find the same stale lock only one wins;
- a live lock makes the run fail with one line naming the holder and the fix.

Staleness compares the holder's clock (written in the body) with ours:
hosts whose clocks differ by a good part of :data:`LEASE_S` could take over a
live lock; keep clocks in sync (NTP). :func:`ris_ray.store.lock.dataset_lock` is
the one entry point (it picks this lease for object-store datasets and waits
for it when asked).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import threading
import time
import uuid
from dataclasses import asdict, dataclass, replace
from types import TracebackType
from typing import Any

from ris_ray.core.errors import LockedError
from ris_ray.core.location import Location
from ris_ray.core.objstore import S3Settings, describe_error

__all__ = [
    "LEASE_S",
    "LOCK_NAME",
    "REFRESH_S",
    "Holder",
    "StoreLock",
    "acquire_lock",
    "stale_in",
]

log = logging.getLogger(__name__)

LOCK_NAME = "_ris_ingest.lock"
#: A lock whose holder has not refreshed it for longer than this is stale.
LEASE_S = 120.0
#: How often the holder refreshes its lock (well inside :data:`LEASE_S`).
REFRESH_S = 30.0


def _alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this host (signal 0 probes it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # runs, as another user
        return True
    return True


@dataclass(frozen=True)
class Holder:
    """Who holds a lock: host, pid, start and last refresh (Unix seconds), token."""

    host: str
    pid: int
    since: float
    refreshed: float
    token: str

    @classmethod
    def me(cls) -> Holder:
        now = time.time()
        return cls(socket.gethostname(), os.getpid(), now, now, uuid.uuid4().hex)

    @classmethod
    def parse(cls, body: bytes, last_modified: float) -> Holder:
        """The holder a lock body names; an unreadable body (an older ``ris``)
        counts as refreshed at the object's ``last_modified`` time."""
        try:
            data = json.loads(body)
            return cls(
                str(data["host"]),
                int(data["pid"]),
                float(data["since"]),
                float(data["refreshed"]),
                str(data["token"]),
            )
        except (ValueError, KeyError, TypeError):
            return cls("unknown host", 0, last_modified, last_modified, "")

    def to_bytes(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    def stale(self, now: float) -> bool:
        """Not refreshed for more than :data:`LEASE_S` seconds, or held by a
        process of this host that no longer runs."""
        if now - self.refreshed > LEASE_S:
            return True
        return self.host == socket.gethostname() and self.pid > 0 and not _alive(self.pid)

    def describe(self, now: float) -> str:
        since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.since))
        ago = max(0, round(now - self.refreshed))
        return f"ris on {self.host} pid {self.pid} since {since} (refreshed {ago} s ago)"


class StoreLock:
    """A held lock object; a daemon thread refreshes it every :data:`REFRESH_S` s.

    :meth:`release` stops the refreshing and deletes the object (once; later
    calls do nothing), unless another run has taken the lease over meanwhile.
    Usable as a context manager.
    """

    def __init__(self, where: str | Location, holder: Holder, etag: str | None) -> None:
        self.location = Location.parse(where)
        self.uri = self.location.url
        self.holder = holder
        self._settings = self.location.settings
        self._etag = etag
        self._held = True
        self._mutex = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._keep, name="ris-lock-lease", daemon=True)
        self._thread.start()

    @property
    def held(self) -> bool:
        """False once released, or once another run took the lease over."""
        return self._held

    def _store_key(self) -> tuple[Any, str]:
        return self.location.store, self.location.key

    def _keep(self) -> None:
        while not self._stop.wait(REFRESH_S):
            try:
                if not self.refresh():
                    return
            except Exception as exc:  # the store is unreachable for now: try again later
                log.warning("%s: lock refresh failed (%s)", self.uri, type(exc).__name__)

    def refresh(self) -> bool:
        """Rewrite the lock with a new refresh time, if it is still ours (a PUT
        conditional on our last ETag, or a plain one where the store has no
        conditional update). Returns whether we still hold it."""
        import obstore
        from obstore.exceptions import NotSupportedError, PreconditionError

        with self._mutex:
            if not self._held:
                return False
            self.holder = replace(self.holder, refreshed=time.time())
            store, key = self._store_key()
            body = self.holder.to_bytes()
            try:
                result = obstore.put(store, key, body, mode={"e_tag": self._etag})
            except PreconditionError:
                self._held = False
                log.warning("%s: another run took this lock over", self.uri)
                return False
            except NotSupportedError:
                result = obstore.put(store, key, body, mode="overwrite")
            self._etag = result["e_tag"]
            return True

    def release(self) -> None:
        """Delete the lock if it is still ours: first a PUT conditional on our
        last ETag (a lock another run took over fails it, and stays); the lock
        is then fresh, so no one takes it over before the delete. A lost lease
        is said once (a warning); a store error raises, unless another error is
        already on its way out (then it is logged: the first error is the news)."""
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join()
        with self._mutex:
            if not self._held:
                return
            self._held = False
            try:
                self._delete_if_ours()
            except Exception as exc:
                error = describe_error(exc, self.location, self._settings)
                if sys.exc_info()[1] is None:
                    raise error from None
                log.warning("%s (while releasing the lock after an earlier error)", error)

    def _delete_if_ours(self) -> None:
        import obstore
        from obstore.exceptions import NotFoundError, NotSupportedError, PreconditionError

        store, key = self._store_key()
        body = replace(self.holder, refreshed=time.time()).to_bytes()
        try:
            obstore.put(store, key, body, mode={"e_tag": self._etag})
        except (PreconditionError, NotFoundError):
            log.warning(
                "%s: another run took this lock over while this run held it (it was not "
                "refreshed for %.0f s); that run's lock was left in place",
                self.uri,
                LEASE_S,
            )
            return
        except NotSupportedError:  # no conditional update here: compare, then delete
            if obstore.head(store, key).get("e_tag") != self._etag:
                log.warning("%s: another run took this lock over; left it in place", self.uri)
                return
        obstore.delete(store, key)

    def __enter__(self) -> StoreLock:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


def _take_over(
    store: Any, key: str, uri: str, holder: Holder, stale_etag: str | None, now: float
) -> str | None:
    """Replace the stale lock whose ETag is ``stale_etag`` with ours; returns our
    ETag, or raises :class:`LockedError` when another run replaced it first."""
    import obstore
    from obstore.exceptions import NotFoundError, PreconditionError

    try:
        result = obstore.put(store, key, holder.to_bytes(), mode={"e_tag": stale_etag})
    except (PreconditionError, NotFoundError):
        raise _locked(store, key, uri, now) from None
    log.warning("%s: took over a stale lock", uri)
    return result["e_tag"]


def _locked(store: Any, key: str, uri: str, now: float) -> LockedError:
    """The one-line error for a lock held by a live run (named if readable)."""
    import obstore

    stale_s: float | None = None
    try:
        got = obstore.get(store, key)
        other = Holder.parse(bytes(got.bytes()), got.meta["last_modified"].timestamp())
        who = other.describe(now)
        stale_s = max(0.0, other.refreshed + LEASE_S - now)
    except Exception:
        who = "another run"
    error = LockedError(
        f"{uri}: held by {who}; wait for that run to finish (a lock not refreshed "
        f"for {LEASE_S:.0f} s is taken over by the next run)"
    )
    error.stale_in_s = stale_s  # type: ignore[attr-defined]
    return error


def stale_in(error: LockedError) -> str:
    """``"; stale in N s ..."`` for a refusal of :func:`_locked` (empty when unknown)."""
    stale_s = getattr(error, "stale_in_s", None)
    if stale_s is None:
        return ""
    return f"; it goes stale in {stale_s:.0f} s if its holder stops refreshing it"


def acquire_lock(
    uri: str | Location, holder: Holder | None = None, settings: S3Settings | None = None
) -> StoreLock:
    """Create the lock object ``uri`` for ``holder`` (default: this process),
    or take it over when the lock there is stale (:meth:`Holder.stale`).

    Raises :class:`~ris_ray.core.errors.LockedError` naming the lock, its holder and
    the fix while a live run holds it.
    """
    loc = Location.parse(uri, settings)
    holder = holder or Holder.me()
    try:
        etag = _acquire(loc.store, loc.key, loc.url, holder)
    except LockedError:
        raise
    except Exception as exc:
        raise describe_error(exc, loc, loc.settings) from None
    return StoreLock(loc, holder, etag)


def _acquire(store: Any, key: str, uri: str, holder: Holder) -> str | None:
    """Create the lock, or take a stale one over; our ETag. A lock released
    between our create and our read is simply created again (three tries)."""
    import obstore
    from obstore.exceptions import AlreadyExistsError, NotFoundError, PreconditionError

    for _ in range(3):
        try:
            return obstore.put(store, key, holder.to_bytes(), mode="create")["e_tag"]
        except (AlreadyExistsError, PreconditionError):
            pass
        now = time.time()
        try:
            got = obstore.get(store, key)
        except NotFoundError:
            continue
        other = Holder.parse(bytes(got.bytes()), got.meta["last_modified"].timestamp())
        if not other.stale(now):
            raise _locked(store, key, uri, now)
        return _take_over(store, key, uri, holder, got.meta["e_tag"], now)
    raise _locked(store, key, uri, time.time())
