from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import grpc
import pytest

from api import cheese_pb2, cheese_pb2_grpc
from cheese.server import AGE_MONTHS, Cheese, CheeseSettings
from grpckit.lifecycle.server import Server
from tests.conftest import Connect, client_tls, eventually, serving


def cheese_server(pki: Path, prep_seconds: float) -> AbstractAsyncContextManager[Server]:
    return serving(pki, "cheese", Cheese(CheeseSettings(prep_seconds)))


@pytest.fixture
async def farm(pki: Path) -> AsyncIterator[Server]:
    async with cheese_server(pki, 0.0) as server:
        yield server


def stub(connect: Connect, server: Server, pki: Path) -> cheese_pb2_grpc.CheeseServiceAsyncStub:
    return cheese_pb2_grpc.CheeseServiceStub(connect(server.port, client_tls(pki)))


@pytest.mark.parametrize("kind", cheese_pb2.CheeseType.values())
async def test_order_returns_the_type_with_a_plausible_age(
    farm: Server, connect: Connect, pki: Path, kind: cheese_pb2.CheeseType.ValueType
) -> None:
    cheese = await stub(connect, farm, pki).Order(cheese_pb2.CheeseRequest(type=kind), timeout=5)
    low, high = AGE_MONTHS[kind]
    assert cheese.type == kind
    assert low <= cheese.age <= high


@pytest.mark.parametrize("kind", [5, 99, -1, 2**31 - 1])
async def test_unknown_type_is_invalid_argument(
    farm: Server, connect: Connect, pki: Path, kind: int
) -> None:
    request = cheese_pb2.CheeseRequest(type=kind)  # type: ignore[arg-type]
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await stub(connect, farm, pki).Order(request, timeout=5)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert str(kind) in (error.value.details() or "")


async def test_deadline_shorter_than_preparation_fails_at_once(pki: Path, connect: Connect) -> None:
    async with cheese_server(pki, 60.0) as server:
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await stub(connect, server, pki).Order(cheese_pb2.CheeseRequest(), timeout=1)
        assert error.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


async def test_preparations_run_concurrently_and_cancel(
    pki: Path, connect: Connect, caplog: pytest.LogCaptureFixture
) -> None:
    """A hundred one-second orders within a ten-second deadline: nothing serialises them."""
    async with cheese_server(pki, 1.0) as server:
        farm = stub(connect, server, pki)
        orders = [farm.Order(cheese_pb2.CheeseRequest(type=cheese_pb2.BRIE), timeout=10)]
        orders += [farm.Order(cheese_pb2.CheeseRequest(), timeout=10) for _ in range(99)]
        cheeses = await asyncio.gather(*orders)
        assert [c.type for c in cheeses].count(cheese_pb2.BRIE) == 1

        with caplog.at_level(logging.INFO, logger="grpckit.access"):
            call = farm.Order(cheese_pb2.CheeseRequest(), timeout=10)

            async def preparing() -> None:
                assert server.calls_in_flight == 2  # the order and the channel's health watch

            await eventually(preparing)
            call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call

            # The server saw it too: the preparation was cut short, not finished unheard.
            async def cancelled_on_the_server() -> None:
                codes = [r.__dict__["code"] for r in caplog.records if r.name == "grpckit.access"]
                assert codes == ["CANCELLED"]

            await eventually(cancelled_on_the_server)
        assert (await farm.Order(cheese_pb2.CheeseRequest(), timeout=10)).age > 0
