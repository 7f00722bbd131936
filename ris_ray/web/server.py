"""Run the app with uvicorn: loopback by default, a token for anything else."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

from ris_ray.core.errors import InputError

__all__ = ["TOKEN_ENV", "check_bind", "is_loopback", "serve"]

#: Environment variable read for the token when ``--token`` is not given.
TOKEN_ENV = "RIS_SERVE_TOKEN"


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(host: str, port: int, token: str | None) -> None:
    """Refuse a non-loopback ``host`` without a token, and ports outside 1-65535."""
    if not 0 < port < 65536:
        raise InputError(f"--port {port}: use 1-65535")
    if not is_loopback(host) and not token:
        raise InputError(
            f"--host {host}: serving beyond this machine needs a token "
            f"(--token or {TOKEN_ENV}); every request must then carry it"
        )


def serve(
    db: str,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    token: str | None = None,
    check_every: float = 1.0,
    basemap: str | None = None,
    announce: Callable[[str], None] | None = None,
) -> None:
    """Serve the map and API for ``db`` until interrupted; ``announce`` gets
    the URL once the dataset is loaded (the token is never part of it);
    ``basemap``: an XYZ tile URL template drawn under the data."""
    import uvicorn

    from ris_ray.web.app import create_app

    check_bind(host, port, token)
    # One BLAS thread per request: requests run side by side in uvicorn's
    # thread pool, and BLAS threads spinning on a busy machine cost more than
    # they give (a 20k-row scan: 15 ms with 2 threads under load, 1.3 with 1).
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")
    app = create_app(db, token=token or None, check_every=check_every, host=host, basemap=basemap)
    if announce is not None:
        shown = f"[{host}]" if ":" in host else host
        announce(f"http://{shown}:{port}/")
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
