"""A grpc.aio server hosting services (grpckit/lifecycle/service.py), and its lifecycle.

Health: NOT_SERVING from the start until every service has started, and again as soon as
shutdown begins, so load balancers and compose stop sending work first. The same health
service can also be served alone, in plaintext, on a maintenance port: Kubernetes' native
gRPC probes cannot present a client certificate. Prometheus reads `/metrics` there too
(grpckit/lifecycle/maintenance.py).
"""

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from grpckit.calls.authz import Authorization, PolicyError
from grpckit.calls.budgets import CallBudgets
from grpckit.calls.interceptors import Calls, Registrar
from grpckit.config import ServerSettings
from grpckit.lifecycle import memory, reflection, scheduling
from grpckit.lifecycle.maintenance import Maintenance
from grpckit.lifecycle.service import BackgroundTasks, Service, StartupError
from grpckit.telemetry import metrics
from grpckit.transport.options import server_options
from grpckit.transport.tls import ExpiryWatch, TlsFilesError, server_credentials

log = logging.getLogger("grpckit.server")

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class Server:
    def __init__(self, settings: ServerSettings, services: Sequence[Service]) -> None:
        self.settings = settings
        self.services = list(services)
        self._names = [name for service in services for name in service.names]
        # The asyncio servicer postdates grpc-stubs, hence the ignore.
        self.health = health.aio.HealthServicer()  # type: ignore[attr-defined]
        self.tasks = BackgroundTasks()
        self._calls = Calls(
            self._names, settings.access_log, settings.replica, settings.forwarded_client_cert_from
        )
        # Calls and streams in use, by the server and per client: tests read them.
        self.budgets = self._calls.budgets = CallBudgets(settings)
        # The bound ports, once `start` has bound them.
        self.port = 0
        self.health_port: int | None = None
        self._grpc: grpc.aio.Server | None = None
        self._maintenance: Maintenance | None = None
        self._stopped: asyncio.Future[None] | None = None

    @property
    def calls_in_flight(self) -> int:
        return self._calls.in_flight.count

    async def start(self) -> None:
        """Listen (NOT_SERVING), start every service, then report SERVING.

        StartupError when a port cannot be bound, a TLS file cannot be read or a service
        cannot start; the server is stopped again by then.
        """
        if self.settings.metrics:
            # Before any gRPC server exists: gRPC's plugin applies to those made after it.
            metrics.install(
                "grpckit", self.settings.replica, grpc_plugin=self.settings.grpc_metrics
            )
        try:
            self._authorize()
            await self._listen()
            self.tasks.spawn(scheduling.keep(self.settings.grpc_thread_policy))
            for service in self.services:
                await service.start(self.tasks)
        except BaseException:
            await self._close(0)
            raise
        self._calls.started = True
        self.tasks.spawn(memory.reclaim(lambda: self.calls_in_flight))
        if metrics.grpc_plugin():
            self.tasks.spawn(memory.collect_on_loop())
        await self._set_health(SERVING)
        log.info("serving", extra={"services": self._names})

    def _build(self) -> grpc.aio.Server:
        server = grpc.aio.server(
            options=server_options(
                self.settings.max_connection_age, self.settings.handshake_timeout
            )
        )
        registrar = Registrar(server, self._calls)
        for service in self.services:
            service.add_to(registrar)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, registrar)
        reflection.enable([*self._names, health.SERVICE_NAME], registrar)
        return server

    def _authorize(self) -> None:
        """Every call checked against the policy; in plaintext no caller has an identity to
        check, so there is none."""
        if self.settings.tls is None:
            return
        path = self.settings.authz_policy
        try:
            authorization = Authorization(path)
        except OSError as error:
            raise StartupError(
                f"cannot read authorization policy {path}: {error.strerror}"
            ) from None
        except PolicyError as error:
            raise StartupError(f"bad authorization policy {path}: {error}") from None
        self._calls.authorization = authorization
        self.tasks.spawn(authorization.watch())
        log.info(
            "authorizing", extra={"policy": str(path), "policy_name": authorization.policy.name}
        )

    async def _listen(self) -> None:
        settings = self.settings
        self._grpc = self._build()
        tls = settings.tls
        if tls is None:
            log.warning(
                "serving PLAINTEXT: no TLS, no client certificates, no authorization (--insecure)"
            )
            self.port = _bind(self._grpc, settings.address, None)
        else:
            try:
                credentials = server_credentials(tls)
            except (OSError, TlsFilesError) as error:
                raise StartupError(f"cannot read TLS files: {error}") from None
            self.tasks.spawn(ExpiryWatch(tls.cert, tls.key).watch())
            self.port = _bind(self._grpc, settings.address, credentials)
        await self._set_health(NOT_SERVING)
        await self._grpc.start()
        if settings.health_port is not None:
            # Health only, no business RPC and no reflection: plaintext is acceptable there.
            health_only = grpc.aio.server()
            health_pb2_grpc.add_HealthServicer_to_server(self.health, health_only)
            self._maintenance = Maintenance(health_only, serve_metrics=settings.metrics)
            address = f"{settings.host}:{settings.health_port}"
            try:
                self.health_port = await self._maintenance.start(
                    settings.host, settings.health_port
                )
            except (OSError, RuntimeError) as error:
                raise StartupError(f"cannot listen on {address} (in use?): {error}") from None
        log.info(
            "listening",
            extra={
                "port": self.port,
                "health_port": self.health_port,
                "services": self._names,
                "tls": tls is not None,
            },
        )

    async def _set_health(self, status: health_pb2.HealthCheckResponse.ServingStatus) -> None:
        for name in ("", *self._names):
            await self.health.set(name, status)

    async def stop(self, grace: float | None = None) -> None:
        """Drain, then stop: no call is refused that a client could have sent elsewhere.

        1. NOT_SERVING, pushed at once to every health watcher: clients that check health
           (our channels do, see grpckit/transport/options.py) stop picking this server; every
           service's `stop` is called. Health asked through the edge is about the service
           behind it, not this replica: it gets UNAVAILABLE (the edge asks another) and its
           watches end (grpckit/calls/in_flight.py).
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
        self._calls.in_flight.drain()
        await self.health.enter_graceful_shutdown()
        grace = self.settings.grace if grace is None else grace
        drain = min(self.settings.drain, grace)
        log.info(
            "shutting down",
            extra={
                "drain_seconds": drain,
                "grace_seconds": grace,
                "calls_in_flight": self.calls_in_flight,
            },
        )
        for service in self.services:
            await service.stop()
        if drain > 0:
            await asyncio.sleep(drain)
        self._calls.in_flight.end_health_watches()
        await self._close(grace)

    async def _close(self, grace: float) -> None:
        if self._grpc is not None:
            await self._grpc.stop(grace)
        if self._maintenance is not None:
            # Last, so probes see NOT_SERVING, not a refused connection, while calls finish.
            await self._maintenance.stop()
        await self.tasks.cancel()


def _bind(server: grpc.aio.Server, address: str, credentials: grpc.ServerCredentials | None) -> int:
    try:
        if credentials is None:
            return server.add_insecure_port(address)
        return server.add_secure_port(address, credentials)
    except RuntimeError as error:
        # grpcio says only "Failed to bind"; the usual cause is another process on the port.
        raise StartupError(f"cannot listen on {address} (in use?): {error}") from None


@asynccontextmanager
async def running(settings: ServerSettings, services: Sequence[Service]) -> AsyncIterator[Server]:
    """`services` served until the block ends (then stopped at once); `settings.port` 0
    picks a free port, which is `server.port`."""
    server = Server(settings, services)
    await server.start()
    try:
        yield server
    finally:
        await server.stop(0)
