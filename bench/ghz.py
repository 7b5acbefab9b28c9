"""Unary load with ghz: a fixed duration at a fixed concurrency, on the load CPU.

When the duration ends ghz waits for the calls in flight (`--duration-stop wait`) instead
of cutting its connection: cancelled calls are not what is measured, and cancelling calls
crashed our servers when this was written (see bench/fanout.py). QPS counts OK calls only;
errors of the connection closing at the very end are not held against the server.
"""

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

from bench.processes import Server
from bench.settings import ROOT, Settings, pin
from bench.workspace import Workspace

_SHUTDOWN_ERRORS = ("closed network connection", "client connection is closing", "canceled")


@dataclass(frozen=True)
class UnaryCall:
    proto: str  # path under proto/
    method: str  # ghz's package.Service.Method
    data: str  # JSON, may use ghz templates


@dataclass(frozen=True)
class UnaryResult:
    qps: float
    p50_ms: float
    p99_ms: float
    ok: int
    errors: int
    first_error: str


def run(
    binary: Path,
    server: Server,
    call: UnaryCall,
    concurrency: int,
    seconds: float,
    settings: Settings,
    workspace: Workspace,
) -> UnaryResult:
    argv = [
        str(binary),
        "--proto",
        f"proto/{call.proto}",
        "--import-paths",
        "proto",
        "--call",
        call.method,
        "--data",
        call.data,
        "--concurrency",
        str(concurrency),
        "--connections",
        "1",
        "--duration",
        f"{seconds:g}s",
        "--duration-stop",
        "wait",
        "--format",
        "json",
    ]
    if server.tls:
        ca, cert, key = workspace.client_tls()
        argv += ["--cacert", ca, "--cert", cert, "--key", key]
    else:
        argv.append("--insecure")
    done = subprocess.run(
        [*argv, server.address],
        cwd=ROOT,
        capture_output=True,
        check=False,
        timeout=seconds + 60,
        preexec_fn=pin(settings.load_cpus),
    )
    if not done.stdout.strip():
        raise RuntimeError(f"ghz failed ({done.returncode}): {done.stderr.decode()[-2000:]}")
    report = json.loads(done.stdout)
    codes: dict[str, int] = report.get("statusCodeDistribution") or {}
    ok = codes.get("OK", 0)
    real_errors = {
        message: count
        for message, count in (report.get("errorDistribution") or {}).items()
        if not any(s in message for s in _SHUTDOWN_ERRORS)
    }
    latencies = {
        p["percentage"]: p["latency"] / 1e6 for p in report.get("latencyDistribution") or []
    }
    return UnaryResult(
        qps=ok / (report["total"] / 1e9),
        p50_ms=latencies.get(50, float("nan")),
        p99_ms=latencies.get(99, float("nan")),
        ok=ok,
        errors=sum(real_errors.values()),
        first_error=next(iter(real_errors), ""),
    )
