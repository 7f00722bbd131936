"""One writer per dataset: a lock held for a whole ingest, compaction or index build.

Two ingests into one dataset would each count a file's rows and append it
(and two creating a new dataset race on ``Dataset already exists``). The
lock makes the second writer wait up to ``wait_s`` seconds and then refuse
with one line naming the holder, before it reads a pixel.
:meth:`ris_ray.store.tilestore.TileStore.for_writing` takes it (ingest via
``TileStore.for_ingest``, ``ris compact``, ``ris index``) and
``TileStore.close`` releases it; readers (queries, ``ris serve``) never do.

Local datasets: ``DB.lock`` beside the dataset directory (the dataset may
not exist yet), locked with ``fcntl.flock``; it holds the holder's pid, host
and start time, which a refusal quotes. The holder removes it on release
(while still holding the lock; a waiter that locked the removed file notices
by inode and retries). The kernel drops a flock when its holder dies,
however it dies, so the lock of a killed process is never in the way (no
stale lock to break by hand; its file is reused and removed by the next run).

Object-store datasets (``s3://``, ``gs://``, ``az://`` and their ``/vsi...``
forms): the lease ``DB/_ris_ingest.lock`` of :mod:`ris_ray.store.storelock` (created
with a conditional put, refreshed while held, taken over once stale, so a
killed run does not block the next one for long); waiting polls it every
:data:`LEASE_POLL_S` seconds up to ``wait_s``. Other remote URIs get a
no-op lock (nothing there to lock with). Either way the refusal is one
:class:`~ris_ray.core.errors.LockedError` line naming the holder and the fix.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from ris_ray.core.errors import LockedError
from ris_ray.core.location import Location
from ris_ray.store.storelock import LOCK_NAME, StoreLock, acquire_lock, stale_in

__all__ = ["LeaseLock", "LocalLock", "NoLock", "dataset_lock", "lock_path"]

#: How often a waiting writer retries a local lock (seconds).
POLL_S = 0.25
#: How often a waiting writer retries an object-store lease (one GET + PUT each).
LEASE_POLL_S = 2.0


def lock_path(db: str | Location) -> Path:
    """``DB.lock`` beside a local dataset directory."""
    return Path(f"{Location.parse(db).url.rstrip('/')}.lock")


class LocalLock:
    """An exclusive ``flock`` on :func:`lock_path` (see the module docstring)."""

    def __init__(self, db: str | Location, wait_s: float = 0.0) -> None:
        self.db = str(db)
        self.path = lock_path(db)
        self.wait_s = wait_s
        self._fd: int | None = None

    def holder(self) -> str:
        """Who holds (or last held) the lock, as the lock file says."""
        try:
            info = json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            return "another process"
        return f"pid {info.get('pid')} on {info.get('host')} since {info.get('since')}"

    def __enter__(self) -> LocalLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + self.wait_s
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                if time.monotonic() >= deadline:
                    raise LockedError(
                        f"--db {self.db}: another ris ingest, compact or index is writing it "
                        f"({self.holder()}); wait for it to finish, then re-run"
                    ) from None
                time.sleep(POLL_S)
                continue
            if self._same_file(fd):
                break
            os.close(fd)  # the holder removed the file as we locked it: lock the new one
        self._fd = fd
        since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        info = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": since})
        with contextlib.suppress(OSError):  # who holds it is a courtesy (e.g. a full disk)
            os.ftruncate(fd, 0)
            os.pwrite(fd, info.encode(), 0)
        return self

    def _same_file(self, fd: int) -> bool:
        try:
            return os.stat(self.path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            return False

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._fd is not None:
            self.path.unlink(missing_ok=True)  # still locked: nothing is left behind
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


class LeaseLock:
    """An object-store dataset's lease (:func:`ris_ray.store.storelock.acquire_lock` on
    ``DB/_ris_ingest.lock``), retried every :data:`LEASE_POLL_S` s for up to
    ``wait_s`` while another run holds it."""

    def __init__(
        self, db: str | Location, wait_s: float = 0.0, say: Callable[[str], None] | None = None
    ) -> None:
        self.location = Location.parse(db).join(LOCK_NAME)
        self.uri = self.location.url
        self.wait_s = wait_s
        self.say = say or _stderr
        self._lease: StoreLock | None = None

    def __enter__(self) -> StoreLock:
        deadline = time.monotonic() + self.wait_s
        told = False
        while True:
            try:
                self._lease = acquire_lock(self.location)
                return self._lease
            except LockedError as exc:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise
                if not told:  # once, at once: who holds it, and when it goes stale
                    told = True
                    self.say(
                        f"{exc.args[0].split(';')[0]}; waiting up to {left:.0f} s{stale_in(exc)}"
                    )
                time.sleep(min(LEASE_POLL_S, left))

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        lease, self._lease = self._lease, None
        if lease is not None:
            lease.release()


class NoLock:
    """Remote datasets outside an object store: nothing to lock with."""

    def __enter__(self) -> NoLock:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def dataset_lock(db: str | Location, wait_s: float = 0.0) -> LocalLock | LeaseLock | NoLock:
    """The writer lock for ``db``, taken on ``with`` (waiting up to ``wait_s``
    seconds, then :class:`~ris_ray.core.errors.LockedError`): a :class:`LocalLock`
    for local paths, a :class:`LeaseLock` for object-store URIs, else :class:`NoLock`."""
    loc = Location.parse(db)
    if loc.is_object:
        return LeaseLock(loc, wait_s)
    return NoLock() if loc.is_remote else LocalLock(loc, wait_s)
