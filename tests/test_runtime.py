"""The shared runtime, through the cheese server: TLS, health, reflection, logs, shutdown."""

import asyncio
import json
import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from api import cheese_pb2, cheese_pb2_grpc
from cheese.server import CheeseConfig, build, start
from client.common import served_by
from grpckit.channel import ClientTls
from grpckit.server import Server
from tests.conftest import ROOT, Connect, client_tls, eventually, server_config

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
CHEESE = "cheesefarm.CheeseService"


@pytest.fixture
async def farm(pki: Path) -> AsyncIterator[Server]:
    server = await start(CheeseConfig(server_config(pki, "cheese"), 0.0))
    yield server
    await server.stop(0)


@asynccontextmanager
async def cheese_server(pki: Path, prep: float = 0.0, **changes: Any) -> AsyncIterator[Server]:
    """A cheese server whose config differs from the tests' default by `changes`."""
    server = await start(CheeseConfig(replace(server_config(pki, "cheese"), **changes), prep))
    try:
        yield server
    finally:
        await server.stop(0)


async def check(channel: grpc.aio.Channel, service: str = "") -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    response = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
    return int(response.status)


async def test_health_is_not_serving_until_ready_then_serving(pki: Path, connect: Connect) -> None:
    server = build(CheeseConfig(server_config(pki, "cheese"), 0.0))
    await server.start()
    try:
        channel = connect(server.port, client_tls(pki), watch_health=False)
        assert await check(channel) == NOT_SERVING
        assert await check(channel, CHEESE) == NOT_SERVING
        await server.set_serving()
        assert await check(channel) == SERVING
        assert await check(channel, CHEESE) == SERVING
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await check(channel, "no.such.Service")
        assert error.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        await server.stop(0)


async def test_shutdown_flips_health_first_and_lets_in_flight_calls_finish(
    pki: Path, connect: Connect
) -> None:
    server = await start(CheeseConfig(server_config(pki, "cheese", grace=10), 1.0))
    channel = connect(server.port, client_tls(pki), watch_health=False)
    watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=CHEESE))
    updates = watch.__aiter__()
    assert (await updates.__anext__()).status == SERVING
    order = asyncio.ensure_future(
        cheese_pb2_grpc.CheeseServiceStub(channel).Order(cheese_pb2.CheeseRequest(), timeout=10)
    )

    async def in_flight() -> None:
        assert server.calls_in_flight == 2  # the health watch and the order

    await eventually(in_flight)
    stopping = asyncio.ensure_future(server.stop())
    assert (await updates.__anext__()).status == NOT_SERVING
    watch.cancel()  # a health watch never ends by itself: it would hold shutdown for the grace
    assert (await order).age > 0
    await stopping


async def test_reflection_lists_every_service(farm: Server, connect: Connect, pki: Path) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(connect(farm.port, client_tls(pki)))
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    responses = [r async for r in stub.ServerReflectionInfo(iter([request]), timeout=5)]
    names = {s.name for s in responses[0].list_services_response.service}
    assert names == {CHEESE, "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"}


@pytest.fixture(scope="module")
def expired_client(pki: Path, tmp_path_factory: pytest.TempPathFactory) -> ClientTls:
    """A client certificate from the right CA whose validity ended yesterday."""
    directory = tmp_path_factory.mktemp("expired")
    key, csr, crt = directory / "old.key", directory / "old.csr", directory / "old.crt"
    extensions = directory / "ext"
    extensions.write_text("extendedKeyUsage=clientAuth\n")
    for command in (
        ["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", key],
        ["req", "-new", "-key", key, "-subj", "/CN=expired", "-out", csr],
        ["x509", "-req", "-in", csr, "-CA", pki / "ca.crt", "-CAkey", pki / "ca.key",
         "-days", "-1", "-extfile", extensions, "-out", crt],
    ):  # fmt: skip
        subprocess.run(["openssl", *map(str, command)], check=True, capture_output=True)
    return ClientTls(pki / "ca.crt", crt, key)


