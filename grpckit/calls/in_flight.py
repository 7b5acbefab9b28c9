"""Calls in flight: shutdown reports how many, tests wait on the count, and health watches
are remembered so that shutdown can end them (they never end by themselves and would hold
the grace period open)."""

import asyncio
from collections.abc import Callable
from typing import Any

from grpc.aio import ServicerContext

HEALTH_WATCH = "/grpc.health.v1.Health/Watch"

Behaviour = Callable[..., Any]


class InFlight:
    def __init__(self) -> None:
        self.count = 0
        self._health_watches: set[asyncio.Task[Any]] = set()

    def tracked(self, behaviour: Behaviour) -> Behaviour:
        """`behaviour`, a health watch, run so that `end_health_watches` can cancel it."""

        async def watch(request: Any, context: ServicerContext[Any, Any]) -> Any:
            task = asyncio.current_task()
            assert task is not None
            self._health_watches.add(task)
            try:
                return await behaviour(request, context)
            finally:
                self._health_watches.discard(task)

        return watch

    def end_health_watches(self) -> None:
        for task in self._health_watches:
            task.cancel()
