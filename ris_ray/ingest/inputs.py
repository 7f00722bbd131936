"""Finding the GeoTIFFs a run should read."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ris_ray.core.errors import InputError
from ris_ray.core.location import Location
from ris_ray.core.objstore import ObjectInfo, list_tiffs, stat

__all__ = ["TIFF_SUFFIXES", "Scope", "discover", "discover_objects", "identity", "scopes"]

TIFF_SUFFIXES = (".tif", ".tiff")


def _is_tiff(name: str) -> bool:
    return name.lower().endswith(TIFF_SUFFIXES)


def _names_one_object(loc: Location) -> bool:
    """An object input that names one object: a key ending in .tif/.tiff (not ``/``)."""
    return not loc.names_prefix and _is_tiff(loc.key)


def _objects(loc: Location) -> list[ObjectInfo]:
    """The objects an object-store input names: one object (a key ending in
    .tif/.tiff, HEAD), else every TIFF under it as a prefix (listing; the
    bucket root for ``s3://bucket``); a prefix without TIFFs and without a
    trailing ``/`` is tried as one object."""
    if _names_one_object(loc):
        return [stat(loc)]
    found = list_tiffs(loc)
    if found or loc.names_prefix:
        return found
    return [stat(loc)]


@dataclass(frozen=True)
class Scope:
    """What one input covers, in stored form: ``url`` itself, and everything
    under ``url/`` when ``tree`` (a directory or a prefix). A run's ``--prune``
    and its "missing" report look only inside its inputs' scopes."""

    url: str
    tree: bool

    def covers(self, stored: str) -> bool:
        return stored == self.url or (self.tree and stored.startswith(self.url.rstrip("/") + "/"))


def scopes(inputs: Iterable[str | Location]) -> list[Scope]:
    """The :class:`Scope` of each input: an object input that names one object
    (``s3://b/cap/k.tif``) covers that object only, not ``cap/k.tif/inner.tif``."""
    out: list[Scope] = []
    for item in inputs:
        loc = Location.parse(item)
        if loc.is_object:
            out.append(Scope(loc.url, tree=not _names_one_object(loc)))
        elif loc.is_remote:
            out.append(Scope(loc.url, tree=False))
        else:
            out.append(Scope(os.path.realpath(loc.url), tree=True))
    return out


def discover_objects(
    inputs: Iterable[str | Location],
) -> tuple[list[str], dict[str, ObjectInfo]]:
    """:func:`discover`, plus the identity (size, ETag, last-modified) of every
    object-store input it found, keyed by its ``s3://`` URI."""
    found: list[str] = []
    objects: dict[str, ObjectInfo] = {}
    for item in inputs:
        loc = Location.parse(item)
        if loc.is_object:
            for info in _objects(loc):
                objects[info.uri] = info
                found.append(info.uri)
            continue
        if loc.is_remote:
            found.append(loc.url)
            continue
        path = Path(str(item))
        if path.is_dir():
            for root, dirs, files in os.walk(path):
                dirs.sort()
                found.extend(os.path.join(root, f) for f in sorted(files) if _is_tiff(f))
        elif path.is_file() or path.is_symlink():
            found.append(str(path))
        else:
            raise InputError(f"{item}: no such file or directory")
    out: dict[object, str] = {}
    for key, stored in sorted((_identity(p, objects) for p in found), key=lambda kp: kp[1]):
        out.setdefault(key, stored)
    return sorted(out.values()), objects


def _identity(path: str, objects: dict[str, ObjectInfo]) -> tuple[object, str]:
    return (path, path) if path in objects else identity(path)


def discover(inputs: Iterable[str | Location]) -> list[str]:
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
    loc = Location.parse(path)
    if loc.is_remote:
        return loc.url, loc.url
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
