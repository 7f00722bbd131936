"""Checks before any work: can this run write where it was told to?

:func:`check_db` and :func:`check_report` run before Ray starts or a pixel is
read (``pipeline.ingest`` and the CLI call them first), so a read-only
``--db``, a ``--db`` that is a regular file, or a ``--report`` in a missing
directory end at once in one line naming the option, not after minutes of
tiling in a Lance traceback. "Writable" is tested by creating (and removing)
a temporary file where the run will write: that covers permissions,
read-only mounts and ACLs alike. Remote URIs are not checked here (their
credentials and permissions are the object store's business).
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

from ris_ray.core.errors import InputError, RisError
from ris_ray.core.location import Location

__all__ = ["StorageFullError", "check_db", "check_report", "is_disk_full", "nearest_dir"]


class StorageFullError(RisError, OSError):
    """The disk under ``--db`` filled up mid-run; committed data is intact (exit 2)."""

    exit_code = 2


def nearest_dir(path: Path) -> Path:
    """``path`` itself or its closest existing ancestor."""
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _writable_dir(d: Path, what: str) -> None:
    if not d.is_dir():
        raise InputError(f"{what}: {d} is not a directory")
    try:
        fd, name = tempfile.mkstemp(prefix=".ris-preflight-", dir=d)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise InputError(f"{what}: cannot write in {d} ({reason})") from None
    os.close(fd)
    os.unlink(name)


def check_db(db: str | Location) -> None:
    """``--db`` is a directory we can write in, or can be created (its nearest
    existing ancestor is a writable directory). Remote URIs pass."""
    if Location.parse(db).is_remote:
        return
    path = Path(str(db))
    if path.exists() and not path.is_dir():
        raise InputError(f"--db {db}: is a file, not a dataset directory; choose another --db")
    _writable_dir(nearest_dir(path), f"--db {db}")
    versions = path / "_versions"
    if versions.is_dir():
        _writable_dir(versions, f"--db {db}")


def check_report(report: str | Path) -> None:
    """``--report`` can be written: its directory exists and is writable, and the
    path is not a directory."""
    path = Path(report)
    if path.is_dir():
        raise InputError(f"--report {report}: is a directory; give a file path")
    if not path.parent.is_dir():
        raise InputError(
            f"--report {report}: directory {path.parent} does not exist; create it first"
        )
    _writable_dir(path.parent, f"--report {report}")


def is_disk_full(exc: BaseException) -> bool:
    """True for "no space left" / "quota exceeded", whether from the OS or from
    Lance (which reports it as text)."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(exc)
    return "No space left on device" in text or "Disk quota exceeded" in text
