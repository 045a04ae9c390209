"""Secrets kept out of the audit log: what counts as one, and a request body without them.

The rule is by name, over the parsed JSON of a body, so it covers every route,
today's and any added later, with no list of routes to keep up to date:

- a field named like a secret (``password``, ``token``, ``key``, ``api_key``,
  ``X-Auth-Token``, ``clientSecret``, ``credential``, ``authorization``,
  ``cookie``...: ``is_secret_name``) has its value replaced by ``<redacted>``,
  whatever the value is (a string, a number, an object);
- a field that holds named values which are secrets by nature (``headers``,
  ``env``, ``cookies``: ``CONTAINERS``) keeps the names and loses every value;
- in any string: a URL's password (``https://user:pass@host``) and secret
  query parameters (``?api_key=``), a bearer token, and BlackRoad's own
  secrets (``br-``, ``brj-``, ``brn-``) are replaced;
- in a list of strings (a command line, an MCP server's ``args``):
  ``--secret-name=value``, the value after ``--secret-name``, and
  ``SECRET_NAME=value`` lose their values.

``redact`` answers the redacted value and the secret texts it removed, so that
an error message that quoted one (a validation error echoing a field) can be
scrubbed of it (``scrub``). ``audit/capture.py`` applies all this to every
audited request body; ``cli/audit.py`` to the command lines it records.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from typing import Any

REDACTED = "<redacted>"
# A name is split into words (snake_case, kebab-case, camelCase, dots); it is a
# secret's if one of its words is one of these. "tokens" (a count) is not "token".
SECRET_WORDS = frozenset(
    {
        "password", "passwd", "passphrase", "pass", "pwd", "secret", "secrets", "token",
        "credential", "credentials", "key", "apikey", "accesskey", "privatekey", "secretkey",
        "authorization", "auth", "bearer", "cookie", "csrf", "signature", "otp", "jwt",
    }
)  # fmt: skip
# Run-together words ending so ("authtoken", "clientsecret") are secrets' names too.
SECRET_SUFFIXES = ("password", "passwd", "passphrase", "secret", "token", "apikey", "credential")
# Fields whose every value is a secret by nature: names kept, values redacted.
CONTAINERS = frozenset({"headers", "header", "env", "environ", "environment", "cookies"})
# A secret shorter than this is not searched for in other texts: it would match
# ordinary words of an error message, and such a short one protects nothing.
MIN_SCRUBBED = 4

_CAMEL = re.compile(r"([a-z0-9])([A-Z])")
_WORDS = re.compile(r"[^a-z0-9]+")
_URL_PASSWORD = re.compile(r"(://[^\s/@:]*):[^\s/@]*@")  # from "://": a scan, no backtracking
_BEARER = re.compile(r"(?i)\b(bearer\s+)[^\s\"',;]+")
_OWN_SECRET = re.compile(r"br[jn]?-[A-Za-z0-9_-]{16,}")  # a literal start: a fast scan
_QUERY_PARAMETER = re.compile(r"([?&;])([^=&#\s]+)=([^&#\s]*)")


def _words(name: str) -> list[str]:
    return [word for word in _WORDS.split(_CAMEL.sub(r"\1_\2", name).lower()) if word]


def is_secret_name(name: str) -> bool:
    """Whether a field (or option, or variable) of this name holds a secret."""
    return any(word in SECRET_WORDS or word.endswith(SECRET_SUFFIXES) for word in _words(name))


def is_container_name(name: str) -> bool:
    """Whether a field of this name holds named values that are all secrets (headers, env)."""
    return "".join(_words(name)) in CONTAINERS


def is_secret_path(parts: Iterable[str | int]) -> bool:
    """Whether a field at this path (``headers.Authorization``, ``users[0].password``) is secret."""
    return any(
        isinstance(part, str) and (is_secret_name(part) or is_container_name(part))
        for part in parts
    )


def _query_parameter(match: re.Match[str]) -> str:
    separator, name, value = match.groups()
    return f"{separator}{name}={REDACTED if is_secret_name(name) and value else value}"


def redact_text(text: str) -> str:
    """``text`` with URL passwords, secret query parameters (``?api_key=``), bearer tokens
    and BlackRoad secrets replaced."""
    # Each pattern only where a cheap test says it may match: a prompt may be megabytes.
    text = _URL_PASSWORD.sub(rf"\1:{REDACTED}@", text)
    if "=" in text:
        text = _QUERY_PARAMETER.sub(_query_parameter, text)
    if "bearer" in text.lower():
        text = _BEARER.sub(rf"\1{REDACTED}", text)
    return _OWN_SECRET.sub(REDACTED, text)


def _option_name(word: str) -> str | None:
    """The name of a command-line option (``--api-key``, ``-token``); None for a value."""
    stripped = word.lstrip("-")
    return stripped if word.startswith("-") and stripped else None


def redact_command_line(words: Sequence[str]) -> tuple[list[str], list[str]]:
    """A command line's words with secret options' values redacted; and those values.

    ``--name=value`` and ``NAME=value`` lose the value where the name is a
    secret's; so does the word after ``--name``.
    """
    shown: list[str] = []
    found: list[str] = []
    after_secret_option = False
    for word in words:
        name, equals, value = word.partition("=")
        option = _option_name(name)
        if after_secret_option and _option_name(word) is None:
            shown.append(REDACTED)
            found.append(word)
        elif equals and is_secret_name(option or name):
            shown.append(f"{name}={REDACTED}")
            found.append(value)
        else:
            shown.append(redact_text(word))
        after_secret_option = not equals and option is not None and is_secret_name(option)
    return shown, found


class _Redaction:
    """One body's redaction: the secrets it found, for scrubbing other texts."""

    def __init__(self) -> None:
        self.found: list[str] = []

    def hidden(self, value: Any) -> Any:
        """``value`` is a secret: what stands for it (null and empty stay what they are)."""
        if value is None or value == "":
            return value
        self._collect(value)
        return REDACTED

    def _collect(self, value: Any) -> None:
        if isinstance(value, dict):
            for item in value.values():
                self._collect(item)
        elif isinstance(value, list):
            for item in value:
                self._collect(item)
        elif value is not None:
            self.found.append(value if isinstance(value, str) else json.dumps(value))

    def value(self, value: Any) -> Any:
        if isinstance(value, dict):
            return {name: self.field(name, item) for name, item in value.items()}
        if isinstance(value, list):
            if value and all(isinstance(item, str) for item in value):
                shown, found = redact_command_line(value)
                self.found.extend(found)
                return shown
            return [self.value(item) for item in value]
        if isinstance(value, str):
            return redact_text(value)
        return value

    def field(self, name: str, value: Any) -> Any:
        if is_secret_name(name):
            return self.hidden(value)
        if is_container_name(name):
            if isinstance(value, dict):
                return {key: self.hidden(item) for key, item in value.items()}
            if isinstance(value, list):
                return [self.hidden(item) for item in value]
            return self.hidden(value)
        return self.value(value)


def redact(value: Any) -> tuple[Any, list[str]]:
    """A parsed JSON value without its secrets; and the secret texts taken out of it."""
    redaction = _Redaction()
    redacted = redaction.value(value)
    return redacted, redaction.found


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` (an error message, say) without any of ``secrets`` quoted in it."""
    for secret in sorted(set(secrets), key=len, reverse=True):
        if len(secret) >= MIN_SCRUBBED:
            # As it was sent, and as a JSON string would quote it.
            for form in (secret, json.dumps(secret)[1:-1]):
                text = text.replace(form, REDACTED)
    return redact_text(text)
