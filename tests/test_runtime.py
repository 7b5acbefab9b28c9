"""The shared runtime (grpckit), through the tests' own echo service (tests/echo.py):
lifecycle, health, reflection, TLS, interceptors, shutdown, processes and settings."""

import asyncio
import json
import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from client.common import served_by
from grpckit.client.channel import ClientTls
from grpckit.config import AccessLog, EventLoop, ServerSettings
from grpckit.lifecycle.main import load_settings
from grpckit.lifecycle.server import Server, running
from grpckit.settings import UsageError
from tests import echo
from tests.conftest import (
    ROOT,
    Connect,
    assert_cannot_start,
    client_tls,
    eventually,
    free_port,
    read_logs_until,
    server_settings,
)
from tests.echo import NAME, Echo

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
REFLECTION = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"


def settings(pki: Path, **changes: Any) -> ServerSettings:
    # Any server certificate of the test PKI will do; the echo server borrows cheese's.
    return replace(server_settings(pki, "cheese", policy=echo.POLICY), **changes)


@pytest.fixture
async def server(pki: Path) -> AsyncIterator[Server]:
    async with running(settings(pki), [Echo()]) as running_server:
        yield running_server


async def check(channel: grpc.aio.Channel, service: str = "") -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    response = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
    return int(response.status)


async def handlers_done(server: Server) -> None:
    """Every call's handler has ended and logged its line, the channel's health watch
    apart: an aborted call's status reaches the client before its handler has ended."""

    async def only_the_health_watch() -> None:
        assert server.calls_in_flight == 1

    await eventually(only_the_health_watch)


def access_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [r.__dict__ for r in caplog.records if r.name == "grpckit.access"]


async def test_health_is_not_serving_until_every_service_has_started(
    pki: Path, connect: Connect
) -> None:
    service = Echo()
    service.gate = asyncio.Event()
    server = Server(settings(pki), [service])
    starting = asyncio.ensure_future(server.start())
    try:
        await asyncio.wait_for(service.starting.wait(), 10)
        channel = connect(server.port, client_tls(pki), watch_health=False)
        assert await check(channel) == NOT_SERVING
        assert await check(channel, NAME) == NOT_SERVING
        # The service is not ready for calls: the runtime answers for it.
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await echo.echo(channel)("early", timeout=5, wait_for_ready=False)
        assert error.value.code() == grpc.StatusCode.UNAVAILABLE
        service.gate.set()
        await starting
        assert await check(channel) == SERVING
        assert await check(channel, NAME) == SERVING
        assert await echo.echo(channel)("ready", timeout=5) == "ready"
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await check(channel, "no.such.Service")
        assert error.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        await server.stop(0)


async def test_a_service_that_cannot_start_stops_the_server(pki: Path, connect: Connect) -> None:
    server = Server(settings(pki), [Echo(echo.EchoSettings(fail_start=True))])
    with pytest.raises(Exception, match="told to fail"):
        await server.start()
    channel = connect(server.port, client_tls(pki), watch_health=False)
    with pytest.raises(grpc.aio.AioRpcError) as error:
        # Nothing listens any more: no wait for a server that could become ready.
        await echo.echo(channel)("hi", timeout=5, wait_for_ready=False)
    assert error.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_shutdown_flips_health_stops_services_and_lets_in_flight_calls_finish(
    pki: Path, connect: Connect
) -> None:
    service = Echo()
    async with running(settings(pki, grace=10), [service]) as server:
        channel = connect(server.port, client_tls(pki), watch_health=False)
        watch = health_pb2_grpc.HealthStub(channel).Watch(
            health_pb2.HealthCheckRequest(service=NAME)
        )
        updates = watch.__aiter__()
        assert (await updates.__anext__()).status == SERVING
        call = asyncio.ensure_future(echo.echo(channel)("sleep 1", timeout=10))

        async def in_flight() -> None:
            assert server.calls_in_flight == 2  # the health watch and the echo

        await eventually(in_flight)
        stopping = asyncio.ensure_future(server.stop())
        assert (await updates.__anext__()).status == NOT_SERVING
        assert service.stopped.is_set()
        watch.cancel()  # a health watch never ends by itself: it would hold shutdown for the grace
        assert await call == "sleep 1"
        await stopping


