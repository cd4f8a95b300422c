"""The HTTP side of ``dw serve``: the handshake's checks and the viewer's static files, without sockets.

Every function here takes what a request carries (its path, its headers, the peer's address) and
returns a decision; :mod:`agent.stream.server` turns a :class:`Refusal` into an HTTP response.
Order of the checks (docs/protocol.md, Access): Host (400 when missing or malformed, 403 when a
loopback-bound server is named by a foreign host: DNS rebinding), path, Origin (403), connection
caps (503 total, 429 per address), token (401 missing, 403 wrong), format (400).
"""

from __future__ import annotations

import hmac
import ipaddress
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

WS_PATH = "/ws"
WEB_DIR = Path(__file__).resolve().parent.parent / "web"  # package data of ``agent`` (pyproject: web/*)
STATIC = {"/": ("index.html", "text/html; charset=utf-8"),
          "/index.html": ("index.html", "text/html; charset=utf-8"),
          "/viewer.js": ("viewer.js", "text/javascript; charset=utf-8")}
STATIC_HEADERS = {
    "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'self'; connect-src 'self' ws: wss:; "
                               "img-src 'self' blob:; style-src 'self' 'unsafe-inline'",
}
_HOST_BAD_CHARS = frozenset(" \t\r\n/\\?#@%")


@dataclass
class Refusal(Exception):
    """A handshake refused with ``status``; ``text`` is the plain-text body."""

    status: HTTPStatus
    text: str
    headers: dict = field(default_factory=dict)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_name(value: str | None) -> str:
    """The host name in a ``Host`` header (``name``, ``name:port``, ``[v6]:port``); :class:`Refusal` 400
    when it is missing or malformed (``[``, a bad port, a path, credentials)."""
    if value is None or not value.strip():
        raise Refusal(HTTPStatus.BAD_REQUEST, "a Host header is required")
    value = value.strip()
    if len(value) > 255 or any(c in _HOST_BAD_CHARS for c in value):
        raise Refusal(HTTPStatus.BAD_REQUEST, "malformed Host header")
    try:
        parts = urlsplit(f"//{value}")
        name = parts.hostname
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number in range
    except ValueError:
        raise Refusal(HTTPStatus.BAD_REQUEST, "malformed Host header") from None
    if not name:
        raise Refusal(HTTPStatus.BAD_REQUEST, "malformed Host header")
    return name


def check_host(value: str | None, bound_host: str) -> None:
    """Against DNS rebinding: bound to a loopback address, the Host must name a loopback host."""
    name = host_name(value)
    if is_loopback(bound_host) and not is_loopback(name):
        raise Refusal(HTTPStatus.FORBIDDEN, "host not allowed")


def check_origin(origin: str | None, host: str | None, allow_origins: set[str] | frozenset[str]) -> None:
    """Browsers send ``Origin``: it must be the page's own (``http(s)://<Host>``) or an allowed one."""
    if origin is None:
        return  # non-browser clients send no Origin
    origin = origin.rstrip("/")
    if origin in allow_origins or origin in (f"http://{host}", f"https://{host}"):
        return
    raise Refusal(HTTPStatus.FORBIDDEN, "origin not allowed (same-origin or --allow-origin only)")


def token_from(authorization: str | None, query: dict[str, list[str]]) -> str | None:
    auth = authorization or ""
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip() or None
    values = query.get("token")
    return values[0] if values else None


def role_for(token: str | None, controller_token: str, viewer_token: str) -> str | None:
    """``controller``, ``viewer`` or None; both comparisons always run, in constant time."""
    if not token:
        return None
    t = token.encode()
    is_ctl = hmac.compare_digest(t, controller_token.encode())
    is_view = hmac.compare_digest(t, viewer_token.encode())
    return "controller" if is_ctl else "viewer" if is_view else None


@dataclass(frozen=True)
class Accepted:
    role: str
    format: str  # "" when the client did not ask


def check_websocket(path: str, headers, *, bound_host: str, allow_origins, controller_token: str,
                    viewer_token: str, formats: tuple[str, ...]) -> Accepted:
    """All the checks of a websocket handshake (Host already checked); :class:`Refusal` on failure."""
    parts = _split(path)
    if parts is None or parts.path != WS_PATH:
        raise Refusal(HTTPStatus.NOT_FOUND, f"the websocket endpoint is {WS_PATH}")
    check_origin(headers.get("Origin"), headers.get("Host"), allow_origins)
    query = parse_qs(parts.query)
    token = token_from(headers.get("Authorization"), query)
    if not token:
        raise Refusal(HTTPStatus.UNAUTHORIZED, "a token is required (Authorization: Bearer or ?token=)",
                      {"WWW-Authenticate": 'Bearer realm="dw"'})
    role = role_for(token, controller_token, viewer_token)
    if role is None:
        raise Refusal(HTTPStatus.FORBIDDEN, "wrong token")
    fmt = (query.get("format") or [""])[0]
    if fmt and fmt not in formats:
        raise Refusal(HTTPStatus.BAD_REQUEST, f"format must be one of {', '.join(formats)}")
    return Accepted(role, fmt)


def _split(path: str):
    """``path`` split into its parts, or None where it cannot be (``//[``: a bracket left open)."""
    try:
        return urlsplit(path)
    except ValueError:
        return None


def static_file(path: str) -> tuple[bytes, dict[str, str]]:
    """The viewer's file at ``path`` with its headers; :class:`Refusal` 404 for anything else."""
    parts = _split(path)
    entry = None if parts is None else STATIC.get(parts.path)
    if entry is None:
        raise Refusal(HTTPStatus.NOT_FOUND, "not found")
    name, ctype = entry
    body = (WEB_DIR / name).read_bytes()
    return body, {"Content-Type": ctype, "Content-Length": str(len(body)), **STATIC_HEADERS}
