"""Traces: real servers on loopback, spans caught in memory by the SDK's own exporter in place
of OTLP (grpckit/telemetry/tracing.py `enable`), channels from grpckit/client/channel.py as every client
opens them."""

import contextvars
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, cast

import grpc
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from api import soccer_pb2, soccer_pb2_grpc
from grpckit.client.channel import RenewingChannel
from grpckit.config import AccessLog, TraceSampler, TraceSettings
from grpckit.lifecycle.server import Server, running
from grpckit.settings import UsageError
from grpckit.telemetry import logs, tracing
from grpckit.telemetry.resource import process_resource
from soccer import video
from soccer.server import Soccer, SoccerSettings
from tests import echo
from tests.conftest import Connect, client_tls, eventually, serving
from tests.echo import Echo
from tests.test_runtime import access_lines, settings

ECHO = echo.ECHO[1:]
WATCH = "stream.Soccer/Watch"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Tracing on, as an endpoint would turn it on (same resource), every trace sampled, the
    spans kept in memory, each as it ends; off again after the test."""
    exporter = InMemorySpanExporter()
    every_trace = TraceSettings(endpoint="memory", sampler=TraceSampler.PARENTBASED_ALWAYS_ON)
    provider = tracing.provider("test", "replica-1", every_trace)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.enable(provider)
    yield exporter
    tracing.enable(None)
    provider.shutdown()


@pytest.fixture
async def server(pki: Path) -> AsyncIterator[Server]:
    async with running(settings(pki), [Echo()]) as running_server:
        yield running_server


def named(exporter: InMemorySpanExporter, name: str, kind: SpanKind) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name == name and s.kind is kind]


async def one_pair(exporter: InMemorySpanExporter, name: str) -> tuple[ReadableSpan, ReadableSpan]:
    """The client span and the server span of the one call to `name`, once both ended (the
    server's ends as its handler returns, which may be just after the client has its
    answer)."""

    async def both() -> tuple[ReadableSpan, ReadableSpan]:
        clients = named(exporter, name, SpanKind.CLIENT)
        servers = named(exporter, name, SpanKind.SERVER)
        assert (len(clients), len(servers)) == (1, 1)
        return clients[0], servers[0]

    return await eventually(both)


async def test_a_call_is_one_trace_of_its_client_span_and_its_server_span(
    spans: InMemorySpanExporter, server: Server, connect: Connect, pki: Path
) -> None:
    channel = connect(server.port, client_tls(pki))
    assert await echo.echo(channel)("hello", timeout=5) == "hello"

    client, served = await one_pair(spans, ECHO)
    assert client.context is not None and served.context is not None
    assert served.context.trace_id == client.context.trace_id
    assert served.parent is not None and served.parent.is_remote
    assert served.parent.span_id == client.context.span_id
    expected = {"rpc.system": "grpc", "rpc.service": "test.Echo", "rpc.method": "Echo"}
    for span in (client, served):
        assert dict(span.attributes or {}) == {**expected, "rpc.grpc.status_code": 0}
        assert span.status.status_code is StatusCode.UNSET
    assert served.resource.attributes["service.name"] == "test"
    assert served.resource.attributes["service.instance.id"] == "replica-1"
    # The very resource the metrics' provider is given (grpckit/telemetry/metrics.py): one identity.
    assert served.resource is process_resource("test", "replica-1")


async def test_a_failed_call_has_its_code_on_both_spans(
    spans: InMemorySpanExporter, server: Server, connect: Connect, pki: Path
) -> None:
    channel = connect(server.port, client_tls(pki))
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await echo.echo(channel)("reject", timeout=5)
    assert error.value.code() is grpc.StatusCode.INVALID_ARGUMENT

    for span in await one_pair(spans, ECHO):
        assert span.attributes is not None
        assert span.attributes["rpc.grpc.status_code"] == grpc.StatusCode.INVALID_ARGUMENT.value[0]
        assert span.status.status_code is StatusCode.ERROR
        assert span.status.description == "INVALID_ARGUMENT"


async def test_the_access_log_line_carries_the_calls_trace_id(
    spans: InMemorySpanExporter,
    server: Server,
    connect: Connect,
    pki: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    channel = connect(server.port, client_tls(pki))
    with caplog.at_level(logging.INFO, logger="grpckit.access"):
        await echo.echo(channel)("hello", timeout=5)
        _, served = await one_pair(spans, ECHO)

        async def logged() -> dict[str, Any]:
            [line] = [line for line in access_lines(caplog) if line["method"] == echo.ECHO]
            return line

        line = await eventually(logged)
    assert served.context is not None
    assert line["trace_id"] == format(served.context.trace_id, "032x")


def test_a_log_line_written_in_a_span_carries_its_trace_id(
    spans: InMemorySpanExporter,
) -> None:
    """Any line, not only the access log's: the handlers' own lines during a call."""
    formatter = logs.JsonFormatter()
    record = logging.LogRecord("a.handler", logging.INFO, "", 0, "working", None, None)
    tracer = tracing.tracer()
    assert tracer is not None
    with tracer.start_as_current_span("a call") as span:
        line = formatter.format(record)
    assert f'"trace_id": "{tracing.trace_id(span)}"' in line
    assert "trace_id" not in formatter.format(record)


async def test_a_caller_that_sampled_its_trace_out_is_followed(
    spans: InMemorySpanExporter, server: Server, pki: Path
) -> None:
    """parentbased_*, the default among them: the caller's decision stands, either way."""
    not_sampled = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"
    sampled = "00-0af7651916cd43dd8448eb211c80319d-b7ad6b7169203331-01"
    # A caller of its own, not traced by this process: a plain channel.
    async with grpc.aio.secure_channel(f"localhost:{server.port}", _credentials(pki)) as channel:
        for parent in (not_sampled, sampled):
            await echo.echo(channel)("hello", timeout=5, metadata=(("traceparent", parent),))

    async def served() -> ReadableSpan:
        found = named(spans, ECHO, SpanKind.SERVER)
        assert len(found) == 1
        return found[0]

    span = await eventually(served)
    assert span.context is not None
    assert format(span.context.trace_id, "032x") == sampled.split("-")[1]