async def test_reflection_lists_every_service(server: Server, connect: Connect, pki: Path) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(connect(server.port, client_tls(pki)))
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    responses = [r async for r in stub.ServerReflectionInfo(iter([request]), timeout=5)]
    names = {s.name for s in responses[0].list_services_response.service}
    assert names == {
        NAME,
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    }


GARBAGE = b"\xff\xfe\x00 not a message \x80"


@pytest.mark.parametrize("method", ["one request", "request stream", "reflection"])
async def test_a_request_that_does_not_decode_is_invalid_argument(
    server: Server, connect: Connect, pki: Path, caplog: pytest.LogCaptureFixture, method: str
) -> None:
    channel = connect(server.port, client_tls(pki))
    # For the whole test: the access line may be written after the client has its status.
    caplog.set_level(logging.INFO)
    with pytest.raises(grpc.aio.AioRpcError) as error:
        # No serializers: the bytes go as they are.
        if method == "one request":
            await channel.unary_unary(echo.ECHO, None, None)(GARBAGE, timeout=5)
        elif method == "request stream":
            await channel.stream_unary(echo.JOIN, None, None)(iter([b"ok", GARBAGE]), timeout=5)
        else:
            reflect = channel.stream_stream(REFLECTION, None, None)
            [_ async for _ in reflect(iter([GARBAGE]), timeout=5)]
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "malformed request" in (error.value.details() or "")
    await handlers_done(server)
    assert [line["code"] for line in access_lines(caplog)] == ["INVALID_ARGUMENT"]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    # The stream of good requests still reaches its handler.
    assert await echo.join(channel)(iter(["a", "b"]), timeout=5) == "a b"


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
    server: Server,
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
        # The server's certificate does not name "movie": the client must refuse it.
        "name-mismatch": ClientTls(pki / "ca.crt", pki / "client.crt", pki / "client.key", "movie"),
    }[client]
    with pytest.raises(grpc.aio.AioRpcError) as error:
        # No wait_for_ready here: it would wait out the deadline instead of reporting.
        await echo.echo(connect(server.port, tls))("hi", timeout=5, wait_for_ready=False)
    assert error.value.code() == grpc.StatusCode.UNAVAILABLE
    # The same server still serves a client with a valid certificate.
    assert await echo.echo(connect(server.port, client_tls(pki)))("hi", timeout=5) == "hi"


async def test_plaintext_only_when_asked_for(pki: Path, connect: Connect) -> None:
    async with running(settings(pki, insecure=True), [Echo()]) as server:
        assert await echo.echo(connect(server.port, None))("hi", timeout=5) == "hi"
        with pytest.raises(grpc.aio.AioRpcError):
            await echo.echo(connect(server.port, client_tls(pki)))(
                "hi", timeout=5, wait_for_ready=False
            )


async def test_each_call_is_logged_with_method_peer_client_code_and_duration(
    server: Server, connect: Connect, pki: Path, caplog: pytest.LogCaptureFixture
) -> None:
    call = echo.echo(connect(server.port, client_tls(pki)))
    with caplog.at_level(logging.INFO, logger="grpckit.access"):
        await call("hi", timeout=5)
        with pytest.raises(grpc.aio.AioRpcError):
            await call("reject", timeout=5)
        await handlers_done(server)
    lines = access_lines(caplog)
    assert [line["code"] for line in lines] == ["OK", "INVALID_ARGUMENT"]
    assert {line["levelname"] for line in lines} == {"INFO"}
    for line in lines:
        assert line["method"] == echo.ECHO
        assert line["peer"].startswith(("ipv4:127.0.0.1:", "ipv6:"))
        assert line["client"] == "client"
        assert line["duration_ms"] >= 0


