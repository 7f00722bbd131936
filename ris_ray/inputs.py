"""Finding the GeoTIFFs a run should read."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from ris_ray.errors import InputError
from ris_ray.uris import is_remote, local_path

__all__ = ["TIFF_SUFFIXES", "discover"]

TIFF_SUFFIXES = (".tif", ".tiff")


def _is_tiff(name: str) -> bool:
    return name.lower().endswith(TIFF_SUFFIXES)


def discover(inputs: Iterable[str]) -> list[str]:
    """Expand files and directories into a sorted, de-duplicated list of TIFF paths.

    Directories are searched recursively for ``.tif``/``.tiff`` in any case
    (following directory symlinks is off, to avoid cycles). Files named
    explicitly are taken whatever their suffix. Remote URIs (``s3://``,
    ``/vsis3/``...) pass through untouched. A local path that does not exist
    raises :class:`InputError` naming it, before any work starts. Paths are
    made absolute so tile ids do not depend on the working directory.
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
    return sorted({local_path(p) for p in found})
