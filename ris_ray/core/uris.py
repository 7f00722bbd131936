"""Where a path points: the local file system, or a URI / GDAL virtual path.

The one home of the "is this remote?" rule. Local paths are made absolute so
stored source paths and tile ids do not depend on the working directory;
URIs (``s3://bucket/key``, ``gs://...``, ``https://...``) and GDAL virtual
paths (``/vsis3/bucket/key``, ``/vsicurl/...``) pass unchanged.
"""

from __future__ import annotations

import os

__all__ = ["is_remote", "local_path"]


def is_remote(path: str) -> bool:
    """True for URIs (``scheme://...``) and GDAL virtual paths (``/vsi...``)."""
    return "://" in path or path.startswith("/vsi")


def local_path(uri: str) -> str:
    """``uri`` as an absolute path when it is local; remote URIs pass unchanged."""
    return uri if is_remote(uri) else os.path.abspath(uri)
