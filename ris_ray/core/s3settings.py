"""S3 settings: the user's ``AWS_*`` variables as one frozen value.

:class:`S3Settings` gives GDAL options (:meth:`~S3Settings.gdal_options`),
Lance ``storage_options`` (:meth:`~S3Settings.lance_storage_options`), an
obstore store (:meth:`~S3Settings.object_store`) and, in a Ray worker given
them as a task argument, the process environment (:meth:`~S3Settings.install`),
so that a secret never passes through ``runtime_env`` (Ray logs its
``env_vars``). Secrets stay out of ``repr``. A :class:`~ris_ray.core.location.Location`
carries one; :mod:`ris_ray.core.objstore` lists and stats with it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ris_ray.core.errors import ObjectStoreError

if TYPE_CHECKING:
    from obstore.store import ClientConfig, RetryConfig, S3Config

__all__ = ["S3Settings", "install", "worker_settings"]

#: Environment variables :meth:`S3Settings.worker_env` forwards.
_AWS_VARS = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
)


def _first(env: Mapping[str, str], *names: str) -> str | None:
    for name in names:
        value = env.get(name, "").strip()
        if value:
            return value
    return None


@dataclass(frozen=True)
class S3Settings:
    """S3 settings from the standard ``AWS_*`` variables (secrets kept out of repr)."""

    endpoint: str | None = None
    region: str | None = None
    access_key_id: str | None = field(default=None, repr=False)
    secret_access_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> S3Settings:
        """Read ``AWS_*`` from ``env`` (default: the process environment).

        ``AWS_ENDPOINT_URL_S3`` wins over ``AWS_ENDPOINT_URL`` (as in the AWS
        CLI); ``AWS_REGION`` over ``AWS_DEFAULT_REGION``. An endpoint must be
        an ``http://`` or ``https://`` URL.
        """
        env = os.environ if env is None else env
        endpoint = _first(env, "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
        if endpoint is not None:
            parts = urlsplit(endpoint)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ObjectStoreError(
                    f"AWS_ENDPOINT_URL={endpoint}: not an http(s) URL "
                    "(set it like http://127.0.0.1:9000 or https://s3.example.com)"
                )
            endpoint = endpoint.rstrip("/")
        return cls(
            endpoint=endpoint,
            region=_first(env, "AWS_REGION", "AWS_DEFAULT_REGION"),
            access_key_id=_first(env, "AWS_ACCESS_KEY_ID"),
            secret_access_key=_first(env, "AWS_SECRET_ACCESS_KEY"),
            session_token=_first(env, "AWS_SESSION_TOKEN"),
        )

    @property
    def allow_http(self) -> bool:
        """Plain-HTTP endpoint (a local S3-compatible server)."""
        return self.endpoint is not None and self.endpoint.startswith("http://")

    def gdal_options(self) -> dict[str, str]:
        """GDAL config options for ``/vsis3/`` (pass to ``rasterio.Env``).

        Credentials are not among them: rasterio refuses them as options and
        GDAL reads ``AWS_ACCESS_KEY_ID`` etc. from the environment itself.
        """
        opts: dict[str, str] = {}
        if self.region:
            opts["AWS_REGION"] = self.region
        if self.endpoint:
            opts["AWS_S3_ENDPOINT"] = urlsplit(self.endpoint).netloc
            opts["AWS_HTTPS"] = "NO" if self.allow_http else "YES"
            opts["AWS_VIRTUAL_HOSTING"] = "FALSE"
        return opts

    def lance_storage_options(self) -> dict[str, str]:
        """Lance ``storage_options`` for ``s3://`` datasets (secrets included: never log it)."""
        opts: dict[str, str] = {}
        if self.endpoint:
            opts["endpoint"] = self.endpoint
            opts["allow_http"] = "true" if self.allow_http else "false"
        if self.region:
            opts["region"] = self.region
        if self.access_key_id:
            opts["access_key_id"] = self.access_key_id
        if self.secret_access_key:
            opts["secret_access_key"] = self.secret_access_key
        if self.session_token:
            opts["session_token"] = self.session_token
        return opts

    def install(self) -> None:
        """Make these the ``AWS_*`` variables of this process (a Ray worker given
        them as a task argument): GDAL reads credentials from the environment,
        and every :class:`Location` read here then has them."""
        wanted = {
            "AWS_ACCESS_KEY_ID": self.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
            "AWS_SESSION_TOKEN": self.session_token,
            "AWS_REGION": self.region,
            "AWS_ENDPOINT_URL": self.endpoint,
        }
        for name, value in wanted.items():
            if value and os.environ.get(name) != value:
                os.environ[name] = value
        if self.endpoint:
            os.environ.pop("AWS_ENDPOINT_URL_S3", None)

    def worker_env(self, env: Mapping[str, str] | None = None) -> dict[str, str]:
        """The ``AWS_*`` variables (set in ``env``) to give Ray workers' ``env_vars``."""
        env = os.environ if env is None else env
        return {name: env[name] for name in _AWS_VARS if env.get(name)}

    def redact(self, text: str) -> str:
        """``text`` with the secret key and session token replaced by ``***``."""
        for secret in (self.secret_access_key, self.session_token, self.access_key_id):
            if secret:
                text = text.replace(secret, "***")
        return text

    def object_store(self, scheme: str, bucket: str) -> Any:
        """An obstore store for ``bucket`` (S3 from these settings; ``gs``/``az``
        from their own environment variables)."""
        from obstore.store import S3Store, from_url

        retry: RetryConfig = {"max_retries": 2, "retry_timeout": timedelta(seconds=10)}
        client: ClientConfig = {
            "allow_http": self.allow_http,
            "connect_timeout": timedelta(seconds=5),
            "timeout": timedelta(seconds=60),
        }
        if scheme != "s3":
            return from_url(f"{scheme}://{bucket}", client_options=client, retry_config=retry)
        config: S3Config = {"region": self.region or "us-east-1"}
        if self.endpoint:
            config["endpoint"] = self.endpoint
        if self.access_key_id:
            config["access_key_id"] = self.access_key_id
        if self.secret_access_key:
            config["secret_access_key"] = self.secret_access_key
        if self.session_token:
            config["session_token"] = self.session_token
        return S3Store(bucket, config=config, client_options=client, retry_config=retry)


def install(settings: S3Settings | None) -> None:
    """:meth:`S3Settings.install` for ``settings`` when given (a task's argument)."""
    if settings is not None:
        settings.install()


def worker_settings() -> S3Settings | None:
    """This process's settings, to pass to Ray tasks as an argument (None when
    no ``AWS_*`` is set, or ``AWS_ENDPOINT_URL`` is malformed: the listing says so)."""
    try:
        settings = S3Settings.from_env()
    except ObjectStoreError:
        return None
    return settings if settings != S3Settings() else None
