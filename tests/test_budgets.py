"""Budgets of calls and streams (grpckit/calls/budgets.py) and the handshake deadline, through
the echo service: refusals are immediate and named, cost the handler nothing, and every
exit gives back what the call took."""

import asyncio
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import nullcontext, suppress
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import pytest

from grpckit.config import ServerSettings
from grpckit.lifecycle.server import Server, running
from grpckit.transport.options import server_options
from tests.conftest import Connect, client_tls, eventually, server_settings
from tests.echo import Context, Echo, echo, ticks

POLICY = Path(__file__).with_name("budgets_authz.json")
EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED


def mint_client(pki: Path, name: str) -> Path:
    """A client certificate for `name` from the test CA: a second identity."""
    if not (pki / f"{name}.crt").exists():
        key, csr, ext = (pki / f"{name}.{suffix}" for suffix in ("key", "csr", "ext"))
        ext.write_text(f"extendedKeyUsage = clientAuth\nsubjectAltName = DNS:{name}\n")
        for command in (
            ["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-out", str(key)],
            ["openssl", "req", "-new", "-key", str(key), "-subj", f"/CN={name}", "-out", str(csr)],
            ["openssl", "x509", "-req", "-in", str(csr), "-CA", str(pki / "ca.crt"),
             "-CAkey", str(pki / "ca.key"), "-days", "2", "-extfile", str(ext),
             "-out", str(pki / f"{name}.crt")],
        ):  # fmt: skip
            subprocess.run(command, check=True, capture_output=True)
    return pki


@pytest.fixture(scope="session")
def other(pki: Path) -> Path:
    return mint_client(pki, "other")


def settings(pki: Path, **changes: Any) -> ServerSettings:
    return replace(server_settings(pki, "cheese", policy=POLICY), **changes)


class Counted(Echo):
    """Echo that counts the calls its handlers saw: a refused call must not be one."""

    def __init__(self) -> None:
        super().__init__()
        self.handled = 0

    async def Echo(self, request: str, context: Context) -> bytes:
        self.handled += 1
        return await super().Echo(request, context)


async def refused(call: Awaitable[Any]) -> str:
    """The details of a call that must end RESOURCE_EXHAUSTED."""
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await call
    assert failure.value.code() == EXHAUSTED
    return str(failure.value.details())


async def until(condition: Callable[[], bool]) -> None:
    async def check() -> None:
        assert condition()

    await eventually(check)


@pytest.fixture
async def small(pki: Path, other: Path) -> AsyncIterator[tuple[Server, Counted]]:
    """A server of two unary calls (two per client) and one stream at a time."""
    service = Counted()
    budgets = settings(
        pki, max_calls=2, max_calls_per_client=2, max_streams=2, max_streams_per_client=1
    )
    async with running(budgets, [service]) as server:
        yield server, service


async def test_a_call_over_the_budget_is_refused_at_once_without_reaching_its_handler(
    small: tuple[Server, Counted], connect: Connect, pki: Path
) -> None:
    server, service = small
    call = echo(connect(server.port, client_tls(pki)))
    sleepers = [asyncio.ensure_future(call("sleep 60", timeout=60)) for _ in range(2)]
    await until(lambda: server.budgets.calls.total.in_use == 2)
    handled = service.handled
    details = await refused(call("hello", timeout=30))
    assert details == "unary calls of client 'client': 2 of 2 in use (MAX_CALLS_PER_CLIENT)"
    # The server's own budget is spent too: another identity is refused, naming it.
    elsewhere = echo(connect(server.port, client_tls(pki, identity="other")))
    details = await refused(elsewhere("hello", timeout=30))
    assert details == "unary calls: 2 of 2 in use (MAX_CALLS)"
    assert service.handled == handled
    for sleeper in sleepers:
        sleeper.cancel()
    # Cancelled calls give their share back: the next call is served.
    await until(lambda: server.budgets.calls.total.in_use == 0)
    assert await call("hello", timeout=30) == "hello"


