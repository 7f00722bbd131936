"""Finding the GeoTIFFs a run should read."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from ris_ray.core.errors import InputError
from ris_ray.core.objstore import ObjectInfo, is_object_uri, list_tiffs, stat, to_url
from ris_ray.core.uris import is_remote

__all__ = ["TIFF_SUFFIXES", "discover", "discover_objects", "identity"]

TIFF_SUFFIXES = (".tif", ".tiff")


def _is_tiff(name: str) -> bool:
    return name.lower().endswith(TIFF_SUFFIXES)


def _objects(item: str) -> list[ObjectInfo]:
    """The objects an object-store input names: one object (a key ending in
    .tif/.tiff, HEAD), else every TIFF under it as a prefix (listing); a
    prefix without TIFFs and without a trailing ``/`` is tried as one object."""
    if _is_tiff(item) and not item.endswith("/"):
        return [stat(item)]
    found = list_tiffs(item)
    if found or item.endswith("/"):
        return found
    return [stat(item)]


def discover_objects(inputs: Iterable[str]) -> tuple[list[str], dict[str, ObjectInfo]]:
    """:func:`discover`, plus the identity (size, ETag, last-modified) of every
    object-store input it found, keyed by its ``s3://`` URI."""
    found: list[str] = []
    objects: dict[str, ObjectInfo] = {}
    for item in inputs:
        if is_object_uri(item):
            for info in _objects(item):
                objects[info.uri] = info
                found.append(info.uri)
            continue
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
    return sorted(out.values()), objects


def discover(inputs: Iterable[str]) -> list[str]:
    """Expand files, directories and object-store prefixes into a sorted,
    de-duplicated list of TIFF paths.

    Directories are searched recursively for ``.tif``/``.tiff`` in any case
    (following directory symlinks is off, to avoid cycles). Files named
    explicitly are taken whatever their suffix. Object-store URIs
    (``s3://bucket/prefix/`` or ``/vsis3/bucket/prefix/``) are listed the same
    way, recursively, and named as ``s3://bucket/key``; a key ending in
    ``.tif``/``.tiff`` is one object. Other remote URIs (``https://``,
    ``/vsicurl/``...) pass through untouched. A local path that does not exist
    raises :class:`InputError`, a missing bucket or object
    :class:`~ris_ray.core.errors.ObjectStoreError`, naming it, before any work
    starts.

    One file, one identity (:func:`identity`): a local file is stored under
    its real path (symlinks resolved, absolute), so tile ids depend neither
    on the working directory nor on the path it was reached by, and names of
    one inode (symlinks, hard links, ``a/../a``) in one run are read once,
    under the first real path in sorted order. A broken symlink keeps its
    own path (it then fails with "No such file or directory").
    """
    return discover_objects(inputs)[0]


def identity(path: str) -> tuple[object, str]:
    """``(key, stored path)`` of an input: for a local file ``((st_dev, st_ino),
    real path)``; for a remote URI its canonical form (``s3://bucket/key`` for
    ``/vsis3/`` too, else the URI); for an unresolvable local path (broken
    symlink) the link's own path in its real directory."""
    if is_remote(path):
        url = to_url(path)
        return url, url
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