@pytest.mark.parametrize(
    "client",
    ["plaintext", "no-certificate", "foreign-ca", "foreign-trust", "expired", "name-mismatch"],
)
async def test_handshakes_without_a_valid_client_certificate_are_refused(
    farm: Server,
    connect: Connect,
    pki: Path,
    foreign_pki: Path,
    expired_client: ClientTls,
    client: str,
) -> None:
    tls: ClientTls | None = {
        "plaintext": None,
        "no-certificate": client_tls(pki, with_cert=False),
        "foreign-ca": ClientTls(
            pki / "ca.crt", foreign_pki / "client.crt", foreign_pki / "client.key"
        ),
        "foreign-trust": client_tls(foreign_pki),
        "expired": expired_client,
        # The cheese server's certificate does not name "movie": the client must refuse it.
        "name-mismatch": ClientTls(pki / "ca.crt", pki / "client.crt", pki / "client.key", "movie"),
    }[client]
    channel = connect(farm.port, tls)
    stub = cheese_pb2_grpc.CheeseServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as error:
        # No wait_for_ready here: it would wait out the deadline instead of reporting.
        await stub.Order(cheese_pb2.CheeseRequest(), timeout=5, wait_for_ready=False)
    assert error.value.code() == grpc.StatusCode.UNAVAILABLE
    # The same server still serves a client with a valid certificate.
    good = cheese_pb2_grpc.CheeseServiceStub(connect(farm.port, client_tls(pki)))
    assert (await good.Order(cheese_pb2.CheeseRequest(), timeout=5)).age > 0


async def test_plaintext_only_when_asked_for(pki: Path, connect: Connect) -> None:
    server = await start(CheeseConfig(server_config(pki, "cheese", tls=False), 0.0))
    try:
        stub = cheese_pb2_grpc.CheeseServiceStub(connect(server.port, None))
        assert (await stub.Order(cheese_pb2.CheeseRequest(), timeout=5)).age > 0
        tls_stub = cheese_pb2_grpc.CheeseServiceStub(connect(server.port, client_tls(pki)))
        with pytest.raises(grpc.aio.AioRpcError):
            await tls_stub.Order(cheese_pb2.CheeseRequest(), timeout=5, wait_for_ready=False)
    finally:
        await server.stop(0)


async def test_each_call_is_logged_with_method_peer_code_and_duration(
    farm: Server, connect: Connect, pki: Path, caplog: pytest.LogCaptureFixture
) -> None:
    stub = cheese_pb2_grpc.CheeseServiceStub(connect(farm.port, client_tls(pki)))
    with caplog.at_level(logging.INFO, logger="grpckit.access"):
        await stub.Order(cheese_pb2.CheeseRequest(), timeout=5)
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.Order(cheese_pb2.CheeseRequest(type=42), timeout=5)  # type: ignore[arg-type]
    calls = [r.__dict__ for r in caplog.records if r.name == "grpckit.access"]
    assert [c["code"] for c in calls] == ["OK", "INVALID_ARGUMENT"]
    for call in calls:
        assert call["method"] == "/cheesefarm.CheeseService/Order"
        assert call["peer"].startswith("ipv4:127.0.0.1:") or call["peer"].startswith("ipv6:")
        assert call["client"] == "client"
        assert call["duration_ms"] >= 0


@pytest.mark.parametrize(("mode", "logged"), [("errors", ["INVALID_ARGUMENT"]), ("off", [])])
async def test_access_log_can_keep_only_errors_or_nothing(
    pki: Path, connect: Connect, caplog: pytest.LogCaptureFixture, mode: str, logged: list[str]
) -> None:
    async with cheese_server(pki, access_log=mode) as server:
        stub = cheese_pb2_grpc.CheeseServiceStub(connect(server.port, client_tls(pki)))
        with caplog.at_level(logging.INFO, logger="grpckit.access"):
            await stub.Order(cheese_pb2.CheeseRequest(), timeout=5)
            with pytest.raises(grpc.aio.AioRpcError):
                await stub.Order(cheese_pb2.CheeseRequest(type=42), timeout=5)  # type: ignore[arg-type]
        assert [r.__dict__["code"] for r in caplog.records if r.name == "grpckit.access"] == logged


