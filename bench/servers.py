"""Servers under test as subprocesses: ours (`python -m <service>`), the seed-style baseline
(bench/seed_servers.py) and the floor (bench/floor_servers.py).

Separate processes, pinned to the server CPU, started the way they run in production
(command line, JSON logs), so nothing of the benchmark's own Python shares their GIL.
All three kinds announce their port on a JSON line with "message": "listening".
"""

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.workspace import MATCH, ROOT, Workspace, log

START_TIMEOUT = 90.0  # the 100k catalogue is parsed and checked before the port opens


class ServerFailedError(RuntimeError):
    """A server under test exited or never started listening; the message ends with its log."""


@dataclass
class Server:
    label: str  # e.g. "ours movie mTLS"
    process: subprocess.Popen[bytes]
    port: int
    log: Path
    tls: bool

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            site = crash_site(self.log)
            raise ServerFailedError(
                f"{self.label} exited with {self.process.returncode}"
                + (f" in {site}" if site else "")
                + f"\n{tail(self.log)}"
            )

    def cpu_seconds(self, *, workers: bool = False) -> float:
        """The CPU time the server has used so far, user and system; with `workers`, its
        worker processes' too (WORKERS forks them, and waits for them only at exit)."""
        pids = [self.process.pid]
        if workers:
            children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
            pids += [int(pid) for pid in children.read_text().split()]
        return sum(cpu_seconds_of(Path(f"/proc/{pid}/stat")) for pid in pids)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


def cpu_seconds_of(stat_file: Path) -> float:
    """User and system CPU seconds in a /proc stat file (a process's or a thread's)."""
    stat = stat_file.read_text()
    # utime and stime: the 14th and 15th fields, the 12th and 13th after the name.
    fields = stat.rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tail(log: Path, lines: int = 15) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def crash_site(log: Path) -> str:
    """Where the crashing thread was, from faulthandler's dump: '<file>, line N in <func>'."""
    lines = log.read_text(errors="replace").splitlines()
    for i, line in enumerate(lines[:-1]):
        if line.startswith("Current thread"):
            return lines[i + 1].strip().removeprefix("File ").replace(f"{ROOT}/", "")
    return ""


def _listening_port(log: Path) -> int | None:
    for line in log.read_text(errors="replace").splitlines():
        if '"listening"' in line:
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue
            if entry.get("message") == "listening" and isinstance(entry.get("port"), int):
                port: int = entry["port"]
                return port
    return None


def launch(
    label: str,
    argv: Sequence[str],
    ws: Workspace,
    tls: bool = True,
    env: Mapping[str, str] | None = None,
    cpu: str = "server",
) -> Server:
    log = ws.logs / f"{label.replace(' ', '-')}-{time.monotonic_ns()}.log"
    # A crash in C (OpenCV, gRPC core) then leaves the Python stacks in the log.
    env = {**os.environ, "PYTHONFAULTHANDLER": "1", **(env or {})}
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, *argv],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            preexec_fn=ws.pin(cpu),
        )
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline and process.poll() is None:
        port = _listening_port(log)
        if port is not None:
            return Server(label, process, port, log, tls)
        time.sleep(0.05)
    process.kill()
    process.wait()
    raise ServerFailedError(f"{label} did not start listening\n{tail(log)}")


def ours(
    service: str,
    ws: Workspace,
    *,
    tls: bool = True,
    label: str = "",
    env: Mapping[str, str] | None = None,
    port: int = 0,
    cpu: str = "server",
) -> Server:
    """Ours as the stack runs it; `env` adds settings (and names the run `label`); WORKERS
    above 1 needs a `port` of its own."""
    argv = ["-m", service, "--host", "127.0.0.1", "--port", str(port), "--grace", "1"]
    argv += ["--tls-cert", str(ws.pki / f"{service}.crt"), "--tls-key"]
    argv += [str(ws.pki / f"{service}.key"), "--tls-ca", str(ws.pki / "ca.crt")]
    argv += [] if tls else ["--insecure"]
    argv += {
        "cheese": ["--prep-seconds", "0"],  # the seed answers at once
        "movie": ["--catalogue", str(ws.catalogue), "--reload-seconds", "0"],
        "soccer": ["--videos-dir", str(ws.videos)],
    }[service]
    # Capacity is what is measured, from one client identity: the per-client budgets (its
    # streams, and its share of soccer's frame buffers: 161 JPEG streams at the default
    # 80 MiB) would stop the fan-out search at one client's limit. The server-wide memory
    # budget stays as configured.
    argv += ["--max-streams", "100000", "--max-streams-per-client", "100000"]
    argv += ["--client-buffer-mib", "100000"] if service == "soccer" else []
    label = label or f"ours {service} {'mTLS' if tls else 'plaintext'}"
    return launch(label, argv, ws, tls, env, cpu)


def _inputs(service: str, ws: Workspace) -> list[str]:
    if service == "movie":
        return ["--catalogue", str(ws.catalogue)]
    return ["--videos-dir", str(ws.videos)] if service == "soccer" else []


def seed(service: str, ws: Workspace, *, tls: bool = True, cpu: str = "server") -> Server:
    argv = ["-m", "bench.seed_servers", "--service", service, "--port", "0", *_inputs(service, ws)]
    argv += ["--certs", str(ws.pki)] if tls else ["--insecure"]
    return launch(f"seed {service} {'mTLS' if tls else 'plaintext'}", argv, ws, tls, cpu=cpu)


def floor(
    service: str, ws: Workspace, *, grpc_metrics: bool = False, threads_batch: bool = False
) -> Server:
    """grpcio alone: the limit no server of this design on grpcio can pass by much; with
    `grpc_metrics`, gRPC's metrics plugin on; with `threads_batch`, gRPC's threads under
    SCHED_BATCH as the runtime sets them (grpckit/lifecycle/scheduling.py)."""
    argv = ["-m", "bench.floor_servers", "--service", service, "--port", "0", "--match", MATCH]
    argv += ["--certs", str(ws.pki), *_inputs(service, ws)]
    argv += ["--grpc-metrics"] if grpc_metrics else []
    argv += ["--grpc-threads-batch"] if threads_batch else []
    label = f"floor {service} mTLS{' gRPC metrics' if grpc_metrics else ''}"
    return launch(label + (" threads batch" if threads_batch else ""), argv, ws)


def rounds(
    what: str,
    servers: Mapping[str, Server],
    reps: int,
    order: Callable[[int], Sequence[str]] | None = None,
) -> Iterator[tuple[str, Server]]:
    """Each server once per repeat, interleaved so that a burst of noise on the machine hits
    them alike (`order` may vary who goes first; kinds it names that `servers` lacks are
    skipped). Announces every run and checks the server
    is still up before it is measured."""
    for rep in range(reps):
        for kind in order(rep) if order else list(servers):
            if kind not in servers:
                continue
            server = servers[kind]
            log(f"{what} {server.label} ({rep + 1}/{reps})")
            server.check_alive()
            yield kind, server
