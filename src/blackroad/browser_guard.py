"""What a web page in the user's browser could make a BlackRoad server do: nothing.

Two attacks reach a server on 127.0.0.1 from any page the user visits:

- **DNS rebinding.** A page on ``attacker.example`` re-resolves its own name to
  127.0.0.1 and then calls the server as if it were its own origin: the
  browser sends ``Host: attacker.example:11434``, and on a loopback bind
  without a key every caller is the local admin. So a server answers only the
  host names it serves (``AllowedHosts``); anything else gets 403 before any
  route runs. An IP literal is always accepted (a rebinding page is always
  reached by a name), as are ``localhost`` and its subdomains (browsers resolve
  them to loopback themselves, never through DNS), the machine's own host name,
  the bound address, and the names an admin lists
  (``BLACKROAD_ALLOWED_HOSTS``: ``name``, ``*.domain``, or ``*`` for any).
- **Cross-site simple requests.** Any page can send a ``POST`` with a form,
  ``text/plain`` or multipart body, and no CORS preflight, to any address.
  An unsafe method (anything but GET, HEAD, OPTIONS) whose ``Origin`` is not
  the server's own (or, from a browser that sends no ``Origin``, whose
  ``Sec-Fetch-Site`` is ``cross-site`` or ``same-site``) is refused with 403,
  unless it carries an ``Authorization`` header or the desktop's CSRF header.
  A browser sends either header cross-origin only after a CORS preflight that
  this server never grants, so their presence proves the request was not
  forged by another origin; whether the key or token is valid is then the
  authentication's business (``api/auth.py``).

Non-browser clients (the SDKs, curl, Open WebUI's server side) send an allowed
``Host`` and no ``Origin``, and pass untouched. ``BrowserGuard`` is plain ASGI
so that the API server and the model registry server (``blackroad registry
serve``) share it, each answering in its own error format.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from blackroad.errors import BlackRoadError, Forbidden

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Request headers a cross-origin page can send only after a CORS preflight.
VOUCHING_HEADERS = ("authorization", "x-csrf-token")
_DEFAULT_PORTS = {"http": "80", "https": "443"}
_WILDCARD_BINDS = frozenset({"0.0.0.0", "::", ""})  # noqa: S104 (names, not a bind)


def split_host(authority: str) -> tuple[str, str | None]:
    """``host[:port]`` (IPv6 in brackets) to its lower-case host and its port."""
    authority = authority.strip().lower()
    if authority.startswith("["):
        host, _, rest = authority[1:].partition("]")
        return host, rest[1:] if rest.startswith(":") else None
    host, colon, port = authority.rpartition(":")
    return (host, port) if colon and port.isdigit() else (authority, None)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class AllowedHosts:
    """The host names a server answers to (ports are not checked: the socket decides them)."""

    def __init__(self, listed: Iterable[str] = (), bound: str = "") -> None:
        names = {name.strip().lower().rstrip(".") for name in listed if name.strip()}
        self.any = "*" in names
        self.suffixes = tuple(name[1:] for name in names if name.startswith("*."))
        self.names = frozenset(
            {n for n in names if not n.startswith("*")}
            | {"localhost", socket.gethostname().lower()}
            | ({bound.lower()} if bound not in _WILDCARD_BINDS else set())
        )

    @classmethod
    def parse(cls, listed: str, bound: str = "") -> AllowedHosts:
        """From a comma-separated setting such as ``BLACKROAD_ALLOWED_HOSTS``."""
        return cls(listed.split(","), bound)

    def allows(self, authority: str) -> bool:
        host = split_host(authority)[0].rstrip(".")
        return (
            self.any
            or _is_ip(host)
            or host in self.names
            or host.endswith((".localhost", *self.suffixes))
        )


def same_origin(origin: str, host_header: str) -> bool:
    """Whether ``Origin`` names the host and port this request was sent to."""
    try:
        parts = urlsplit(origin)
    except ValueError:
        return False
    if parts.scheme not in _DEFAULT_PORTS or not parts.netloc:
        return False  # "null" (a sandboxed frame, a file), or a scheme no page of ours has
    default = _DEFAULT_PORTS[parts.scheme]
    mine, theirs = split_host(host_header), split_host(parts.netloc)
    return (mine[0], mine[1] or default) == (theirs[0], theirs[1] or default)


def forged_by_another_site(method: str, headers: Headers) -> bool:
    """Whether an unsafe request comes from a page of another origin, unvouched for."""
    if method in SAFE_METHODS or any(name in headers for name in VOUCHING_HEADERS):
        return False
    origin = headers.get("origin")
    if origin is not None:
        return not same_origin(origin, headers.get("host", ""))
    return headers.get("sec-fetch-site") in ("cross-site", "same-site")


Responder = Callable[[str, BlackRoadError], ASGIApp]


class BrowserGuard:
    """ASGI middleware: refuse foreign ``Host`` names and cross-site unsafe requests.

    ``respond(path, error)`` gives the ASGI response in the server's own error format.
    """

    def __init__(self, app: ASGIApp, hosts: AllowedHosts, respond: Responder) -> None:
        self.app = app
        self.hosts = hosts
        self.respond = respond

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            error = self.refusal(scope["method"], Headers(scope=scope))
            if error is not None:
                await self.respond(scope["path"], error)(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def refusal(self, method: str, headers: Headers) -> BlackRoadError | None:
        host = headers.get("host")
        # HTTP/1.0 may omit Host; a browser never does.
        if host is not None and not self.hosts.allows(host):
            shown = split_host(host)[0][:100]
            return Forbidden(
                f"This server does not answer to the host name {shown!r}. It answers to "
                "localhost, IP addresses, this machine's name and the names listed in "
                "BLACKROAD_ALLOWED_HOSTS (comma-separated; '*.example.org' for a domain)."
            )
        if forged_by_another_site(method, headers):
            return Forbidden(
                f"A {method} from the web page of another origin is refused (cross-site "
                "request). Call this API from a program, with an Authorization header, or "
                "from BlackRoad's own desktop."
            )
        return None