@pytest.mark.parametrize("ending", ["deadline", "error", "abort", "cancel", "ok"])
async def test_every_way_a_call_ends_gives_its_share_back(
    small: tuple[Server, Counted], connect: Connect, pki: Path, ending: str
) -> None:
    server, _ = small
    call = echo(connect(server.port, client_tls(pki)))
    for _ in range(3):  # more calls than the budget: each must have given back its share
        if ending == "cancel":
            pending = asyncio.ensure_future(call("sleep 60", timeout=60))
            await until(lambda: server.budgets.calls.total.in_use == 1)
            pending.cancel()
        else:
            request = {"deadline": "sleep 60", "error": "bug", "abort": "reject", "ok": "hi"}
            fails = pytest.raises(grpc.aio.AioRpcError) if ending != "ok" else nullcontext()
            with fails:
                await call(request[ending], timeout=0.5 if ending == "deadline" else 30)
        await until(lambda: server.budgets.calls.total.in_use == 0)
    assert server.budgets.calls.per_client.in_use == {}


async def test_a_stream_holds_its_share_for_its_whole_life_apart_from_unary_calls(
    small: tuple[Server, Counted], connect: Connect, pki: Path
) -> None:
    server, _ = small
    channel = connect(server.port, client_tls(pki))
    first = ticks(channel)("10", timeout=60)
    assert (await first.read()).startswith("0 ")
    details = await refused(ticks(channel)("10", timeout=30).read())
    assert details == "streams of client 'client': 1 of 1 in use (MAX_STREAMS_PER_CLIENT)"
    # Streams do not take the room of unary calls.
    assert await echo(channel)("still here", timeout=30) == "still here"
    first.cancel()
    await until(lambda: server.budgets.streams.total.in_use == 0)
    again = ticks(channel)("10", timeout=60)
    assert (await again.read()).startswith("0 ")
    again.cancel()


async def test_a_greedy_client_does_not_starve_another_identity(
    pki: Path, other: Path, connect: Connect
) -> None:
    service = Counted()
    budgets = settings(pki, max_calls=4, max_calls_per_client=2)
    async with running(budgets, [service]) as server:
        greedy = echo(connect(server.port, client_tls(pki)))
        second = echo(connect(server.port, client_tls(other, identity="other")))
        sleepers = [asyncio.ensure_future(greedy("sleep 60", timeout=60)) for _ in range(2)]
        await until(lambda: server.budgets.calls.per_client.in_use.get("client") == 2)
        details = await refused(greedy("more", timeout=30))
        assert details == "unary calls of client 'client': 2 of 2 in use (MAX_CALLS_PER_CLIENT)"
        assert await second("me too", timeout=30) == "me too"
        for sleeper in sleepers:
            sleeper.cancel()
        await until(lambda: server.budgets.calls.total.in_use == 0)


def test_budgets_per_client_cannot_exceed_the_servers() -> None:
    with pytest.raises(ValueError, match="MAX_STREAMS_PER_CLIENT must not exceed MAX_STREAMS"):
        ServerSettings(max_streams=2, max_streams_per_client=3)


def test_the_handshake_deadline_is_ten_seconds_unless_set() -> None:
    assert ("grpc.server_handshake_timeout_ms", 10_000) in server_options(60)
    assert ("grpc.server_handshake_timeout_ms", 250) in server_options(60, 0.25)


async def test_a_connection_that_never_finishes_its_handshake_is_closed(pki: Path) -> None:
    # gRPC's own deadline is 120 s: a close well before that is the setting's doing.
    async with running(settings(pki, handshake_timeout=0.3), [Echo()]) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        try:
            # Nothing sent: the server ends the connection (EOF, or a reset).
            with suppress(ConnectionResetError):
                assert await asyncio.wait_for(reader.read(1), timeout=60) == b""
        finally:
            writer.close()