def _credentials(pki: Path) -> grpc.ChannelCredentials:
    tls = client_tls(pki)
    assert tls.cert is not None and tls.key is not None
    return grpc.ssl_channel_credentials(
        tls.ca.read_bytes(), tls.key.read_bytes(), tls.cert.read_bytes()
    )


async def test_with_tracing_off_nothing_is_recorded_or_logged(
    pki: Path, connect: Connect, caplog: pytest.LogCaptureFixture
) -> None:
    """No endpoint: no provider, no span, no trace id, and no channel interceptor."""
    assert not tracing.install("test", "replica-1", TraceSettings(endpoint=None))
    assert tracing.tracer() is None
    exporter = InMemorySpanExporter()
    # A provider that would record, were it the runtime's: it is not.
    TracerProvider().add_span_processor(SimpleSpanProcessor(exporter))
    async with running(settings(pki, access_log=AccessLog.ALL), [Echo()]) as off:
        channel = connect(off.port, client_tls(pki))
        # A secure channel is a RenewingChannel around the grpc channel that carries the calls.
        inner = channel.current() if isinstance(channel, RenewingChannel) else channel
        assert inner._unary_unary_interceptors == []  # type: ignore[attr-defined]
        with caplog.at_level(logging.INFO, logger="grpckit.access"):
            await echo.echo(channel)("hello", timeout=5)
            await channel.close(None)

            async def logged() -> list[dict[str, Any]]:
                lines = [line for line in access_lines(caplog) if line["method"] == echo.ECHO]
                assert lines
                return lines

            lines = await eventually(logged)
    assert all("trace_id" not in line for line in lines)
    assert exporter.get_finished_spans() == ()


