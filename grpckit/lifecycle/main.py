"""`python -m <service>`: settings, logs, workers, signals, and the exit code.

Exit codes: 0 after a graceful stop; 1 when the server cannot start (one log line names the
cause) or a worker failed; 2 for a bad setting (one line on stderr names it). A second
SIGTERM or SIGINT during the graceful stop ends the process at once.
"""

import asyncio
import logging
import os
import signal
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

from grpckit.config import ServerSettings
from grpckit.lifecycle.loop import run as run_loop
from grpckit.lifecycle.server import Server
from grpckit.lifecycle.service import Program, StartupError
from grpckit.lifecycle.workers import run_workers
from grpckit.settings import UsageError, parse, usage_error
from grpckit.telemetry import logs, metrics, tracing

log = logging.getLogger("grpckit.main")

S = TypeVar("S")


def server_defaults(program: Program[Any], host: str) -> dict[str, Any]:
    """The server settings whose default is `program`'s own, by field name, on `host`."""
    return {
        "port": program.port,
        "tls_cert": Path(f"certs/{program.name}.crt"),
        "tls_key": Path(f"certs/{program.name}.key"),
        "authz_policy": Path(f"{program.name}/authz.json"),
        "replica": host,
        **program.defaults,
    }


def load_settings(
    program: Program[S], argv: Sequence[str] | None = None
) -> tuple[ServerSettings, S]:
    """The server's settings and the program's own; UsageError for a bad value."""
    server, own = parse(
        [ServerSettings, program.settings],
        prog=f"python -m {program.name}",
        description=program.description,
        argv=argv,
        defaults=server_defaults(program, socket.gethostname()),
    )
    return server, own


def main(program: Program[Any], argv: Sequence[str] | None = None) -> int:
    """Run `program` until a signal stops it; returns the exit code."""
    try:
        server, own = load_settings(program, argv)
        # OpenTelemetry's own variables, from the environment only (TraceSettings).
        traces = tracing.settings()
    except UsageError as error:
        print(usage_error(f"python -m {program.name}", error), file=sys.stderr)
        return 2
    logs.configure(server.log_level, server.replica)

    def worker() -> int:
        # In each worker, after the fork: gRPC's metrics thread would not survive one.
        if server.metrics:
            metrics.install(program.name, server.replica, grpc_plugin=server.grpc_metrics)
        # Likewise the batch processor's export thread.
        tracing.install(program.name, server.replica, traces)
        return run_loop(_serve(program, server, own), server.event_loop)

    return worker() if server.workers == 1 else run_workers(server.workers, worker)


async def _serve(program: Program[S], settings: ServerSettings, own: S) -> int:
    # Handlers first: a signal that arrives while the services start (or just after
    # "serving" is logged) must stop the server gracefully, not kill the process.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, _on_signal, signum, stop)
    try:
        server = Server(settings, program.services(own))
        await server.start()
    except StartupError as error:
        log.critical("cannot start", extra={"error": str(error)})
        return 1
    except Exception as error:
        log.critical("cannot start", extra={"error": repr(error)}, exc_info=True)
        return 1
    await stop.wait()
    await server.stop()
    log.info("stopped")
    return 0


def _on_signal(signum: int, stop: asyncio.Event) -> None:
    name = signal.Signals(signum).name
    if not stop.is_set():
        log.info("signal received", extra={"signal": name})
        stop.set()
        return
    log.warning("second signal: exiting at once", extra={"signal": name})
    logs.flush()
    os._exit(128 + signum)
