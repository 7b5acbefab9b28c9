"""Calls in flight: shutdown reports how many, tests wait on the count, and health watches
are remembered so that shutdown can end them (they never end by themselves and would hold
the grace period open).

A health check that reaches a replica through the edge asks about the service behind the
edge, not about this replica: its client (a host's, with one connection, to the edge) must
not stop calling because the one replica the edge sent its watch to is draining. So once
draining, such checks are refused with UNAVAILABLE, which the edge retries on another
replica, and such watches end at once, so that their clients watch again through the edge.
Direct checks (the edge's own, probes, clients that balance over the replicas themselves)
see NOT_SERVING as before.
"""

import asyncio
from collections.abc import Callable
from typing import Any

import grpc
from grpc.aio import ServicerContext

from grpckit.calls import callers

HEALTH_WATCH = "/grpc.health.v1.Health/Watch"
HEALTH_CHECK = "/grpc.health.v1.Health/Check"

Behaviour = Callable[..., Any]

_DRAINING = "draining: this replica stops serving; ask again through the edge"


class InFlight:
    def __init__(self) -> None:
        self.count = 0
        self._health_watches: set[asyncio.Task[Any]] = set()
        self._forwarded_watches: set[asyncio.Task[Any]] = set()
        self.draining = False

    def checked(self, behaviour: Behaviour) -> Behaviour:
        """`behaviour`, the health check, refused to forwarded callers while draining."""

        async def check(request: Any, context: ServicerContext[Any, Any]) -> Any:
            if callers.current().via:
                await self._refused_while_draining(context)
            return await behaviour(request, context)

        return check

    async def _refused_while_draining(self, context: ServicerContext[Any, Any]) -> None:
        if self.draining:
            await context.abort(grpc.StatusCode.UNAVAILABLE, _DRAINING)

    def tracked(self, behaviour: Behaviour) -> Behaviour:
        """`behaviour`, a health watch, run so that `end_health_watches` can cancel it."""

        async def watch(request: Any, context: ServicerContext[Any, Any]) -> Any:
            if callers.current().via:
                return await self._forwarded(behaviour, request, context)
            task = asyncio.current_task()
            assert task is not None
            self._health_watches.add(task)
            try:
                return await behaviour(request, context)
            finally:
                self._health_watches.discard(task)

        return watch

    async def _forwarded(
        self, behaviour: Behaviour, request: Any, context: ServicerContext[Any, Any]
    ) -> Any:
        """A forwarded watch runs in a task of its own, so that `drain` can stop it and the
        call still end with a status (a call whose own task is cancelled ends with none,
        and its client would wait out its deadline)."""
        await self._refused_while_draining(context)
        inner = asyncio.ensure_future(behaviour(request, context))
        self._forwarded_watches.add(inner)
        try:
            return await inner
        except asyncio.CancelledError:
            call = asyncio.current_task()
            if call is None or call.cancelling() or not self.draining:
                raise  # the call itself was cancelled: its client went away
        finally:
            self._forwarded_watches.discard(inner)
        await context.abort(grpc.StatusCode.UNAVAILABLE, _DRAINING)

    def drain(self) -> None:
        """From now on forwarded health calls are refused, and their watches end now."""
        self.draining = True
        for task in self._forwarded_watches:
            task.cancel()

    def end_health_watches(self) -> None:
        for task in (*self._health_watches, *self._forwarded_watches):
            task.cancel()