async def test_a_bug_is_unknown_and_logged_with_its_traceback(
    server: Server, connect: Connect, pki: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        caplog.at_level(logging.INFO, logger="grpckit.access"),
        pytest.raises(grpc.aio.AioRpcError) as error,
    ):
        await echo.echo(connect(server.port, client_tls(pki)))("bug", timeout=5)
    assert error.value.code() == grpc.StatusCode.UNKNOWN
    [line] = access_lines(caplog)
    assert (line["code"], line["levelname"]) == ("UNKNOWN", "ERROR")
    assert "a bug in the handler" in str(line["exc_info"][1])


async def reaches(count: Callable[[], int], expected: int) -> None:
    async def check() -> None:
        assert count() == expected

    await eventually(check)


async def test_a_stream_cancelled_mid_write_is_logged_as_cancelled(
    pki: Path, connect: Connect, caplog: pytest.LogCaptureFixture
) -> None:
    """Viewers that stop reading, then cancel. Their handlers are blocked in a write, which
    gRPC's core may fail (ExecuteBatchError) before the handler hears of the cancellation;
    rounds of them are cancelled until that has happened at least once."""
    service = Echo()
    async with running(settings(pki), [service]) as server:
        channel = connect(server.port, client_tls(pki))
        deadline = asyncio.get_running_loop().time() + 60
        cancelled = 0
        with caplog.at_level(logging.INFO):
            while not service.write_errors:
                assert asyncio.get_running_loop().time() < deadline, "no write ever failed"
                streams = [echo.ticks(channel)("100000", timeout=30) for _ in range(20)]
                for stream in streams:
                    await stream.read()

                await reaches(lambda: service.writing, len(streams))
                for stream in streams:
                    stream.cancel()
                cancelled += len(streams)

                await reaches(lambda: len(access_lines(caplog)), cancelled)
        assert {line["code"] for line in access_lines(caplog)} == {"CANCELLED"}
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert not [r for r in caplog.records if r.exc_info]


@pytest.mark.parametrize(("mode", "logged"), [("errors", ["INVALID_ARGUMENT"]), ("off", [])])
async def test_access_log_can_keep_only_errors_or_nothing(
    pki: Path, connect: Connect, caplog: pytest.LogCaptureFixture, mode: str, logged: list[str]
) -> None:
    async with running(settings(pki, access_log=AccessLog(mode)), [Echo()]) as server:
        call = echo.echo(connect(server.port, client_tls(pki)))
        with caplog.at_level(logging.INFO, logger="grpckit.access"):
            await call("hi", timeout=5)
            with pytest.raises(grpc.aio.AioRpcError):
                await call("reject", timeout=5)
            await handlers_done(server)
        assert [line["code"] for line in access_lines(caplog)] == logged


async def test_maintenance_port_serves_health_alone_in_plaintext(
    pki: Path, connect: Connect
) -> None:
    service = Echo()
    service.gate = asyncio.Event()
    server = Server(settings(pki, health_port=0), [service])
    starting = asyncio.ensure_future(server.start())
    try:
        await asyncio.wait_for(service.starting.wait(), 10)
        assert server.health_port is not None
        assert server.health_port != server.port
        plain = connect(server.health_port, None, watch_health=False)
        assert await check(plain) == NOT_SERVING
        service.gate.set()
        await starting
        assert await check(plain, NAME) == SERVING
        # No business RPC and no reflection on the plaintext port.
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await echo.echo(plain)("hi", timeout=5)
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
    async with running(settings(pki, replica="echo-7"), [Echo()]) as server:
        channel = connect(server.port, client_tls(pki))
        call = echo.echo(channel)("hi")
        await call
        assert served_by(await call.trailing_metadata()) == "echo-7"
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await echo.echo(channel)("reject")
        assert served_by(error.value.trailing_metadata()) == "echo-7"
        # A stream names its server before its first message.
        stream = echo.ticks(channel)("1")
        assert served_by(await stream.initial_metadata()) == "echo-7"
        stream.cancel()


