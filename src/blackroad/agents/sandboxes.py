"""Agents' sandbox directories: one per agent, under a name no other agent ever gets.

The file tools (``agents/builtin.py``) work inside the directory their run's
agent names (``agents.sandbox``): a random name for an agent made since
migration 0013, the agent's id for one made before (its files stay where
they were). A directory goes when its agent is deleted; one whose removal
failed, or that a crash left behind, is named by no agent, so no agent ever
sees it, and ``sweep`` removes it when the server starts.
"""

from __future__ import annotations

import logging
import re
import secrets
import shutil
from collections.abc import Collection
from pathlib import Path

log = logging.getLogger(__name__)
# What ``new_name`` makes, or an id (agents made before sandboxes had names of their own).
NAME = re.compile(r"[0-9a-f]{32}|[0-9]{1,19}")


def new_name() -> str:
    """A sandbox name for a new agent: 128 random bits, never one handed out before."""
    return secrets.token_hex(16)


class Sandboxes:
    """The directory ``root`` holding every agent's sandbox, by name."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, name: str) -> Path:
        if not NAME.fullmatch(name):
            raise ValueError(f"not a sandbox name: {name!r}")
        return self.root / name

    def open(self, name: str) -> Path:
        """The sandbox ``name``, created if it is not there yet."""
        path = self.path(name)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def remove(self, name: str) -> None:
        """Delete the sandbox ``name`` and its files; a failure is logged (``sweep`` retries)."""
        _remove(self.path(name))

    def sweep(self, names: Collection[str]) -> int:
        """Remove everything under the root that is not one of the sandboxes ``names``."""
        if not self.root.is_dir():
            return 0
        left = [entry for entry in self.root.iterdir() if entry.name not in names]
        for entry in left:
            _remove(entry)
        return len(left)


def _remove(path: Path) -> None:
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    except OSError as error:
        # Named by no agent from now on: nobody sees it, and the next start removes it.
        log.warning("could not remove the agent sandbox %s: %s", path, error)
