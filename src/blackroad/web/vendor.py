"""The front-end libraries the desktop loads: which files of which npm packages, and where.

Only the files listed here are served out of ``node_modules``, each under a
URL carrying its package's version (``/desktop/vendor/<version>/<name>``), so
it may be cached for good. When ``node_modules`` (from ``npm ci`` in ``web/``)
is missing, the desktop runs without them: Markdown as plain text, code
unhighlighted; the first page load logs a warning saying so.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from functools import cache
from pathlib import Path

logger = logging.getLogger(__name__)

# The source tree's web/node_modules (an editable install runs from src/blackroad/web).
SOURCE_MODULES = Path(__file__).resolve().parents[3] / "web" / "node_modules"


@dataclass(frozen=True)
class VendorFile:
    """One file the desktop needs from an npm package."""

    package: str
    path: str  # inside the package


# The name the desktop asks for (api.js's ``vendor``), and the file it gets.
VENDOR_FILES: dict[str, VendorFile] = {
    "marked.js": VendorFile("marked", "lib/marked.esm.js"),
    "purify.js": VendorFile("dompurify", "dist/purify.es.mjs"),
    "highlight.js": VendorFile("@highlightjs/cdn-assets", "es/highlight.min.js"),
    "highlight-light.css": VendorFile("@highlightjs/cdn-assets", "styles/a11y-light.min.css"),
    "highlight-dark.css": VendorFile("@highlightjs/cdn-assets", "styles/a11y-dark.min.css"),
}


@dataclass(frozen=True)
class Vendored:
    """A vendor file that is installed: its version and where it lies."""

    version: str
    file: Path


def modules_dir(configured: str | None) -> Path:
    return Path(configured).expanduser() if configured else SOURCE_MODULES


@cache
def installed(modules: Path) -> dict[str, Vendored]:
    """The vendor files present under ``modules``, by name; warns once of any missing."""
    found: dict[str, Vendored] = {}
    for name, wanted in VENDOR_FILES.items():
        package = modules / wanted.package
        try:
            version = json.loads((package / "package.json").read_text())["version"]
        except (OSError, ValueError, KeyError):
            continue
        file = package / wanted.path
        if file.is_file():
            found[name] = Vendored(str(version), file)
    missing = sorted(VENDOR_FILES.keys() - found.keys())
    if missing:
        logger.warning(
            "desktop: %s not found under %s (run `npm ci` in web/, or python3 scripts/dev.py up); "
            "the desktop shows Markdown as plain text and code unhighlighted",
            ", ".join(missing),
            modules,
        )
    return found


def vendor_url(name: str, file: Vendored) -> str:
    return f"/desktop/vendor/{file.version}/{name}"