async def test_connection_age_moves_new_calls_on_without_cutting_one_in_flight(
    pki: Path, connect: Connect
) -> None:
    async with running(settings(pki, max_connection_age=0.3), [Echo()]) as server:
        call = echo.echo(connect(server.port, client_tls(pki)))
        # Each call outlives the connection's age, and answers the address it came from.
        first = await call("peer 1.5", timeout=10)
        second = await call("peer 1.5", timeout=10)
        assert first.startswith("ipv4:127.0.0.1:")
        assert second != first  # a new connection: the client's port changed


async def echo_process(
    pki: Path, *args: str, env: dict[str, str] | None = None
) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.echo", "--host", "127.0.0.1",
        "--tls-cert", str(pki / "cheese.crt"), "--tls-key", str(pki / "cheese.key"),
        "--tls-ca", str(pki / "ca.crt"), "--authz-policy", str(echo.POLICY), *args,
        cwd=ROOT, stderr=asyncio.subprocess.PIPE, env={**os.environ, **(env or {})},
    )  # fmt: skip


@pytest.mark.parametrize("workers", [1, 2])
async def test_process_serves_then_exits_0_on_sigterm(
    pki: Path, connect: Connect, workers: int
) -> None:
    port = 0 if workers == 1 else free_port()
    process = await echo_process(pki, "--port", str(port), "--workers", str(workers))
    assert process.stderr is not None
    try:
        listening = await read_logs_until(process.stderr, "listening", workers)
        assert len({line["pid"] for line in listening}) == workers
        channel = connect(listening[0]["port"], client_tls(pki))

        async def serving() -> None:
            assert await check(channel, NAME) == SERVING

        await eventually(serving)
        assert await echo.echo(channel)("hi", timeout=5) == "hi"
        process.send_signal(signal.SIGTERM)
        output = (await asyncio.wait_for(process.stderr.read(), 30)).decode()
        assert await asyncio.wait_for(process.wait(), 30) == 0
        lines = [json.loads(x) for x in output.splitlines()]
        assert [line["message"] for line in lines].count("stopped") == workers
        # The access line, written without a LogRecord (grpckit/telemetry/logs.py), like any other.
        [call] = [line for line in lines if line.get("method") == echo.ECHO]
        assert call["pid"] in {line["pid"] for line in listening}
        assert (call["logger"], call["severity"], call["message"]) == (
            "grpckit.access",
            "INFO",
            "call",
        )
        assert (call["code"], call["client"], call["replica"]) == (
            "OK",
            "client",
            socket.gethostname(),
        )
        assert call["peer"].startswith("ipv4:127.0.0.1:")
        assert call["duration_ms"] >= 0
    finally:
        if process.returncode is None:
            process.kill()


async def test_a_second_signal_during_the_graceful_stop_exits_at_once(
    pki: Path, connect: Connect
) -> None:
    process = await echo_process(pki, "--port", "0", "--grace", "600", "--drain", "600")
    assert process.stderr is not None
    try:
        await read_logs_until(process.stderr, "serving", 1)
        process.send_signal(signal.SIGTERM)
        # The drain alone would last ten minutes.
        await read_logs_until(process.stderr, "shutting down", 1)
        process.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(process.wait(), 30) == 128 + signal.SIGINT
        [last] = [json.loads(x) for x in (await process.stderr.read()).splitlines()]
        assert last["message"] == "second signal: exiting at once"
    finally:
        if process.returncode is None:
            process.kill()


