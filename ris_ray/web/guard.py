"""What every ``ris serve`` response passes through: Host, token, headers.

:func:`guard_middleware` builds one middleware that, in this order,

- in token-less mode (loopback only, see :func:`ris_ray.web.server.check_bind`)
  refuses a ``Host`` header naming another server (DNS rebinding: a page on
  ``attacker.example`` resolving to 127.0.0.1 must not read the API): allowed
  are ``localhost``, ``127.0.0.1``, ``[::1]`` and the bound host, any port;
- with a token, refuses a request without it (:func:`check_token`) and sets
  the HttpOnly ``ris_token`` cookie on a page load that carried ``?token=``;
- adds a strict ``Content-Security-Policy`` (:func:`content_security_policy`:
  same-origin scripts and styles only, no inline script; images also from
  ``data:``/``blob:`` and the basemap's origin) and ``nosniff`` /
  ``no-referrer`` to every response, refusals included. Swagger UI's
  ``/docs`` page has one inline script: its policy allows exactly that
  script by its SHA-256 hash (computed from the page sent), nothing else.

:func:`one_line` caps text echoed back in an error (a 100 KB id must not
come back as a 100 KB body).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from urllib.parse import urlsplit

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint

from ris_ray.core.errors import InputError

__all__ = [
    "LOOPBACK_NAMES",
    "TOKEN_COOKIE",
    "basemap_origin",
    "check_token",
    "content_security_policy",
    "guard_middleware",
    "host_name",
    "one_line",
]

TOKEN_COOKIE = "ris_token"
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
DETAIL_CAP = 200
_INLINE_SCRIPT = re.compile(rb"<script>(.*?)</script>", re.S)


def one_line(text: str, cap: int = DETAIL_CAP) -> str:
    """The first line of ``text``, at most ``cap`` characters (``…`` marks a cut)."""
    line = text.splitlines()[0] if text else ""
    return line if len(line) <= cap else line[: cap - 1] + "…"


def basemap_origin(template: str) -> str:
    """``scheme://host[:port]`` of an XYZ URL template (``{z}/{x}/{y}`` placeholders);
    :class:`InputError` unless it is an http(s) URL with those placeholders."""
    parts = urlsplit(template.replace("{s}", "a"))
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise InputError(f"--basemap {one_line(template)!r}: give an http(s) URL template")
    if not all(p in template for p in ("{z}", "{x}", "{y}")):
        raise InputError(
            f"--basemap {one_line(template)!r}: the template needs {{z}}, {{x}} and {{y}}, "
            "e.g. https://tile.openstreetmap.org/{z}/{x}/{y}.png"
        )
    origin = f"{parts.scheme}://{parts.netloc}"
    return origin.replace("://a.", "://*.") if "{s}" in template else origin


def content_security_policy(
    img_origin: str | None = None, script_hashes: tuple[str, ...] = ()
) -> str:
    """The page's policy (see the module doc); ``script_hashes``: ``sha256-...`` sources."""
    scripts = " ".join(["'self'", *(f"'{h}'" for h in script_hashes)])
    images = " ".join(["'self'", "data:", "blob:", *([img_origin] if img_origin else [])])
    return (
        f"default-src 'self'; script-src {scripts}; style-src 'self'; img-src {images}; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'; "
        "form-action 'self'"
    )


def check_token(request: Request, token: str) -> bool:
    """True when ``request`` carries ``token`` (header, ``?token=`` or cookie);
    compared in constant time."""
    auth = request.headers.get("authorization", "")
    given = [
        auth[7:] if auth[:7].lower() == "bearer " else "",
        request.query_params.get("token", ""),
        request.cookies.get(TOKEN_COOKIE, ""),
    ]
    return any(g and hmac.compare_digest(g.encode(), token.encode()) for g in given)


def host_name(header: str) -> str:
    """The host of a ``Host`` header, lower case, without port or IPv6 brackets."""
    h = header.strip().lower()
    if h.startswith("["):
        return h[1 : h.find("]")] if "]" in h else h
    return h.rsplit(":", 1)[0] if h.count(":") == 1 else h


def _refuse(detail: str, status: int) -> JSONResponse:
    return JSONResponse({"detail": one_line(detail)}, status_code=status)


async def _with_script_hashes(response: Response, img_origin: str | None) -> Response:
    """``response`` (an HTML page) re-sent with its inline scripts allowed by hash."""
    body = b"".join([chunk async for chunk in response.body_iterator])  # type: ignore[attr-defined]
    hashes = tuple(
        "sha256-" + base64.b64encode(hashlib.sha256(m.group(1)).digest()).decode()
        for m in _INLINE_SCRIPT.finditer(body)
    )
    headers = {k: v for k, v in response.headers.items() if k.lower() != "content-length"}
    headers["Content-Security-Policy"] = content_security_policy(img_origin, hashes)
    return Response(body, status_code=response.status_code, headers=headers)


def guard_middleware(
    token: str | None, hosts: frozenset[str], img_origin: str | None
) -> type[BaseHTTPMiddleware]:
    """The middleware of the module doc; ``hosts``: the names allowed without a token."""
    policy = content_security_policy(img_origin)

    class Guard(BaseHTTPMiddleware):
        async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
            response = await self._answer(request, call_next)
            if request.url.path == "/docs" and response.status_code == 200:
                response = await _with_script_hashes(response, img_origin)
            else:
                response.headers["Content-Security-Policy"] = policy
            response.headers["X-Content-Type-Options"] = "nosniff"
            response.headers["Referrer-Policy"] = "no-referrer"
            return response

        async def _answer(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
            if not token:
                name = host_name(request.headers.get("host", ""))
                if name not in hosts:
                    return _refuse(
                        f"Host {name!r}: this server answers only to "
                        f"{', '.join(sorted(hosts))} (serve with --token to allow others)",
                        421,
                    )
                return await call_next(request)
            if not check_token(request, token):
                return _refuse("missing or wrong token: send Authorization: Bearer <token>", 401)
            response = await call_next(request)
            if request.url.path == "/" and "token" in request.query_params:
                response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="strict")
            return response

    return Guard
