"""A location is a value: a dataset or input path, parsed once.

:meth:`Location.parse` turns the text a user typed (a local path,
``s3://bucket/key``, GDAL's ``/vsis3/bucket/key``, ``gs://``/``/vsigs/``,
``az://``/``/vsiaz/``, or another remote form such as ``https://...`` or
``/vsicurl/...``) into one frozen :class:`Location` that carries

- its :attr:`~Location.kind` (:class:`Kind`: local, object store, other remote),
  its ``scheme``, ``bucket`` and ``key`` where it is an object store's;
- :attr:`~Location.url`, what Lance and obstore open (an absolute local path,
  ``s3://bucket/key``, or the remote text unchanged): the form ``ingest``
  stores as a tile's ``source``;
- :attr:`~Location.vsi`, what GDAL opens (``/vsis3/bucket/key``);
- its settings (:class:`~ris_ray.core.s3settings.S3Settings`, read from the
  ``AWS_*`` environment on first use, or given), and from them
  :attr:`~Location.storage_options` (Lance) and :attr:`~Location.gdal_options`,
  each built once per value.

Every other module takes a :class:`Location` (or parses ``str | Location``
at its boundary with :meth:`Location.parse`, which returns a Location
unchanged) and never tests the string again. The settings hold secrets: they
are never part of ``repr``/``str``, and equality ignores them. Modelled on
rasterio's ``_path.py`` (``_ParsedPath``/``_UnparsedPath``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from enum import Enum
from functools import cached_property
from typing import TYPE_CHECKING, Any

from ris_ray.core.errors import ObjectStoreError

if TYPE_CHECKING:
    from ris_ray.core.s3settings import S3Settings

__all__ = ["OBJECT_SCHEMES", "Kind", "Location"]

#: Object-store URI scheme -> GDAL virtual file system prefix.
OBJECT_SCHEMES = {"s3": "/vsis3/", "gs": "/vsigs/", "az": "/vsiaz/"}


class Kind(str, Enum):
    """Where a location points."""

    LOCAL = "local"
    OBJECT = "object"  # s3://, gs://, az:// (and their /vsi... forms)
    REMOTE = "remote"  # any other URI (https://...) or GDAL virtual path (/vsicurl/...)


def _split_object(text: str) -> tuple[str, str, str] | None:
    """``(scheme, bucket, key)`` of an object-store URI or ``/vsi`` path, else None."""
    for scheme, prefix in OBJECT_SCHEMES.items():
        for head in (prefix, f"{scheme}://"):
            if text.startswith(head):
                bucket, _, key = text[len(head) :].partition("/")
                if not bucket:
                    raise ObjectStoreError(
                        f"{text}: no bucket named (use {scheme}://bucket/key or {prefix}bucket/key)"
                    )
                return scheme, bucket, key
    return None


@dataclass(frozen=True)
class Location:
    """One parsed location (see the module docstring). Build it with :meth:`parse`."""

    kind: Kind
    #: What Lance/obstore open and ingest stores: absolute path, ``s3://b/k`` or the URI.
    url: str
    scheme: str = ""
    bucket: str = ""
    key: str = ""
    #: The text as given (``str()`` shows it: messages name what the user typed).
    text: str = field(default="", compare=False, repr=False)
    given_settings: S3Settings | None = field(default=None, compare=False, repr=False)

    @classmethod
    def parse(
        cls, text: str | os.PathLike[str] | Location, settings: S3Settings | None = None
    ) -> Location:
        """The location ``text`` names; a :class:`Location` comes back as is
        (with ``settings`` attached when given). Raises
        :class:`~ris_ray.core.errors.ObjectStoreError` for an object URI without
        a bucket."""
        if isinstance(text, Location):
            return text if settings is None else text.with_settings(settings)
        text = os.fspath(text)
        parts = _split_object(text)
        if parts is not None:
            scheme, bucket, key = parts
            url = f"{scheme}://{bucket}/{key}"
            return cls(Kind.OBJECT, url, scheme, bucket, key, text, settings)
        if "://" in text or text.startswith("/vsi"):
            scheme = (
                text[1:].partition("/")[0] if text.startswith("/vsi") else text.partition(":")[0]
            )
            return cls(Kind.REMOTE, text, scheme, text=text, given_settings=settings)
        return cls(Kind.LOCAL, os.path.abspath(text), text=text, given_settings=settings)

    def __str__(self) -> str:
        return self.text or self.url

    # --- kind ---------------------------------------------------------------------------

    @property
    def is_local(self) -> bool:
        return self.kind is Kind.LOCAL

    @property
    def is_object(self) -> bool:
        return self.kind is Kind.OBJECT

    @property
    def is_remote(self) -> bool:
        """Not on the local file system (an object store or another remote)."""
        return self.kind is not Kind.LOCAL

    @property
    def is_s3(self) -> bool:
        return self.kind is Kind.OBJECT and self.scheme == "s3"

    # --- forms --------------------------------------------------------------------------

    @property
    def vsi(self) -> str:
        """What GDAL opens: ``/vsis3/bucket/key`` for an object; else :attr:`url`."""
        if self.kind is Kind.OBJECT:
            return f"{OBJECT_SCHEMES[self.scheme]}{self.bucket}/{self.key}"
        return self.url

    @property
    def display(self) -> str:
        """The canonical form shown in reports (:attr:`url`)."""
        return self.url

    @property
    def names_prefix(self) -> bool:
        """An object location that names a folder: the bucket root or a key ending in ``/``."""
        return self.kind is Kind.OBJECT and (not self.key or self.key.endswith("/"))

    @property
    def prefix(self) -> str | None:
        """The listing prefix of an object location (``key/``; None at the bucket root)."""
        return self.key.rstrip("/") + "/" if self.key.strip("/") else None

    def join(self, name: str) -> Location:
        """The location ``name`` inside this one (e.g. a lock object of a dataset)."""
        base = self.url.rstrip("/")
        if self.kind is Kind.OBJECT:
            key = f"{self.key.rstrip('/')}/{name}" if self.key.strip("/") else name
            return replace(self, url=f"{base}/{name}", key=key, text=f"{base}/{name}")
        joined = f"{base}/{name}"
        return replace(self, url=joined, text=joined)

    # --- settings (secrets: never in repr/str) ----------------------------------------

    def with_settings(self, settings: S3Settings) -> Location:
        """This location with ``settings`` instead of the environment's."""
        return replace(self, given_settings=settings)

    @cached_property
    def settings(self) -> S3Settings:
        """The settings given at parse time, else the ``AWS_*`` environment (read once)."""
        from ris_ray.core.s3settings import S3Settings

        return self.given_settings or S3Settings.from_env()

    @cached_property
    def storage_options(self) -> dict[str, str] | None:
        """Lance ``storage_options``: the settings' for ``s3://``; None (Lance's
        defaults and environment) for anything else. Holds secrets: never log it."""
        return self.settings.lance_storage_options() if self.is_s3 else None

    @cached_property
    def gdal_options(self) -> dict[str, str]:
        """GDAL config options for ``/vsis3/`` (endpoint, https, region); {} elsewhere
        or when ``AWS_ENDPOINT_URL`` is malformed (the listing reports that)."""
        if not self.is_s3:
            return {}
        try:
            return self.settings.gdal_options()
        except ObjectStoreError:
            return {}

    @cached_property
    def store(self) -> Any:
        """The obstore store of this location's bucket (object locations only)."""
        if self.kind is not Kind.OBJECT:
            raise ObjectStoreError(f"{self}: not an object-store location")
        return self.settings.object_store(self.scheme, self.bucket)

    def __getstate__(self) -> dict[str, Any]:
        """Pickle the fields only (no cached options or store): a worker rebuilds them."""
        return {f.name: self.__dict__[f.name] for f in fields(self)}
