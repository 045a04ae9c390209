"""GGUF metadata: read once per file, however many ask at the same time."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest

from blackroad.models import metadata
from blackroad.models.bundled import bundled_models
from blackroad.models.gguf_header import read_header
from blackroad.models.types import GGUFMetadata
from tests.conftest import SMOLLM2


def test_callers_asking_at_once_share_one_parse(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # nothing cached yet
    copy = tmp_path / "model.gguf"
    shutil.copy(bundled_models()[SMOLLM2], copy)
    parses: list[Path] = []
    parse = read_header

    def counted(path: Path) -> GGUFMetadata:
        parses.append(path)
        return parse(path)

    monkeypatch.setattr(metadata, "read_header", counted)
    found: list[GGUFMetadata] = []
    callers = [
        threading.Thread(target=lambda: found.append(metadata.read_metadata(copy)))
        for _ in range(4)
    ]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join()
    assert parses == [copy]
    assert len(found) == 4 and all(m == found[0] for m in found)
    assert found[0].architecture == "llama"
    assert metadata._parsing == {}  # nothing left behind