def occupied_port() -> socket.socket:
    """A port another process listens on, without SO_REUSEPORT: gRPC cannot share it."""
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    return holder


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("cause", ["missing key", "unreadable cert", "port in use", "service"])
async def test_start_up_failures_end_with_one_line_naming_the_cause_and_exit_1(
    pki: Path, tmp_path: Path, cause: str, workers: int
) -> None:
    holder = occupied_port()
    port = holder.getsockname()[1] if cause == "port in use" else free_port()
    args = ["--port", str(port), "--workers", str(workers)]
    env = {}
    expected = ""
    if cause == "missing key":
        args += ["--tls-key", str(tmp_path / "missing.key")]
        expected = str(tmp_path / "missing.key")
    elif cause == "unreadable cert":
        # A directory: unreadable as a file even for root, who can read any file.
        args += ["--tls-cert", str(tmp_path)]
        expected = str(tmp_path)
    elif cause == "port in use":
        expected = f"127.0.0.1:{port}"
    else:
        env["ECHO_FAIL_START"] = "1"
        expected = "told to fail"
    try:
        process = await echo_process(pki, *args, env=env)
        _, stderr = await asyncio.wait_for(process.communicate(), 60)
    finally:
        holder.close()
    assert process.returncode == 1
    if workers == 1:
        assert expected in assert_cannot_start(stderr)
    else:
        # Each worker names the cause; the parent's own last line says a worker failed.
        # gRPC's core logs a failed bind too, in its own format.
        lines = [json.loads(line) for line in stderr.splitlines() if line.startswith(b"{")]
        failures = [line for line in lines if line["message"] == "cannot start"]
        assert failures
        assert all(expected in line["error"] for line in failures)
        assert "Traceback" not in stderr.decode()


@pytest.mark.parametrize(
    ("env", "args", "named"),
    [
        ({"PORT": "abc"}, [], "PORT: expected an integer from 0 to 65535, got 'abc'"),
        ({}, ["--port", "abc"], "--port: expected an integer from 0 to 65535, got 'abc'"),
        ({"WORKERS": "0"}, [], "WORKERS: expected an integer of at least 1"),
        ({"ACCESS_LOG": "some"}, [], "ACCESS_LOG: expected one of all, errors, off"),
        ({"INSECURE": "maybe"}, [], "INSECURE: expected a boolean"),
        ({"CHEESE_PREP_SECONDS": "-1"}, [], "CHEESE_PREP_SECONDS: expected a number of at least 0"),
        ({"WORKERS": "2", "PORT": "0"}, [], "WORKERS above 1 needs a fixed PORT"),
    ],
)
def test_a_bad_setting_is_a_one_line_usage_error(
    env: dict[str, str], args: list[str], named: str
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "cheese", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=30,
    )
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert line.startswith("python -m cheese: error: ")
    assert named in line


def test_help_documents_every_setting_and_its_variable() -> None:
    for service, variables in {
        "cheese": ["CHEESE_PREP_SECONDS"],
        "movie": ["MOVIE_CATALOGUE", "MOVIE_RELOAD_SECONDS"],
        "soccer": ["SOCCER_VIDEOS_DIR", "SOCCER_MAX_DECODERS", "SOCCER_MAX_DECODERS_PER_CLIENT",
                   "SOCCER_VIEWER_BUFFER_MIB", "SOCCER_BUFFER_MIB", "SOCCER_CLIENT_BUFFER_MIB"],
    }.items():  # fmt: skip
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
                         "HANDSHAKE_TIMEOUT", "MAX_CALLS", "MAX_CALLS_PER_CLIENT", "MAX_STREAMS",
                         "MAX_STREAMS_PER_CLIENT", *variables]:  # fmt: skip
            assert f"[env {variable}]" in result.stdout, (service, variable)


