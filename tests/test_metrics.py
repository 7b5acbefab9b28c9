"""Metrics: gRPC's and the services' own, read over HTTP from the maintenance port, which
still answers health over gRPC; the business port serves no /metrics."""

import asyncio
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from api import cheese_pb2, cheese_pb2_grpc, movie_pb2, movie_pb2_grpc, soccer_pb2, soccer_pb2_grpc
from grpckit.lifecycle import maintenance
from grpckit.lifecycle.server import Server, running
from grpckit.telemetry import metrics
from tests import echo
from tests.conftest import ROOT, Connect, client_tls, eventually, every_service, free_port
from tests.echo import Echo
from tests.test_runtime import echo_process, settings


@pytest.fixture
async def server(pki: Path) -> AsyncIterator[Server]:
    async with running(settings(pki, health_port=0), [Echo()]) as running_server:
        yield running_server


async def http(port: int, request: bytes) -> bytes:
    """What the server at `port` answers to `request`, up to its closing the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()


async def scrape(port: int) -> str:
    answer = await http(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"Content-Type: text/plain; version=" in head
    return body.decode()


def value(text: str, name: str, **labels: str) -> float:
    """The sample `name` with exactly these `labels` in an exposition; 0 when absent."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return 0.0


async def test_grpc_call_metrics_on_the_maintenance_port(pki: Path, connect: Connect) -> None:
    """In a process of its own: gRPC's plugin is global to a process once registered."""
    port, health_port = free_port(), free_port()
    process = await echo_process(pki, "--port", str(port), env={"HEALTH_PORT": str(health_port)})
    try:
        channel = connect(port, client_tls(pki))
        call = echo.echo(channel)
        # Calls close together land in one of the plugin's batches, which grpckit records
        # as one addition per counter (grpckit/telemetry/grpc_export.py).
        answers = await asyncio.gather(*(call(f"hi {n}", timeout=10) for n in range(3)))
        assert answers == ["hi 0", "hi 1", "hi 2"]
        unknown = channel.unary_unary("/test.Echo/Unknown", None, None)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await unknown(b"", timeout=10)
        assert refused.value.code() is grpc.StatusCode.UNIMPLEMENTED
        ok = {"grpc_method": "test.Echo/Echo", "grpc_status": "OK"}

        async def counted() -> None:
            text = await scrape(health_port)
            assert value(text, "grpc_server_call_duration_seconds_count", **ok) == 3
            started = value(text, "grpc_server_call_started_total", grpc_method="test.Echo/Echo")
            assert started == 3
            sizes = "grpc_server_call_sent_total_compressed_message_size_bytes_count"
            assert value(text, sizes, **ok) == 3
            # A method the server does not have is "other", whatever the client named.
            other = {"grpc_method": "other", "grpc_status": "UNIMPLEMENTED"}
            assert value(text, "grpc_server_call_duration_seconds_count", **other) == 1

        await eventually(counted)
    finally:
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.communicate(), 30)