async def test_an_unpaced_viewer_sees_its_decodes_and_encodes_on_its_span(
    spans: InMemorySpanExporter,
    pki: Path,
    videos: Path,
    connect: Connect,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The reader works for this viewer alone: an event when its decoder opened and one per
    frame (the first TRACED_FRAMES), and what it got when the stream ends; the stream's
    client span ends with its code too."""
    # Fewer than the 30 frames of the small match, which are fewer than the default's.
    monkeypatch.setattr(video, "TRACED_FRAMES", 10)
    frames = 20
    async with serving(pki, "soccer", Soccer(SoccerSettings(videos))) as server:
        stub = soccer_pb2_grpc.SoccerStub(connect(server.port, client_tls(pki)))
        match = soccer_pb2.Match(id="small", unpaced=True, start_frame=3, max_frames=frames)
        got = [frame async for frame in stub.Watch(match, timeout=30)]
    assert len(got) == frames

    client, served = await one_pair(spans, WATCH)
    assert client.attributes is not None and client.attributes["rpc.grpc.status_code"] == 0
    assert served.attributes is not None and served.attributes["soccer.frames_sent"] == frames
    events = [event.name for event in served.events]
    assert events == ["soccer.decoder.opened"] + ["soccer.frame"] * 10
    first = served.events[1].attributes
    assert first is not None and first["soccer.frame"] == 3
    assert first["soccer.bytes"] == got[0].ByteSize()  # the message as sent
    assert {"soccer.decode_ms", "soccer.encode_ms"} <= set(first)


async def test_a_live_viewer_sees_which_hub_it_joined(
    spans: InMemorySpanExporter, pki: Path, videos: Path, connect: Connect
) -> None:
    async with serving(pki, "soccer", Soccer(SoccerSettings(videos))) as server:
        stub = soccer_pb2_grpc.SoccerStub(connect(server.port, client_tls(pki)))
        match = soccer_pb2.Match(id="small", max_frames=2)
        assert len([frame async for frame in stub.Watch(match, timeout=30)]) == 2

    _, served = await one_pair(spans, WATCH)
    [joined] = served.events
    assert joined.name == "soccer.hub.joined"
    assert dict(joined.attributes or {}) == {"soccer.hub": "started", "soccer.start_frame": 0}
    assert served.attributes is not None and served.attributes["soccer.frames_sent"] == 2


def test_the_settings_are_opentelemetrys_own_variables() -> None:
    found = tracing.settings(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://jaeger:4317",
            "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
            "OTEL_TRACES_SAMPLER_ARG": "0.25",
        }
    )
    assert found == TraceSettings("http://jaeger:4317", TraceSampler.PARENTBASED_TRACEIDRATIO, 0.25)
    assert "0.25" in tracing.sampler(found).get_description()
    # Compose passes the endpoint empty when the observability profile is off.
    assert tracing.settings({"OTEL_EXPORTER_OTLP_ENDPOINT": ""}).endpoint is None
    assert tracing.settings({}) == TraceSettings()
    # By default a caller's decision stands, and one call in a hundred without one is traced.
    default = tracing.sampler(TraceSettings()).get_description()
    assert default.startswith("ParentBased{root:TraceIdRatioBased{0.01}")
    with pytest.raises(UsageError, match="OTEL_TRACES_SAMPLER"):
        tracing.settings({"OTEL_TRACES_SAMPLER": "jaeger_remote"})
    with pytest.raises(UsageError, match="OTEL_TRACES_SAMPLER_ARG"):
        tracing.settings({"OTEL_TRACES_SAMPLER_ARG": "2"})


def test_spans_for_a_collector_whose_name_does_not_resolve_are_dropped_quietly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Compose's collector is in a profile: without it, no export is tried (and none fails,
    in the log, every few seconds); one line says so, and one when it is there."""
    always = TraceSettings(endpoint="memory", sampler=TraceSampler.ALWAYS_ON)
    span = tracing.provider("test", "replica-1", always).get_tracer("test").start_span("a call")
    span.end()
    finished = [cast(ReadableSpan, span)]
    kept = InMemorySpanExporter()
    caplog.set_level(logging.INFO, logger="grpckit.tracing")
    absent = tracing.WhileResolved(kept, "http://no-such-collector.invalid:4317")
    for _ in range(3):
        assert absent.export(finished) is SpanExportResult.SUCCESS
    assert kept.get_finished_spans() == ()
    present = tracing.WhileResolved(kept, "http://localhost:4317")
    assert present.export(finished) is SpanExportResult.SUCCESS
    assert kept.get_finished_spans() == tuple(finished)
    assert [(r.getMessage(), r.__dict__["collector"]) for r in caplog.records] == [
        ("no trace collector: spans dropped", "no-such-collector.invalid"),
        ("trace collector found", "localhost"),
    ]


@pytest.mark.parametrize("ratio", [0.0, 1.0])
async def test_a_call_without_a_callers_trace_is_traced_at_the_root_ratio(
    pki: Path, ratio: float, caplog: pytest.LogCaptureFixture
) -> None:
    """The runtime draws a root call's decision itself (tracing.Roots); the spans kept and
    the trace ids logged are those the ratio keeps, all or nothing here."""
    exporter = InMemorySpanExporter()
    rated = TraceSettings("memory", TraceSampler.PARENTBASED_TRACEIDRATIO, ratio)
    provider = tracing.provider("test", "replica-1", rated)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.enable(provider)
    try:
        async with running(settings(pki, access_log=AccessLog.ALL), [Echo()]) as served:
            with caplog.at_level(logging.INFO, logger="grpckit.access"):
                async with grpc.aio.secure_channel(
                    f"localhost:{served.port}", _credentials(pki)
                ) as channel:
                    for _ in range(3):
                        assert await echo.echo(channel)("hello", timeout=5) == "hello"

                async def logged() -> list[dict[str, Any]]:
                    lines = [line for line in access_lines(caplog) if line["method"] == echo.ECHO]
                    assert len(lines) == 3
                    return lines

                lines = await eventually(logged)
    finally:
        tracing.enable(None)
        provider.shutdown()
    kept = named(exporter, ECHO, SpanKind.SERVER)
    assert len(kept) == (3 if ratio else 0)
    logged_ids = sorted(str(line.get("trace_id")) for line in lines)
    expected = [format(span.context.trace_id, "032x") for span in kept if span.context]
    assert logged_ids == (sorted(expected) if ratio else ["None"] * 3)


def test_nothing_inside_a_root_call_not_sampled_is_recorded() -> None:
    """Its context is valid and not sampled: a span made in it is no root of a trace of its
    own, and a call made from it says so to the next server."""
    rated = TraceSettings("memory", TraceSampler.PARENTBASED_TRACEIDRATIO, 0.0)
    provider = tracing.provider("test", "replica-1", rated)
    tracing.enable(provider)

    class _Call:
        def invocation_metadata(self) -> tuple[()]:
            return ()

    def inside() -> None:
        tracer = tracing.tracer()
        assert tracer is not None
        assert tracing.begin(tracer, "/" + ECHO, cast(Any, _Call())) is None
        child = tracer.start_span("decode")
        assert not child.is_recording()
        assert child.get_span_context().trace_flags.sampled is False
        carrier: dict[str, str] = {}
        tracing.PROPAGATOR.inject(carrier)
        assert carrier["traceparent"].endswith("-00")

    try:
        contextvars.copy_context().run(inside)
    finally:
        tracing.enable(None)
        provider.shutdown()
