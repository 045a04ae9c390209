"""What the fuzz harnesses share: the seed corpus, libFuzzer's limits, the accepted errors.

Each harness (``python fuzz/<name>.py [libFuzzer flags] [corpus dirs]``) feeds
atheris' coverage-guided inputs to one parser of untrusted files. Without a
corpus directory it starts from a temporary one holding its seeds: small
valid files made by the tests' own helpers. A run stops at the first crash
(an exception other than the parser's documented errors), at an input that
runs past ``-timeout`` seconds, or past ``-rss_limit_mb`` of memory, and
libFuzzer writes the input as ``crash-*``/``timeout-*``/``oom-*``.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for where in (ROOT / "src", ROOT):  # blackroad, and the tests' helpers for the seeds
    if str(where) not in sys.path:
        sys.path.insert(0, str(where))

import atheris  # noqa: E402

# A hostile input may take this long (seconds) and this much memory (MiB)
# before it counts as a hang or an out-of-memory.
DEFAULTS = ("-timeout=10", "-rss_limit_mb=2048")


def fuzz(test_one_input: Callable[[bytes], None], seeds: dict[str, bytes]) -> None:
    """Run libFuzzer over ``test_one_input`` with the command line's flags and corpus."""
    argv = list(sys.argv)
    for default in DEFAULTS:
        if not any(arg.startswith(default.split("=")[0] + "=") for arg in argv):
            argv.insert(1, default)
    if not any(not arg.startswith("-") for arg in argv[1:]):
        corpus = Path(tempfile.mkdtemp(prefix=f"{Path(argv[0]).stem}-corpus-"))
        for name, data in seeds.items():
            (corpus / name).write_bytes(data)
        argv.append(str(corpus))
    atheris.Setup(argv, test_one_input)
    atheris.Fuzz()
