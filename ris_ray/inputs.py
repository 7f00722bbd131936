"""Finding the GeoTIFFs a run should read."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from ris_ray.errors import InputError
from ris_ray.uris import is_remote

__all__ = ["TIFF_SUFFIXES", "discover", "identity"]

TIFF_SUFFIXES = (".tif", ".tiff")


def _is_tiff(name: str) -> bool:
    return name.lower().endswith(TIFF_SUFFIXES)


def discover(inputs: Iterable[str]) -> list[str]:
    """Expand files and directories into a sorted, de-duplicated list of TIFF paths.

    Directories are searched recursively for ``.tif``/``.tiff`` in any case
    (following directory symlinks is off, to avoid cycles). Files named
    explicitly are taken whatever their suffix. Remote URIs (``s3://``,
    ``/vsis3/``...) pass through untouched. A local path that does not exist
    raises :class:`InputError` naming it, before any work starts.

    One file, one identity (:func:`identity`): a local file is stored under
    its real path (symlinks resolved, absolute), so tile ids depend neither
    on the working directory nor on the path it was reached by, and names of
    one inode (symlinks, hard links, ``a/../a``) in one run are read once,
    under the first real path in sorted order. A broken symlink keeps its
    own path (it then fails with "No such file or directory").
    """
    found: list[str] = []
    for item in inputs:
        if is_remote(item):
            found.append(item)
            continue
        path = Path(item)
        if path.is_dir():
            for root, dirs, files in os.walk(path):
                dirs.sort()
                found.extend(os.path.join(root, f) for f in sorted(files) if _is_tiff(f))
        elif path.is_file() or path.is_symlink():
            found.append(str(path))
        else:
            raise InputError(f"{item}: no such file or directory")
    out: dict[object, str] = {}
    for key, stored in sorted((identity(p) for p in found), key=lambda kp: kp[1]):
        out.setdefault(key, stored)
    return sorted(out.values())


def identity(path: str) -> tuple[object, str]:
    """``(key, stored path)`` of an input: for a local file ``((st_dev, st_ino),
    real path)``; for a remote URI the URI; for an unresolvable local path
    (broken symlink) the link's own path in its real directory."""
    if is_remote(path):
        return path, path
    real = os.path.realpath(path)
    try:
        st = os.stat(real)
    except OSError:
        absolute = os.path.abspath(path)  # the link itself, in its real directory
        shown = os.path.join(
            os.path.realpath(os.path.dirname(absolute)), os.path.basename(absolute)
        )
        return shown, shown
    return (st.st_dev, st.st_ino), real
