"""What a service tells the runtime, and nothing more: its names, how it adds itself to a
gRPC server, what it does before serving and when shutdown begins.

The runtime (grpckit/lifecycle/server.py) owns the rest: health, reflection, ports, drain, grace,
background tasks and signals. A service never sees the server it runs in.
"""

import asyncio
import logging
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import grpc

log = logging.getLogger("grpckit.service")


class StartupError(Exception):
    """A cause the operator can fix (a file missing or bad, a port taken): the server logs
    it as one line, without a traceback, and exits 1."""


class BackgroundTasks:
    """Tasks that run for as long as the server serves; shutdown cancels them after the
    grace period, and one that fails is logged rather than lost."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task failed", exc_info=task.exception())

    async def cancel(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class Service:
    """One gRPC service. Subclasses set `names` and `add_to`; `start` and `stop` are optional.

    The server answers NOT_SERVING until every service's `start` has returned, and again as
    soon as shutdown begins, when every service's `stop` is called; calls in flight then
    get the drain and grace periods to finish.
    """

    #: The full proto names of the services added by `add_to` (health and reflection use them).
    names: Sequence[str] = ()

    def add_to(self, server: grpc.aio.Server) -> None:
        """Add the servicers, e.g. with the generated `add_..._to_server`."""
        raise NotImplementedError

    async def start(self, tasks: BackgroundTasks) -> None:
        """Load what serving needs; raise StartupError when it cannot be had."""

    async def stop(self) -> None:
        """Shutdown has begun: end what would not end by itself (long streams, waits)."""


S = TypeVar("S")


@dataclass(frozen=True)
class Program(Generic[S]):
    """A server program: `python -m <name>` runs `services(settings)` on `port` by default,
    with the settings of every server plus the `settings` dataclass of its own."""

    name: str
    port: int
    description: str
    settings: type[S]
    services: Callable[[S], Sequence[Service]]
    #: Server settings (grpckit/config.py) whose default this program changes, by field
    #: name: budgets sized to its container's memory.
    defaults: Mapping[str, Any] = field(default_factory=dict)
