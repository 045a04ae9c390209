"""Serving the desktop: the page at ``/`` for browsers, its files under ``/desktop/``.

Everything here is public (code and styles, nobody's data): what the page
shows comes from the API, authenticated as any client is. Every response
carries a strict Content-Security-Policy: scripts, styles and connections to
this origin only, nothing inline, no frames. The desktop's own files are
revalidated on each load (``no-cache`` with an ETag); vendor files carry
their package's version in the URL and are cached for a year.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import FileResponse, Response

from blackroad import __version__
from blackroad.api.state import settings
from blackroad.errors import NotFound
from blackroad.web.vendor import installed, modules_dir, vendor_url

STATIC = Path(__file__).resolve().parent / "static"
PAGE = STATIC / "index.html"

# Only these kinds of file are served; ``.js`` as text/javascript so ES modules load.
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".json": "application/json",
}
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "font-src 'self'",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}
REVALIDATE = "no-cache"
FOREVER = "public, max-age=31536000, immutable"

router = APIRouter(prefix="/desktop", include_in_schema=False)


def wants_html(request: Request) -> bool:
    """Whether ``/`` was asked for by a browser (API clients never accept text/html)."""
    return "text/html" in request.headers.get("accept", "")


def _file(request: Request, file: Path, cache_control: str) -> Response:
    """``file`` with the security headers, or 304 when the browser's copy is current."""
    response = FileResponse(
        file,
        media_type=MEDIA_TYPES[file.suffix],
        headers={**SECURITY_HEADERS, "Cache-Control": cache_control},
        stat_result=file.stat(),  # so the ETag is known here, not only when it is sent
    )
    etag = response.headers.get("etag")
    if etag is not None and request.headers.get("if-none-match") == etag:
        return Response(
            status_code=304,
            headers={**SECURITY_HEADERS, "Cache-Control": cache_control, "ETag": etag},
        )
    return response


def desktop_page(request: Request) -> Response:
    response = _file(request, PAGE, REVALIDATE)
    response.headers["Vary"] = "Accept"
    return response


@router.get("/manifest.json")
async def manifest(request: Request) -> dict[str, Any]:
    """What the shell loads: the apps' modules and the vendor files that are installed."""
    vendor = installed(modules_dir(settings(request).web_modules))
    return {
        "version": __version__,
        "apps": [f"/desktop/apps/{module.name}" for module in sorted(STATIC.glob("apps/*.js"))],
        "vendor": {name: vendor_url(name, file) for name, file in vendor.items()},
    }


@router.api_route("/vendor/{version}/{name}", methods=["GET", "HEAD"])
async def vendor_file(version: str, name: str, request: Request) -> Response:
    found = installed(modules_dir(settings(request).web_modules)).get(name)
    if found is None or found.version != version:
        raise NotFound(f"no vendor file {name!r} at version {version!r}")
    return _file(request, found.file, FOREVER)


@router.api_route("/{path:path}", methods=["GET", "HEAD"])
async def static_file(path: str, request: Request) -> Response:
    """A file of ``static/``; anything outside it, hidden, or of another kind is 404."""
    missing = NotFound(f"no desktop file {path!r}")
    try:
        file = (STATIC / path).resolve()
    except (OSError, ValueError):  # a NUL byte, a loop of links
        raise missing from None
    if (
        not file.is_relative_to(STATIC)
        or any(part.startswith(".") for part in file.relative_to(STATIC).parts)
        or file.suffix not in MEDIA_TYPES
        or not file.is_file()
    ):
        raise missing
    return _file(request, file, REVALIDATE)