async def test_grpc_metrics_do_not_deadlock_a_busy_process(pki: Path) -> None:
    """grpcio-observability 1.85.0 deadlocks this process within its first calls unless
    grpckit works around it (grpckit/telemetry/metrics.py); it then exits 1 with every thread's
    stack on its own (tests/grpc_metrics_hang.py)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.grpc_metrics_hang", str(pki), "2000",
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 0, err.decode()[-3000:]
    assert out.decode().split() == ["calls", "2000"]


async def test_a_refused_call_is_counted(server: Server, connect: Connect, pki: Path) -> None:
    refused = {"grpc_method": "test.Echo/Echo", "reason": "authz"}
    before = value(metrics.exposition().decode(), "grpckit_refusals_total", **refused)
    call = echo.echo(connect(server.port, client_tls(pki, identity="monitor")))
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await call("hi", timeout=5)
    assert error.value.code() == grpc.StatusCode.PERMISSION_DENIED
    text = await scrape(server.health_port or 0)
    assert value(text, "grpckit_refusals_total", **refused) == before + 1


async def test_health_still_answers_over_grpc_on_the_same_port(
    server: Server, connect: Connect
) -> None:
    stub = health_pb2_grpc.HealthStub(connect(server.health_port or 0, None, watch_health=False))
    response = await stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert response.status == health_pb2.HealthCheckResponse.SERVING
    # Scraped in between, the port goes on answering gRPC.
    await scrape(server.health_port or 0)
    response = await stub.Check(health_pb2.HealthCheckRequest(service=echo.NAME), timeout=5)
    assert response.status == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GET / HTTP/1.1\r\n\r\n", b"404"),
        (b"POST /metrics HTTP/1.1\r\n\r\n", b"405"),
        (b"\x16\x03\x01\x02\x00garbage\r\n\r\n", b"400"),
        (b"GET /metrics\r\n\r\n", b"400"),
        (b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n", b""),
    ],
)
async def test_anything_else_gets_an_error_and_is_closed(
    server: Server, request_bytes: bytes, status: bytes
) -> None:
    answer = await http(server.health_port or 0, request_bytes)
    assert answer.startswith(b"HTTP/1.1 " + status) if status else answer == b""


async def test_a_connection_that_sends_nothing_is_closed(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(maintenance, "FIRST_BYTES_SECONDS", 0.2)
    assert await http(server.health_port or 0, b"") == b""


async def test_a_head_over_the_cap_is_refused(server: Server) -> None:
    endless = b"GET /metrics HTTP/1.1\r\nX: " + b"a" * (maintenance.HEAD_BYTES * 2)
    answer = await http(server.health_port or 0, endless)
    assert answer.startswith(b"HTTP/1.1 400")


async def test_the_business_port_serves_no_metrics(server: Server) -> None:
    answer = await http(server.port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    assert b"grpc_server" not in answer
    assert not answer.startswith(b"HTTP/1.1 200")


async def test_metrics_off_serves_none(pki: Path) -> None:
    async with running(replace(settings(pki, health_port=0), metrics=False), [Echo()]) as off:
        answer = await http(off.health_port or 0, b"GET /metrics HTTP/1.1\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 404")


async def test_services_record_their_own_metrics(pki: Path, videos: Path, connect: Connect) -> None:
    def now(name: str, **labels: str) -> float:
        return value(metrics.exposition().decode(), name, **labels)

    orders = now("cheese_orders_total", type="BRIE")
    sent = now("soccer_frames_sent_total", encoding="JPEG")
    async with every_service(pki, videos) as servers:
        tls = client_tls(pki)
        cheese = cheese_pb2_grpc.CheeseServiceStub(connect(servers["cheese"].port, tls))
        await cheese.Order(cheese_pb2.CheeseRequest(type=cheese_pb2.BRIE), timeout=5)
        assert now("cheese_orders_total", type="BRIE") == orders + 1

        movie = movie_pb2_grpc.MovieStub(connect(servers["movie"].port, tls))
        await movie.GetMovieByTitle(movie_pb2.MovieTitle(title="The Martian"), timeout=5)
        assert now("movie_catalogue_movies") > 0

        soccer = soccer_pb2_grpc.SoccerStub(connect(servers["soccer"].port, tls))
        match = soccer_pb2.Match(id="demo", encoding=soccer_pb2.JPEG, max_frames=3)
        frames = [video async for video in soccer.Watch(match, timeout=10)]
        assert len(frames) == 3
        assert now("soccer_frames_sent_total", encoding="JPEG") == sent + 3
        assert now("soccer_encode_duration_seconds_count", encoding="JPEG") >= 3

        async def left() -> None:
            assert now("soccer_viewers", encoding="JPEG") == 0
            assert now("soccer_hubs") == 0

        await eventually(left)
