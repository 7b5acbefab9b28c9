"""The load generators: ghz for unary calls, bench/viewers (Go) for streams.

Neither is Python on purpose: a Python client on a two-core machine would measure itself.
Both are built on demand from pinned sources, into git-ignored folders.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

from bench.settings import ROOT

GHZ_MODULE = "github.com/bojand/ghz/cmd/ghz@v0.121.0"
VIEWERS_SOURCE = ROOT / "bench" / "viewers"
VIEWERS_BINARY = ROOT / "bench" / ".bin" / "viewers"


class ToolMissingError(RuntimeError):
    pass


def _go_env() -> dict[str, str]:
    env = dict(os.environ)
    # Go lives in /usr/local/go on many hosts without being on PATH.
    env["PATH"] = f"{env.get('PATH', '')}:/usr/local/go/bin"
    return env


def _have_go(env: dict[str, str]) -> bool:
    return shutil.which("go", path=env["PATH"]) is not None


def ghz() -> Path:
    binary = ROOT / ".tools" / "bin" / "ghz"
    if not binary.exists():
        env = _go_env()
        if not _have_go(env):
            raise ToolMissingError(f"ghz not found at {binary} and no Go toolchain to build it")
        print(f"bench: installing ghz ({GHZ_MODULE})", file=sys.stderr, flush=True)
        subprocess.run(
            [str(ROOT / "scripts" / "go-tool.sh"), "ghz", GHZ_MODULE], check=True, env=env
        )
    return binary


def viewers() -> Path:
    """The Go viewers, rebuilt whenever a source file is newer than the binary."""
    sources = [*VIEWERS_SOURCE.glob("*.go"), VIEWERS_SOURCE / "go.mod", VIEWERS_SOURCE / "go.sum"]
    newest = max(p.stat().st_mtime for p in sources if p.exists())
    if VIEWERS_BINARY.exists() and VIEWERS_BINARY.stat().st_mtime >= newest:
        return VIEWERS_BINARY
    env = _go_env()
    if not _have_go(env):
        raise ToolMissingError("building bench/viewers needs Go (https://go.dev/dl/)")
    env.update(CGO_ENABLED="0", GOFLAGS="-mod=mod")
    print("bench: building bench/viewers", file=sys.stderr, flush=True)
    subprocess.run(
        ["go", "build", "-trimpath", "-o", str(VIEWERS_BINARY), "."],
        cwd=VIEWERS_SOURCE,
        check=True,
        env=env,
    )
    return VIEWERS_BINARY
