"""The load generators: ghz for unary calls, bench/viewers (Go) for streams.

Neither is Python on purpose: a Python client on a two-core machine would measure itself.
Both are built on demand from pinned sources into git-ignored folders: ghz by
scripts/go-tool.sh, the viewers with Go code generated from proto/api by grpcio-tools'
protoc and the Go plugins pinned as tools in bench/viewers/go.mod.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, cast

from bench.servers import Server
from bench.workspace import ROOT, Workspace, log

GHZ_MODULE = "github.com/bojand/ghz/cmd/ghz@v0.121.0"
VIEWERS = ROOT / "bench" / "viewers"
BIN = ROOT / "bench" / ".bin"
PROTOS = {ROOT / "proto": ("api/movie.proto", "api/soccer.proto"), VIEWERS: ("frame.proto",)}
PLUGINS = (  # pinned by bench/viewers/go.mod (its `tool` block)
    "google.golang.org/protobuf/cmd/protoc-gen-go",
    "google.golang.org/grpc/cmd/protoc-gen-go-grpc",
)
MODULE = "grpcdemo/bench/viewers"  # bench/viewers/go.mod; the generated package is MODULE/pb


class ToolMissingError(RuntimeError):
    pass


def _go(*args: str, cwd: Path = VIEWERS) -> None:
    # Go lives in /usr/local/go on many hosts without being on PATH.
    env = {**os.environ, "PATH": f"{os.environ.get('PATH', '')}:/usr/local/go/bin"}
    if shutil.which(args[0], path=env["PATH"]) is None:
        raise ToolMissingError(f"{args[0]} needs Go (https://go.dev/dl/)")
    subprocess.run(args, cwd=cwd, check=True, env={**env, "CGO_ENABLED": "0"})


def ghz() -> Path:
    binary = ROOT / ".tools" / "bin" / "ghz"
    if not binary.exists():
        log(f"installing ghz ({GHZ_MODULE})")
        _go(str(ROOT / "scripts" / "go-tool.sh"), "ghz", GHZ_MODULE, cwd=ROOT)
    return binary


def viewers() -> Path:
    """The Go viewers, generated and rebuilt whenever a source is newer than the binary."""
    binary = BIN / "viewers"
    protos = [name for names in PROTOS.values() for name in names]
    sources = [*VIEWERS.glob("*.go"), VIEWERS / "go.mod"]
    sources += [root / name for root, names in PROTOS.items() for name in names]
    if binary.exists() and binary.stat().st_mtime >= max(p.stat().st_mtime for p in sources):
        return binary
    log("generating and building bench/viewers")
    _go("go", "build", "-o", f"{BIN}/", *PLUGINS)
    shutil.rmtree(VIEWERS / "pb", ignore_errors=True)
    (VIEWERS / "pb").mkdir()
    options = ",".join([f"module={MODULE}", *(f"M{proto}={MODULE}/pb" for proto in protos)])
    protoc = [sys.executable, "-m", "grpc_tools.protoc", *(f"-I{root}" for root in PROTOS)]
    for plugin in ("go", "go-grpc"):
        protoc += [f"--plugin=protoc-gen-{plugin}={BIN / f'protoc-gen-{plugin}'}"]
        protoc += [f"--{plugin}_out={options}:{VIEWERS}"]
    subprocess.run([*protoc, *protos], check=True)
    _go("go", "build", "-trimpath", "-o", str(binary), ".")
    return binary


def run_viewers(args: list[str], server: Server, ws: Workspace, timeout: float) -> dict[str, Any]:
    """One run of the viewers against `server` (mutual TLS if it speaks it): its JSON report."""
    if server.tls:
        ca, cert, key = ws.client_tls()
        args = [*args, "-ca", ca, "-cert", cert, "-key", key]
    done = subprocess.run(
        [str(viewers()), *args, *([] if server.tls else ["-insecure"]), "-addr", server.address],
        capture_output=True,
        check=False,
        timeout=timeout,
        preexec_fn=ws.pin("load"),
    )
    if done.returncode != 0:
        raise RuntimeError(f"viewers failed ({done.returncode}): {done.stderr.decode()[-2000:]}")
    return cast(dict[str, Any], json.loads(done.stdout))
