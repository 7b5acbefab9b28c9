"""Servers under test as subprocesses: ours (`python -m <service>`) and the seed-style ones.

Separate processes, pinned to the server CPU, started the way they run in production
(command line, JSON logs), so nothing of the benchmark's own Python shares their GIL.
Both kinds announce their port on a JSON line with "message": "listening".
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

from bench.settings import ROOT, Settings, pin
from bench.workspace import MATCH, Workspace

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


def tail(log: Path, lines: int = 15) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def crash_site(log: Path) -> str:
    """Where the crashing thread was, from faulthandler's dump: '<file>, line N in <func>'."""
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    for i, line in enumerate(lines):
        if line.startswith("Current thread") and i + 1 < len(lines):
            return lines[i + 1].strip().removeprefix("File ").replace(str(ROOT) + "/", "")
    return ""


def _listening_port(log: Path) -> int | None:
    with log.open(errors="replace") as handle:
        for line in handle:
            if '"listening"' not in line:
                continue
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue
            if entry.get("message") == "listening" and isinstance(entry.get("port"), int):
                port: int = entry["port"]
                return port
    return None


def launch(label: str, argv: Sequence[str], settings: Settings, tls: bool) -> Server:
    slug = label.replace(" ", "-")
    log = settings.logs / f"{slug}-{time.monotonic_ns()}.log"
    # A crash in C (OpenCV, gRPC core) then leaves the Python stacks in the log.
    env = {**os.environ, "PYTHONFAULTHANDLER": "1"}
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, *argv],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            preexec_fn=pin(settings.server_cpus),
        )
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        port = _listening_port(log)
        if port is not None:
            return Server(label, process, port, log, tls)
        if process.poll() is not None:
            break
        time.sleep(0.05)
    process.kill()
    process.wait()
    raise ServerFailedError(f"{label} did not start listening\n{tail(log)}")


def ours(service: str, settings: Settings, workspace: Workspace, *, tls: bool = True) -> Server:
    pki = workspace.pki
    argv = [
        "-m",
        service,
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--grace",
        "1",
        "--tls-cert",
        str(pki / f"{service}.crt"),
        "--tls-key",
        str(pki / f"{service}.key"),
        "--tls-ca",
        str(pki / "ca.crt"),
    ]
    if not tls:
        argv.append("--insecure")
    if service == "cheese":
        argv += ["--prep-seconds", "0"]  # the seed answers at once
    elif service == "movie":
        argv += ["--catalogue", str(workspace.catalogue), "--reload-seconds", "0"]
    else:
        argv += ["--videos-dir", str(workspace.videos)]
    return launch(f"ours {service} {'mTLS' if tls else 'plaintext'}", argv, settings, tls)


def seed(service: str, settings: Settings, workspace: Workspace, *, tls: bool = True) -> Server:
    argv = ["-m", "bench.seed_servers", "--service", service, "--port", "0"]
    argv += ["--certs", str(workspace.pki)] if tls else ["--insecure"]
    if service == "movie":
        argv += ["--catalogue", str(workspace.catalogue)]
    elif service == "soccer":
        argv += ["--videos-dir", str(workspace.videos)]
    return launch(f"seed {service} {'mTLS' if tls else 'plaintext'}", argv, settings, tls)


def floor(service: str, settings: Settings, workspace: Workspace) -> Server:
    """grpcio alone (bench/floor_servers.py): the limit our servers' design cannot beat."""
    argv = ["-m", "bench.floor_servers", "--service", service, "--port", "0"]
    argv += ["--certs", str(workspace.pki), "--match", MATCH]
    argv += ["--catalogue", str(workspace.catalogue)] if service == "movie" else []
    argv += ["--videos-dir", str(workspace.videos)] if service == "soccer" else []
    return launch(f"floor {service} mTLS", argv, settings, tls=True)


def rounds(
    what: str,
    servers: Mapping[str, Server],
    reps: int,
    order: Callable[[int], Sequence[str]] | None = None,
) -> Iterator[tuple[str, Server]]:
    """Each server once per repeat, interleaved so that a burst of noise on the machine hits
    them alike (`order` may vary who goes first). Announces every run on stderr and checks
    the server is still up before it is measured."""
    for rep in range(reps):
        for kind in order(rep) if order else list(servers):
            server = servers[kind]
            print(f"bench: {what} {server.label} ({rep + 1}/{reps})", file=sys.stderr, flush=True)
            server.check_alive()
            yield kind, server
