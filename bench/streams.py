"""Streaming load with the Go viewers (bench/viewers): many viewers of a match, or a list.

The viewers print one JSON report; see bench/viewers/watch.go for how fps and lag are
defined. The report includes the client's own CPU use, so a saturated client shows.
"""

import json
import subprocess
from pathlib import Path
from typing import Any, cast

from bench.processes import Server
from bench.settings import Settings, pin
from bench.workspace import Workspace

Report = dict[str, Any]

MIN_FPS = 29.0
MAX_LAG_MS = 200


def _run(
    argv: list[str], server: Server, settings: Settings, workspace: Workspace, timeout: float
) -> Report:
    if server.tls:
        ca, cert, key = workspace.client_tls()
        argv += ["-ca", ca, "-cert", cert, "-key", key]
    else:
        argv.append("-insecure")
    done = subprocess.run(
        [*argv, "-addr", server.address],
        capture_output=True,
        check=False,
        timeout=timeout,
        preexec_fn=pin(settings.load_cpus),
    )
    if done.returncode != 0:
        raise RuntimeError(f"viewers failed ({done.returncode}): {done.stderr.decode()[-2000:]}")
    return cast(Report, json.loads(done.stdout))


def watch(
    binary: Path,
    server: Server,
    settings: Settings,
    workspace: Workspace,
    *,
    match: str,
    viewers: int,
    window: float,
    encoding: str = "raw",
    unpaced: bool = False,
    frames: int = 0,
    drain: bool = False,
    max_first: float = 1.0,
    per_viewer: bool = False,
) -> Report:
    """`window` is the deadline; `frames` a budget per viewer, `drain` see watch.go `view`;
    `max_first` the seconds within which every viewer's first frame must arrive."""
    argv = [str(binary), "watch", "-match", match, "-viewers", str(viewers)]
    argv += ["-duration", f"{window:g}s", "-encoding", encoding]
    argv += ["-min-fps", f"{MIN_FPS:g}", "-max-lag", f"{MAX_LAG_MS}ms"]
    argv += ["-max-first", f"{max_first:g}s"]
    if unpaced:
        argv.append("-unpaced")
    if frames:
        argv += ["-frames", str(frames)]
    if drain:
        argv.append("-drain")
    if per_viewer:
        argv.append("-per-viewer")
    # Dialling hundreds of mTLS connections comes before the window and takes a while.
    return _run(argv, server, settings, workspace, timeout=window + 120 + viewers * 0.2)


def list_movies(binary: Path, server: Server, settings: Settings, workspace: Workspace) -> Report:
    return _run([str(binary), "list"], server, settings, workspace, timeout=300)
