"""schemathesis over every operation of a real ``blackroad up``'s own OpenAPI document.

Usage (from the repository root, with the test extra installed)::

    python fuzz/api_schema.py --keys none       # the default install: loopback, no key
    python fuzz/api_schema.py --keys admin      # auth on, an admin key on every request
    python fuzz/api_schema.py --keys missing    # auth on, no key (every route must refuse)
    python fuzz/api_schema.py --keys admin -- --max-examples 50 --seed 1

Starts the server as the tests do (``tests/support/server.py``), under a 16 GiB
address-space limit (a runaway allocation is then a MemoryError, not the
machine's OOM killer) and with an empty ``PATH`` (a generated MCP stdio server
can only name a command by absolute path), then runs ``schemathesis run``
with the hooks of ``tests/support/schema_fuzz.py`` (bounded output lengths,
real model names, ``/health/live`` after every case). Arguments after ``--``
go to schemathesis. Exits with schemathesis' status; the server's log is
printed if the server died.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.server import BLACKROAD, background, blackroad, free_port, server_env  # noqa: E402

ADDRESS_SPACE = 16 << 30
# The lockout would soon refuse the fuzzer's own address (generated passwords and
# node credentials are wrong): every later case would be a 429. It has its own
# tests (tests/api/test_lockout.py).
SETTINGS = {"lockout_slow_after": "1000000000", "lockout_attempts": "1000000000"}
SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"


def admin_key(home: Path) -> str:
    """A new admin user's key with every scope, made with the CLI as an operator would."""
    if blackroad("users", "add", "fuzzer", "--role", "admin", home=home).returncode != 0:
        raise SystemExit("blackroad users add failed")
    scopes = [a for s in ("admin", "inference") for a in ("--scope", s)]
    created = blackroad("keys", "create", "fuzzer", *scopes, home=home)
    if created.returncode != 0:
        raise SystemExit(f"blackroad keys create failed:\n{created.stderr}")
    return created.stdout.strip().splitlines()[-1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", choices=("none", "admin", "missing"), default="none")
    parser.add_argument("--home", type=Path, help="the server's home (default: a temporary one)")
    parser.add_argument("schemathesis_args", nargs="*")
    args = parser.parse_args()

    home = args.home or Path(tempfile.mkdtemp(prefix="blackroad-schema-fuzz-"))
    settings = SETTINGS if args.keys == "none" else {**SETTINGS, "auth": "on"}
    port = free_port()
    env = server_env(home, port, **settings)
    empty = home / "empty-path"
    empty.mkdir(parents=True, exist_ok=True)
    env["PATH"] = str(empty)
    headers = []
    if args.keys == "admin":
        key = admin_key(home)
        headers = ["-H", f"Authorization: Bearer {key}"]
    command = [
        shutil.which("prlimit") or "/usr/bin/prlimit",
        f"--as={ADDRESS_SPACE}",
        str(BLACKROAD),
        "up",
    ]
    log = home / "server.log"
    url = f"http://127.0.0.1:{port}"
    with background(command, f"{url}/", log, env) as server:
        run = [
            str(SCHEMATHESIS), "run", f"{url}/openapi.json", *headers,
            "--checks", "not_a_server_error,server_alive",
            "--request-timeout", "120", "--no-color",
            *args.schemathesis_args,
        ]  # fmt: skip
        shown = [
            arg if not arg.startswith("Authorization") else "Authorization: Bearer …" for arg in run
        ]
        print("$", " ".join(shown), flush=True)  # the key is a secret, even a test's
        hooks = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.support.schema_fuzz"}
        hooks["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), hooks.get("PYTHONPATH")]))
        # In the server's home: schemathesis leaves its cache in the folder it runs in.
        status = subprocess.run(run, env=hooks, cwd=home, check=False).returncode
        if server.poll() is not None:
            print(f"the server died ({server.returncode}):\n{log.read_text()}", flush=True)
            return 1
    return status


if __name__ == "__main__":
    sys.exit(main())
