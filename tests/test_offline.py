"""Offline proof: the serving path works in a network namespace with only loopback."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_serves_chat_and_embeddings_with_no_network(tmp_path: Path) -> None:
    unshare = shutil.which("unshare")
    if unshare is None or os.geteuid() != 0:
        pytest.skip("needs root and unshare(1) to create a network namespace")
    probe = subprocess.run(
        [
            unshare,
            "--net",
            "sh",
            "-c",
            'ip link set lo up && exec "$0" "$@"',
            sys.executable,
            "-m",
            "tests.support.offline_probe",
            str(tmp_path / "home"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if probe.returncode != 0 and "Operation not permitted" in probe.stderr:
        pytest.skip(f"network namespaces are not permitted here: {probe.stderr.strip()}")
    assert probe.returncode == 0, probe.stderr
    seen = json.loads(probe.stdout.strip().splitlines()[-1])
    assert seen["interfaces"] == ["lo"]
    assert seen["completion_tokens"] == 5
    assert seen["dimensions"] == 640