def test_environment_sets_defaults_and_flags_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORT", "6000")
    monkeypatch.setenv("ECHO_FAIL_START", "yes")
    monkeypatch.setenv("INSECURE", "true")
    monkeypatch.setenv("EVENT_LOOP", "asyncio")
    server, own = load_settings(echo.PROGRAM, [])
    assert (server.port, own.fail_start, server.tls) == (6000, True, None)
    assert server.event_loop is EventLoop.ASYNCIO
    server, own = load_settings(echo.PROGRAM, ["--port", "7000", "--insecure", "false"])
    assert server.port == 7000
    assert server.tls is not None
    # A flag given alone is true; one with a bad value is named as the flag.
    assert load_settings(echo.PROGRAM, ["--fail-start"])[1].fail_start
    with pytest.raises(UsageError, match="--fail-start: expected a boolean"):
        load_settings(echo.PROGRAM, ["--fail-start", "maybe"])


@pytest.mark.parametrize(("service", "code"), [("", 0), (NAME, 0), ("no.such.Service", 1)])
@pytest.mark.parametrize("via", ["maintenance port", "monitor identity"])
async def test_health_probe_for_container_healthchecks(
    pki: Path, service: str, code: int, via: str
) -> None:
    """As compose runs it: on the plaintext HEALTH_PORT, which needs no key; or over mutual
    TLS as `monitor`, since the server's own certificate cannot be a client's."""
    async with running(settings(pki, health_port=0), [Echo()]) as server:
        env = {**os.environ, "PORT": str(server.port), "TLS_CA": str(pki / "ca.crt")}
        if via == "maintenance port":
            env["HEALTH_PORT"] = str(server.health_port)
        else:
            env["PROBE_TLS_CERT"] = str(pki / "monitor.crt")
            env["PROBE_TLS_KEY"] = str(pki / "monitor.key")
        await probed(env, service, code)


async def probed(env: dict[str, str], service: str, code: int) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "grpckit.client.probe", "--service", service, cwd=ROOT, env=env,
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
    async with running(settings(live), [Echo()]) as server:
        old = echo.echo(connect(server.port, client_tls(pki)))
        assert await old("hi", timeout=5) == "hi"

        # Rotate everything to a new CA: server identity and the CA clients must chain to.
        for name in ("cheese.crt", "cheese.key", "ca.crt"):
            staged = live / f".{name}"
            staged.write_bytes((foreign_pki / name).read_bytes())
            staged.replace(live / name)

        new = echo.echo(connect(server.port, client_tls(foreign_pki)))
        assert await new("hi", timeout=5) == "hi"
        # The connection made before the rotation keeps working until it closes...
        assert await old("hi", timeout=5) == "hi"
        # ...while a new connection with the old credentials is refused.
        stale = echo.echo(connect(server.port, client_tls(pki)))
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await stale("hi", timeout=5, wait_for_ready=False)
        assert error.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_a_restart_under_load_fails_no_call(pki: Path, connect: Connect) -> None:
    """Clients watch health, so the drain after NOT_SERVING sends no call into the stop."""
    fixed = settings(pki, grace=5, port=free_port())
    call = echo.echo(connect(fixed.port, client_tls(pki)))
    done: list[str] = []
    errors: list[str] = []
    running_callers = True

    async def caller() -> None:
        while running_callers:
            try:
                done.append(await call("hi", timeout=30))
            except grpc.aio.AioRpcError as error:
                errors.append(f"{error.code().name}: {error.details()}")

    def served(count: int) -> Callable[[], Awaitable[None]]:
        async def check() -> None:
            assert len(done) >= count

        return check

    async def stop_callers() -> None:
        nonlocal running_callers
        running_callers = False
        await asyncio.gather(*callers)

    async with running(fixed, [Echo()]) as first:
        callers = [asyncio.create_task(caller()) for _ in range(8)]
        try:
            await eventually(served(200))
            await first.stop()
            before = len(done)
            # The same port, as after a container restart.
            async with running(fixed, [Echo()]):
                await eventually(served(before + 200))
                await stop_callers()
        finally:
            await stop_callers()
    assert errors == []