async def test_maintenance_port_serves_health_alone_in_plaintext(
    pki: Path, connect: Connect
) -> None:
    config = replace(server_config(pki, "cheese"), health_port=0)
    server = build(CheeseConfig(config, 0.0))
    await server.start()
    try:
        assert server.health_port is not None
        assert server.health_port != server.port
        plain = connect(server.health_port, None, watch_health=False)
        assert await check(plain) == NOT_SERVING
        await server.set_serving()
        assert await check(plain, CHEESE) == SERVING
        # No business RPC and no reflection on the plaintext port.
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await cheese_pb2_grpc.CheeseServiceStub(plain).Order(
                cheese_pb2.CheeseRequest(), timeout=5
            )
        assert error.value.code() == grpc.StatusCode.UNIMPLEMENTED
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        with pytest.raises(grpc.aio.AioRpcError) as error:
            stub = reflection_pb2_grpc.ServerReflectionStub(plain)
            [r async for r in stub.ServerReflectionInfo(iter([request]), timeout=5)]
        assert error.value.code() == grpc.StatusCode.UNIMPLEMENTED
        # Shutdown: the probe sees NOT_SERVING first, while calls drain.
        stopping = asyncio.ensure_future(server.stop(1))

        async def not_serving() -> None:
            assert await check(plain) == NOT_SERVING

        await eventually(not_serving)
        await stopping
    finally:
        await server.stop(0)


async def test_responses_name_the_replica_that_served_them(pki: Path, connect: Connect) -> None:
    async with cheese_server(pki, replica="cheese-7") as server:
        channel = connect(server.port, client_tls(pki))
        order = cheese_pb2_grpc.CheeseServiceStub(channel).Order(cheese_pb2.CheeseRequest())
        await order
        assert served_by(await order.trailing_metadata()) == "cheese-7"
        failed = cheese_pb2_grpc.CheeseServiceStub(channel).Order(
            cheese_pb2.CheeseRequest(type=42)  # type: ignore[arg-type]
        )
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await failed
        assert served_by(error.value.trailing_metadata()) == "cheese-7"
        # A stream names its server before its first message.
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest())
        assert served_by(await watch.initial_metadata()) == "cheese-7"
        watch.cancel()


async def test_connection_age_moves_new_calls_on_without_cutting_one_in_flight(
    pki: Path, connect: Connect
) -> None:
    # Each order outlives the connection's age.
    async with cheese_server(pki, prep=1.5, max_connection_age_seconds=0.3) as server:
        stub = cheese_pb2_grpc.CheeseServiceStub(connect(server.port, client_tls(pki)))
        orders = [await stub.Order(cheese_pb2.CheeseRequest(), timeout=10) for _ in range(2)]
        assert all(order.age > 0 for order in orders)


async def read_logs_until(
    stream: asyncio.StreamReader, message: str, count: int
) -> list[dict[str, Any]]:
    lines: list[dict[str, Any]] = []
    while sum(line["message"] == message for line in lines) < count:
        line = await asyncio.wait_for(stream.readline(), 30)
        assert line, f"exited early: {lines}"
        lines.append(json.loads(line))
    return [line for line in lines if line["message"] == message]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.mark.parametrize("workers", [1, 2])
async def test_process_serves_then_exits_0_on_sigterm(
    pki: Path, connect: Connect, workers: int
) -> None:
    port = 0 if workers == 1 else free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cheese", "--host", "127.0.0.1", "--port", str(port),
        "--workers", str(workers),
        "--tls-cert", str(pki / "cheese.crt"), "--tls-key", str(pki / "cheese.key"),
        "--tls-ca", str(pki / "ca.crt"),
        cwd=ROOT, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stderr is not None
    try:
        listening = await read_logs_until(process.stderr, "listening", workers)
        assert len({line["pid"] for line in listening}) == workers
        channel = connect(listening[0]["port"], client_tls(pki))

        async def serving() -> None:
            assert await check(channel, CHEESE) == SERVING

        await eventually(serving)
        process.send_signal(signal.SIGTERM)
        output = (await asyncio.wait_for(process.stderr.read(), 30)).decode()
        assert await asyncio.wait_for(process.wait(), 30) == 0
        messages = [json.loads(x)["message"] for x in output.splitlines()]
        assert messages.count("stopped") == workers
    finally:
        if process.returncode is None:
            process.kill()


