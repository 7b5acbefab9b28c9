"""The edge (Envoy): what a call through it costs, and how one host client spreads over replicas.

On the compose stack with the images already built (it never builds), under its own project
name and free ports, with bench/edge-compose.yml beside docker-compose.yml: that publishes
every movie replica's own port on a random loopback port too, so one replica can be called
directly, bypassing the edge, by the same ghz on the host.

- cost: ghz GetMovieByID from the host, one connection, c=1 and c=50, through the edge
  (value) against direct to the replica (baseline), interleaved within each repeat, with
  one movie replica, so both paths end at the same server. Both are mutual TLS.
- spread: three movie replicas; the project's client on the host, one channel through the
  edge (`client load movie`), and the share of the calls each replica served. 1.0 is an
  even spread; a connection-balancing proxy gives one replica everything (share 0).
"""

import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence

from bench.figures import Figure, compare, median
from bench.unary import ghz
from bench.workspace import ROOT, Workspace, free_port, log

PROJECT = "grpcdemo-bench-edge"
COMPOSE_FILES = "docker-compose.yml:bench/edge-compose.yml"
IMAGES = ("cheese", "movie", "soccer", "edge", "pki")
MARTIAN = "a8034f44-aee4-44cf-b32c-74cf452aaaae"
REPLICAS = 3
CONCURRENCY = (1, 50)
UP_TIMEOUT = 300


def _environment() -> dict[str, str]:
    env = dict(os.environ, COMPOSE_PROJECT_NAME=PROJECT, COMPOSE_FILE=COMPOSE_FILES)
    for name in ("CHEESE", "MOVIE", "SOCCER", "HTTPS"):
        env[f"{name}_PORT"] = str(free_port())
    return env


def _compose(env: dict[str, str], *args: str, timeout: float = 120) -> str:
    done = subprocess.run(
        ["docker", "compose", *args], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=timeout, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"docker compose {' '.join(args)}: {done.stderr.strip()[-500:]}")
    return done.stdout


def _images_missing() -> list[str]:
    return [
        name
        for name in IMAGES
        if subprocess.run(
            ["docker", "image", "inspect", f"grpcdemo-{name}:latest"],
            capture_output=True,
            check=False,
        ).returncode
        != 0
    ]


def _ghz(address: str, concurrency: int, seconds: float, ws: Workspace) -> tuple[float, float]:
    """(OK calls per second, p50 ms) of GetMovieByID on one connection, as the stack's client."""
    certs = ROOT / "certs"
    tls = [str(certs / "ca.crt"), str(certs / "client.crt"), str(certs / "client.key")]
    data = json.dumps({"id": MARTIAN})
    result = ghz(address, "movie", "Movie.GetMovieByID", data, concurrency, seconds, ws, tls)
    return result.qps, result.p50_ms


def _cost(env: dict[str, str], ws: Workspace) -> list[Figure]:
    seconds = 2.0 if ws.quick else 4.0
    direct_port = _compose(env, "port", "--index", "1", "movie", "50052").strip().rsplit(":", 1)[1]
    paths = {"edge": f"127.0.0.1:{env['MOVIE_PORT']}", "direct": f"127.0.0.1:{direct_port}"}
    for address in paths.values():  # connections, caches, first-call paths
        _ghz(address, 50, 0.5, ws)
    figures = []
    for concurrency in CONCURRENCY:
        qps: dict[str, list[float | None]] = {path: [] for path in paths}
        p50: dict[str, list[float | None]] = {path: [] for path in paths}
        for rep in range(ws.reps):
            order: Sequence[str] = ("edge", "direct") if rep % 2 == 0 else ("direct", "edge")
            for path in order:
                log(f"edge cost c={concurrency} {path} ({rep + 1}/{ws.reps})")
                rate, latency = _ghz(paths[path], concurrency, seconds, ws)
                qps[path].append(rate)
                p50[path].append(latency)
        prefix = f"edge.movie.GetMovieByID.c{concurrency}"
        label = {"baseline_label": "direct to the replica"}
        figures += [
            compare("edge", f"{prefix}.qps", "calls/s", qps["edge"], qps["direct"], **label),
            compare(
                "edge", f"{prefix}.p50", "ms", p50["edge"], p50["direct"], better="lower", **label
            ),
        ]
    return figures


def _spread(env: dict[str, str], ws: Workspace) -> list[Figure]:
    seconds = 3.0 if ws.quick else 6.0
    _compose(env, "up", "--detach", "--wait", f"--scale=movie={REPLICAS}", timeout=UP_TIMEOUT)
    _wait_edge_sees(env, REPLICAS)
    shares: list[float | None] = []
    reached: list[float | None] = []
    for rep in range(ws.reps):
        log(f"edge spread of one host channel ({rep + 1}/{ws.reps})")
        done = subprocess.run(
            [sys.executable, "-m", "client", "--target", f"127.0.0.1:{env['MOVIE_PORT']}",
             "load", "movie", "--seconds", f"{seconds:g}", "--concurrency", "4"],
            cwd=ROOT, capture_output=True, text=True, timeout=seconds + 60, check=False,
            preexec_fn=ws.pin("load"),
        )  # fmt: skip
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        if done.returncode != 0 or not lines:
            raise RuntimeError(f"client load failed: {done.stderr.strip()[-500:]}")
        served = json.loads(lines[-1])["served_by"]
        counts = list(served.values()) + [0] * (REPLICAS - len(served))
        shares.append(min(counts) / (sum(counts) / REPLICAS))
        reached.append(float(len(served)))
    return [
        Figure("edge", "edge.spread.one_host_channel.min_share", "share", median(shares), None,
               runs=shares, min_value=0.8,
               note="the least-used replica's calls over an even share; HAProxy's was 0"),
        Figure("edge", "edge.spread.one_host_channel.replicas", "replicas", median(reached),
               None, runs=reached, min_value=REPLICAS),
    ]  # fmt: skip


def _wait_edge_sees(env: dict[str, str], replicas: int) -> None:
    for _ in range(120):
        clusters = _compose(
            env, "exec", "-T", "edge", "curl", "-fsS", "http://127.0.0.1:9901/clusters"
        )
        healthy = [
            line for line in clusters.splitlines()
            if line.startswith("movie::") and line.endswith("::health_flags::healthy")
        ]  # fmt: skip
        if len(healthy) == replicas:
            return
        time.sleep(0.5)
    raise RuntimeError(f"the edge never saw {replicas} healthy movie replicas")


def run(ws: Workspace) -> list[Figure]:
    missing = _images_missing()
    if missing:
        note = f"skipped: images not built ({', '.join(missing)}): run `make images` first"
        log(f"edge {note}")
        return [Figure("edge", "edge.skipped", "", None, None, note=note)]
    env = _environment()
    _compose(env, "down", "--volumes", "--remove-orphans")
    try:
        _compose(env, "up", "--detach", "--wait", timeout=UP_TIMEOUT)
        _wait_edge_sees(env, 1)
        return _cost(env, ws) + _spread(env, ws)
    finally:
        _compose(env, "down", "--volumes", "--remove-orphans")
