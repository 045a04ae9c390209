"""Ollama-style model commands against a running server."""

from __future__ import annotations

from pathlib import Path

from blackroad.models.bundled import bundled_models
from tests.conftest import SMOLLM2
from tests.support.server import Server, blackroad


def run(server: Server, *args: str) -> str:
    result = blackroad(*args, home=server.home, port=server.port)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_list_shows_models_with_ids_and_sizes(server: Server) -> None:
    rows = [line.split() for line in run(server, "list").splitlines()[1:]]
    smollm2 = next(row for row in rows if row[0] == SMOLLM2)
    assert len(smollm2[1]) == 12
    assert smollm2[2:4] == ["98", "MB"]


def test_create_from_a_modelfile_with_a_relative_path_then_show_cp_rm(
    server: Server, tmp_path: Path
) -> None:
    (tmp_path / "weights.gguf").symlink_to(bundled_models()[SMOLLM2])
    (tmp_path / "Modelfile").write_text(
        'FROM ./weights.gguf\nPARAMETER temperature 0\nPARAMETER stop "END"\n'
        "SYSTEM You answer in one word.\n"
    )
    created = run(server, "create", "oneword", "-f", str(tmp_path / "Modelfile"))
    assert created.strip().splitlines()[-1] == "success"

    assert "You answer in one word." in run(server, "show", "oneword", "--system")
    parameters = run(server, "show", "oneword", "--parameters")
    assert "temperature" in parameters and '"END"' in parameters
    assert "134.52M" in run(server, "show", "oneword")

    run(server, "cp", "oneword", "oneword-copy")
    assert "oneword-copy:latest" in run(server, "list")
    run(server, "rm", "oneword-copy")
    assert "oneword-copy" not in run(server, "list")


def test_ps_and_stop(server: Server) -> None:
    run(server, "run", SMOLLM2, "Hi")
    assert SMOLLM2 in run(server, "ps")
    run(server, "stop", SMOLLM2)
    assert SMOLLM2 not in run(server, "ps")


def test_errors_are_one_red_line_and_exit_1(server: Server) -> None:
    result = blackroad("show", "no-such-model", home=server.home, port=server.port)
    assert result.returncode == 1
    assert result.stdout.strip() == "model 'no-such-model' not found"
    result = blackroad("rm", SMOLLM2, home=server.home, port=server.port)
    assert result.returncode == 1
    assert "bundled model" in result.stdout
