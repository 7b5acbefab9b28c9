"""CheeseService: an aged cheese of the requested type, after a simulated preparation."""

import asyncio
import collections
import logging
import random
from collections.abc import Iterable
from dataclasses import dataclass

import grpc
from grpc.aio import ServicerContext
from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation

from api import cheese_pb2, cheese_pb2_grpc
from grpckit.lifecycle.service import Program, Service
from grpckit.settings import setting

log = logging.getLogger(__name__)

SERVICE_NAME = cheese_pb2.DESCRIPTOR.services_by_name["CheeseService"].full_name

# Plausible ripening times in months, low to high, for each type.
AGE_MONTHS: dict[int, tuple[int, int]] = {
    cheese_pb2.EMMENTAL: (4, 18),
    cheese_pb2.BRIE: (1, 2),
    cheese_pb2.PECORINO: (5, 12),
    cheese_pb2.ROQUEFORT: (3, 9),
    cheese_pb2.CANASTRA: (1, 6),
}

_LABELS = {value: {"type": name} for name, value in cheese_pb2.CheeseType.items()}
# Cheeses served, by type: counted here and read at each scrape (an observable counter), so
# an order costs an integer added, not a measurement through the SDK (soccer's frames too).
_orders: collections.Counter[cheese_pb2.CheeseType.ValueType] = collections.Counter()


def _served(_options: CallbackOptions) -> Iterable[Observation]:
    return [Observation(count, _LABELS[kind]) for kind, count in list(_orders.items())]


metrics.get_meter("cheese").create_observable_counter(
    "cheese.orders", [_served], description="cheeses served, by type"
)


@dataclass(frozen=True)
class CheeseSettings:
    prep_seconds: float = setting(
        0.1, "CHEESE_PREP_SECONDS", "simulated preparation time, in seconds", minimum=0
    )


class Cheese(cheese_pb2_grpc.CheeseServiceServicer, Service):
    names = (SERVICE_NAME,)

    def __init__(self, settings: CheeseSettings, rng: random.Random | None = None) -> None:
        self._prep_seconds = settings.prep_seconds
        self._rng = rng or random.Random()

    def add_to(self, server: grpc.aio.Server) -> None:
        cheese_pb2_grpc.add_CheeseServiceServicer_to_server(self, server)

    async def Order(
        self,
        request: cheese_pb2.CheeseRequest,
        context: ServicerContext[cheese_pb2.CheeseRequest, cheese_pb2.Cheese],
    ) -> cheese_pb2.Cheese:
        ages = AGE_MONTHS.get(request.type)
        if ages is None:
            known = ", ".join(cheese_pb2.CheeseType.keys())
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"unknown cheese type {request.type}; known: {known}",
            )
        remaining = context.time_remaining()
        if remaining is not None and remaining < self._prep_seconds:
            # Fail now rather than make the caller wait for an answer it cannot use.
            await context.abort(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"preparation takes {self._prep_seconds:.3f}s, "
                f"the deadline leaves {remaining:.3f}s",
            )
        if self._prep_seconds:
            # A timer, not a thread: cancellation by the caller interrupts it at once.
            await asyncio.sleep(self._prep_seconds)
        _orders[request.type] += 1
        return cheese_pb2.Cheese(age=self._rng.randint(*ages), type=request.type)


PROGRAM = Program(
    "cheese", 50051, "The cheese farm gRPC server.", CheeseSettings, lambda s: [Cheese(s)]
)
