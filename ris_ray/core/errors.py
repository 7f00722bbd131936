"""Exceptions raised by ris_ray.

Every class derives from :class:`RisError` *and* from the builtin that best
describes it, so callers can catch either (``except OSError`` keeps working
for I/O problems). Messages are one line, name the file or option at fault,
and say what to do about it; the CLI prints them as they are.
"""

from __future__ import annotations

__all__ = [
    "DatasetError",
    "EmbedderLostError",
    "EmbedderStartError",
    "EmbeddingError",
    "InputError",
    "LockedError",
    "ModelMismatchError",
    "ObjectNotFoundError",
    "ObjectStoreError",
    "QueryError",
    "RasterReadError",
    "RisError",
    "UnsupportedRasterError",
    "WeightsError",
]


class RisError(Exception):
    """Base class of every error ris_ray raises on purpose."""


class InputError(RisError, ValueError):
    """A user-supplied path or option is unusable (missing input, bad value)."""


class RasterReadError(RisError, OSError):
    """A raster could not be opened or a window of it could not be read."""


class UnsupportedRasterError(RisError, ValueError):
    """A raster opened fine but has a layout ris_ray refuses (dtype, band count)."""


class WeightsError(RisError, RuntimeError):
    """Model weights could not be obtained or do not fit ResNet-18."""


class EmbeddingError(RisError, ArithmeticError):
    """A forward pass produced non-finite fingerprints (NaN or infinity)."""


class EmbedderStartError(RisError, RuntimeError):
    """An embedder actor could not start (its constructor raised, e.g. no GPU memory)."""


class EmbedderLostError(RisError, ConnectionError):
    """Every embedder's node left the cluster mid-run; committed files are intact (exit 2)."""

    exit_code = 2


class DatasetError(RisError, OSError):
    """The Lance dataset is missing, unreadable or not a ris_ray dataset."""


class ModelMismatchError(RisError, ValueError):
    """A query or run would mix fingerprints of different models or tilings."""


class QueryError(RisError, LookupError):
    """A query cannot be answered (unknown tile id, empty dataset, ...)."""


class ObjectStoreError(RisError, OSError):
    """An object store (S3, ...) refused or failed a request: bucket, credentials, endpoint."""


class ObjectNotFoundError(ObjectStoreError, FileNotFoundError):
    """A named object does not exist in its bucket."""


class LockedError(RisError, BlockingIOError):
    """Another run holds the dataset's writer lock (:mod:`ris_ray.store.lock`)."""
