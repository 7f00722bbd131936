"""Where a path points, for callers that hold a string: thin wrappers over
:class:`ris_ray.core.location.Location`, the one home of the "is this remote?"
rule. New code parses once with :meth:`Location.parse` and carries the value.
"""

from __future__ import annotations

from ris_ray.core.location import Location

__all__ = ["is_remote", "local_path"]


def is_remote(path: str) -> bool:
    """True for URIs (``scheme://...``) and GDAL virtual paths (``/vsi...``)."""
    return Location.parse(path).is_remote


def local_path(uri: str) -> str:
    """``uri`` as an absolute path when it is local; remote URIs pass unchanged."""
    loc = Location.parse(uri)
    return uri if loc.is_remote else loc.url