def test_help_documents_every_setting_and_its_variable() -> None:
    for service, variables in {
        "cheese": ["CHEESE_PREP_SECONDS"],
        "movie": ["MOVIE_CATALOGUE", "MOVIE_RELOAD_SECONDS"],
        "soccer": ["SOCCER_VIDEOS_DIR"],
    }.items():
        result = subprocess.run(
            [sys.executable, "-m", service, "--help"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            env={**os.environ, "COLUMNS": "300"},  # one line per setting
        )
        assert result.returncode == 0
        for variable in ["HOST", "PORT", "TLS_CERT", "TLS_KEY", "TLS_CA", "INSECURE",
                         "SHUTDOWN_GRACE", "SHUTDOWN_DRAIN", "LOG_LEVEL", "ACCESS_LOG",
                         "WORKERS", "HEALTH_PORT", "REPLICA_NAME", "MAX_CONNECTION_AGE", "EVENT_LOOP",
                         *variables]:  # fmt: skip
            assert f"[env {variable}]" in result.stdout, (service, variable)


def test_environment_sets_defaults_and_flags_override(monkeypatch: pytest.MonkeyPatch) -> None:
    from cheese.server import load_config

    monkeypatch.setenv("PORT", "6000")
    monkeypatch.setenv("CHEESE_PREP_SECONDS", "0.5")
    monkeypatch.setenv("INSECURE", "true")
    config = load_config([])
    assert (config.server.port, config.prep_seconds, config.server.tls) == (6000, 0.5, None)
    config = load_config(["--port", "7000", "--insecure", "false"])
    assert config.server.port == 7000
    assert config.server.tls is not None
    with pytest.raises(SystemExit):
        load_config(["--prep-seconds", "-1"])


@pytest.mark.parametrize(("service", "code"), [("", 0), (CHEESE, 0), ("no.such.Service", 1)])
async def test_health_probe_for_container_healthchecks(
    farm: Server, pki: Path, service: str, code: int
) -> None:
    env = {
        **os.environ,
        "PORT": str(farm.port),
        "TLS_CERT": str(pki / "cheese.crt"),
        "TLS_KEY": str(pki / "cheese.key"),
        "TLS_CA": str(pki / "ca.crt"),
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "grpckit.probe", "--service", service, cwd=ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == code, err
    assert (out.decode().strip() == "SERVING") == (code == 0)


async def test_rotated_certificates_are_used_for_new_connections_without_a_restart(
    pki: Path, foreign_pki: Path, connect: Connect, tmp_path: Path
) -> None:
    live = tmp_path / "live"
    live.mkdir()
    for name in ("cheese.crt", "cheese.key", "ca.crt"):
        (live / name).write_bytes((pki / name).read_bytes())
    server = await start(CheeseConfig(server_config(live, "cheese"), 0.0))
    try:
        old = cheese_pb2_grpc.CheeseServiceStub(connect(server.port, client_tls(pki)))
        assert (await old.Order(cheese_pb2.CheeseRequest(), timeout=5)).age > 0

        # Rotate everything to a new CA: server identity and the CA clients must chain to.
        for name in ("cheese.crt", "cheese.key", "ca.crt"):
            staged = live / f".{name}"
            staged.write_bytes((foreign_pki / name).read_bytes())
            staged.replace(live / name)

        new = cheese_pb2_grpc.CheeseServiceStub(connect(server.port, client_tls(foreign_pki)))
        assert (await new.Order(cheese_pb2.CheeseRequest(), timeout=5)).age > 0
        # The connection made before the rotation keeps working until it closes...
        assert (await old.Order(cheese_pb2.CheeseRequest(), timeout=5)).age > 0
        # ...while a new connection with the old credentials is refused.
        stale = cheese_pb2_grpc.CheeseServiceStub(connect(server.port, client_tls(pki)))
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await stale.Order(cheese_pb2.CheeseRequest(), timeout=5, wait_for_ready=False)
        assert error.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await server.stop(0)


async def test_a_restart_under_load_fails_no_call(pki: Path, connect: Connect) -> None:
    """Clients watch health, so the drain after NOT_SERVING sends no call into the stop."""
    config = CheeseConfig(replace(server_config(pki, "cheese", grace=5), port=free_port()), 0.0)
    server = await start(config)
    stub = cheese_pb2_grpc.CheeseServiceStub(connect(config.server.port, client_tls(pki)))
    done: list[int] = []
    errors: list[str] = []
    running = True

    async def caller() -> None:
        while running:
            try:
                done.append((await stub.Order(cheese_pb2.CheeseRequest(), timeout=30)).age)
            except grpc.aio.AioRpcError as error:
                errors.append(f"{error.code().name}: {error.details()}")

    callers = [asyncio.create_task(caller()) for _ in range(8)]

    def served(count: int) -> Callable[[], Awaitable[None]]:
        async def check() -> None:
            assert len(done) >= count

        return check

    try:
        await eventually(served(200))
        await server.stop()
        before = len(done)
        server = await start(config)  # the same port, as after a container restart
        await eventually(served(before + 200))
    finally:
        running = False
        await asyncio.gather(*callers)
        await server.stop(0)
    assert errors == []
