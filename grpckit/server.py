"""A grpc.aio server with what every service needs, and its lifecycle.

Health: NOT_SERVING from the start until the service says its data is loaded, and again
as soon as shutdown begins, so load balancers and compose stop sending work first.
The same health service can also be served alone, in plaintext, on a maintenance port:
Kubernetes' native gRPC probes cannot present a client certificate.
"""

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from grpckit import logs
from grpckit.config import ServerConfig
from grpckit.interceptors import CallInterceptor
from grpckit.loop import run as run_loop
from grpckit.options import server_options
from grpckit.tls import server_credentials
from grpckit.workers import run_workers

log = logging.getLogger(__name__)

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@dataclass(frozen=True)
class Service:
    """A servicer to host: its full proto name and how to add it to a server.

    `register` gets the Server, so a servicer can watch `server.stopping`, and adds itself
    to `server.grpc` with the generated `add_..._to_server`.
    """

    name: str
    register: Callable[["Server"], None]


class Server:
    def __init__(self, config: ServerConfig, services: Sequence[Service]) -> None:
        self.config = config
        # The asyncio servicer postdates grpc-stubs, hence the ignore.
        self.health = health.aio.HealthServicer()  # type: ignore[attr-defined]
        # Set once shutdown starts: long streams watch it to end cleanly, not be cut off.
        self.stopping = asyncio.Event()
        self._names = [s.name for s in services]
        # Each register() files its servicer here by service name, for tests and diagnostics.
        self.servicers: dict[str, object] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._stopped: asyncio.Future[None] | None = None
        self._calls = CallInterceptor(config.access_log, config.replica)
        self.grpc = grpc.aio.server(
            interceptors=[self._calls],
            options=server_options(config.max_connection_age_seconds),
        )
        for service in services:
            service.register(self)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.grpc)
        reflection.enable_server_reflection(
            [*self._names, health.SERVICE_NAME, reflection.SERVICE_NAME], self.grpc
        )
        if config.tls is None:
            log.warning("serving PLAINTEXT: no TLS, no client certificates (--insecure)")
            self.port = self.grpc.add_insecure_port(config.address)
        else:
            self.port = self.grpc.add_secure_port(config.address, server_credentials(config.tls))
        # Health only, no business RPC and no reflection: plaintext is acceptable there.
        self.maintenance: grpc.aio.Server | None = None
        self.health_port: int | None = None
        if config.health_port is not None:
            self.maintenance = grpc.aio.server()
            health_pb2_grpc.add_HealthServicer_to_server(self.health, self.maintenance)
            self.health_port = self.maintenance.add_insecure_port(
                f"{config.host}:{config.health_port}"
            )

    async def start(self) -> int:
        """Start accepting calls, NOT_SERVING until `set_serving`; returns the bound port."""
        for name in ("", *self._names):
            await self.health.set(name, NOT_SERVING)
        await self.grpc.start()
        if self.maintenance is not None:
            await self.maintenance.start()
        log.info(
            "listening",
            extra={
                "port": self.port,
                "health_port": self.health_port,
                "services": self._names,
                "tls": self.config.tls is not None,
            },
        )
        return self.port

    async def set_serving(self) -> None:
        for name in ("", *self._names):
            await self.health.set(name, SERVING)

    @property
    def calls_in_flight(self) -> int:
        return self._calls.in_flight

    def spawn(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        """Run a background task for as long as the server runs."""
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def stop(self, grace: float | None = None) -> None:
        """Drain, then stop: no call is refused that a client could have sent elsewhere.

        1. NOT_SERVING, pushed at once to every health watcher: clients that check health
           (our channels do, see grpckit/options.py) stop picking this server.
        2. Keep serving for the drain time, so calls already on their way are served.
        3. End the health watches (they never end by themselves and would hold the grace
           period open), refuse new calls, and give in-flight ones `grace` seconds.
        Calls still queued inside gRPC when it stops get CANCELLED (grpc/grpc#41785): the
        drain is what keeps that window empty for clients that watch health.
        """
        if self._stopped is None:
            self._stopped = asyncio.ensure_future(self._stop(grace))
        # A second caller waits for the same shutdown rather than return before it is done.
        await asyncio.shield(self._stopped)

    async def _stop(self, grace: float | None) -> None:
        self.stopping.set()
        await self.health.enter_graceful_shutdown()
        grace = self.config.grace_seconds if grace is None else grace
        drain = min(self.config.drain_seconds, grace)
        log.info(
            "shutting down",
            extra={
                "drain_seconds": drain,
                "grace_seconds": grace,
                "calls_in_flight": self.calls_in_flight,
            },
        )
        if drain > 0:
            await asyncio.sleep(drain)
        self._calls.end_health_watches()
        await self.grpc.stop(grace)
        if self.maintenance is not None:
            # Last, so probes see NOT_SERVING, not a refused connection, while calls finish.
            await self.maintenance.stop(None)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def run_server(config: ServerConfig, start: Callable[[], Awaitable[Server]]) -> int:
    """Configure logs, then start a server and serve until a signal, in this process or in
    `config.workers` forked ones. Returns the exit code."""
    logs.configure(config.log_level, config.replica)

    def worker() -> int:
        run_loop(_serve_until_signal(start), config.event_loop)
        return 0

    return worker() if config.workers == 1 else run_workers(config.workers, worker)


async def _serve_until_signal(start: Callable[[], Awaitable[Server]]) -> None:
    """Serve until SIGTERM or SIGINT, then shut down gracefully."""
    server = await start()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("signal received")
    await server.stop()
    log.info("stopped")
