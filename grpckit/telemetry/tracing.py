"""Traces: a server span per call, child of the caller's W3C `traceparent`, and a client span
per call made through grpckit/client/channel.py (grpckit/telemetry/trace_client.py), which
sends it; both exported over OTLP/gRPC in batches.

On only where OTEL_EXPORTER_OTLP_ENDPOINT names a collector (TraceSettings). Without one no
provider is made and `tracer()` is None: the runtime starts no span, reads no metadata for
one, and no channel gets an interceptor, so tracing costs one `is None` per call and nothing
tries (and fails, in the logs) to export. With one, the sampler decides per trace; a span
not sampled records nothing and is exported nowhere.

A call that brings no trace context of its own is a root, which the sampler's root ratio
decides alone (`Roots`): the runtime draws that decision itself before any span is made, so
the ninety-nine calls in a hundred that are not traced cost a random number and a context
made once (`_UNSAMPLED`), not a span of the SDK's (about 5 us, several times that in a busy
server). Their context is valid but not sampled, so spans made inside them, and calls they
make, are not sampled either, as the SDK's parent-based samplers would decide; log lines
carry a trace id only for a trace that is kept.

The runtime's tracer is this module's, not only the API's global one: the global provider
can be set once per process, and tests swap providers (`enable`).

The server span is started in the runtime's one wrapper per call (grpckit/calls/interceptors.py)
and made current in the call's context: grpc.aio runs every call in a task of its own, so
a handler's spans and span events (soccer's) go to it and the log lines written for the call
carry its trace id (grpckit/telemetry/logs.py). The context is never detached: it ends with the
call's task, and detaching from another task (an abandoned stream closed by the garbage
collector) would fail.
"""

import logging
import os
import random
import socket
import urllib.parse
from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from typing import Any

import grpc
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_ON,
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import (
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.trace.span import TraceState
from opentelemetry.util.types import Attributes

from grpckit.config import TraceSampler, TraceSettings
from grpckit.settings import parse
from grpckit.telemetry.resource import process_resource

# W3C trace context only: what every OpenTelemetry SDK sends by default, read without the
# global composite propagator (baggage included) on every call.
PROPAGATOR = TraceContextTextMapPropagator()
_FIELDS = frozenset(PROPAGATOR.fields)

_tracer: trace.Tracer | None = None
# The tracer's root sampling ratio, when the runtime may draw root decisions itself.
_root_ratio: float | None = None

log = logging.getLogger("grpckit.tracing")


def settings(environ: Mapping[str, str] | None = None) -> TraceSettings:
    """The trace settings in the environment; UsageError for a bad value."""
    found: TraceSettings = parse(
        [TraceSettings], prog="tracing", description="", argv=[], environ=environ
    )[0]
    return found


# Set while the runtime starts a root span it has decided to sample (`begin`).
_decided: ContextVar[bool] = ContextVar("decided", default=False)


class Roots(TraceIdRatioBased):
    """The trace id ratio sampler, whose decision for a call's root span the runtime may
    have drawn already (`begin`): then it stands. Every other span is decided by the ratio,
    as by the SDK's own sampler."""

    def should_sample(
        self,
        parent_context: otel_context.Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[trace.Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        if _decided.get():
            return SamplingResult(Decision.RECORD_AND_SAMPLE, attributes, trace_state)
        return super().should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state
        )


class _ParentBasedRoots(ParentBased):
    """ParentBased over `Roots`, which the runtime finds here."""

    def __init__(self, roots: Roots) -> None:
        super().__init__(roots)
        self.roots = roots


def sampler(settings: TraceSettings) -> Sampler:
    ratio = Roots(settings.sampler_arg)
    return {
        TraceSampler.ALWAYS_ON: ALWAYS_ON,
        TraceSampler.ALWAYS_OFF: Roots(0.0),
        TraceSampler.TRACEIDRATIO: ratio,
        TraceSampler.PARENTBASED_ALWAYS_ON: ParentBased(ALWAYS_ON),
        TraceSampler.PARENTBASED_ALWAYS_OFF: _ParentBasedRoots(Roots(0.0)),
        TraceSampler.PARENTBASED_TRACEIDRATIO: _ParentBasedRoots(ratio),
    }[settings.sampler]


def _roots(tracer_provider: trace.TracerProvider) -> Roots | None:
    """The root sampler whose decisions the runtime may draw itself, if the provider has one."""
    found = getattr(tracer_provider, "sampler", None)
    if isinstance(found, _ParentBasedRoots):
        return found.roots
    return found if isinstance(found, Roots) else None


# The context of every root call not sampled: valid, so that nothing inside it starts a
# trace of its own, and not sampled, so that nothing inside it is recorded.
_UNSAMPLED = trace.set_span_in_context(
    NonRecordingSpan(
        SpanContext(
            trace_id=0x5EED0000000000000000000000000001,
            span_id=0x5EED000000000001,
            is_remote=False,
            trace_flags=TraceFlags(TraceFlags.DEFAULT),
        )
    )
)


def provider(service: str, replica: str, settings: TraceSettings) -> TracerProvider:
    """A provider naming this process, sampling as `settings` say, with no processor yet."""
    return TracerProvider(sampler=sampler(settings), resource=process_resource(service, replica))


def install(
    service: str, replica: str, settings: TraceSettings, *, export_timeout: float | None = None
) -> bool:
    """Tracing on for this process, exporting to `settings.endpoint`; False (nothing done)
    without an endpoint. Once per process, after any fork (the batch processor's thread).

    `export_timeout` bounds each export, retries included, in seconds; None leaves it to
    OTEL_EXPORTER_OTLP_TIMEOUT (10 s by default). The spans left at exit are exported then,
    so an unreachable collector delays the exit by up to that long.
    """
    if settings.endpoint is None or _tracer is not None:
        return False
    # Imported here: the exporter's modules are needed only when traces leave the process.
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
        OTLPSpanExporter,
    )

    made = provider(service, replica, settings)
    # http:// is plaintext, https:// TLS (the exporter decides by the scheme). The batch
    # processor exports on its own thread; when the collector is slow or away, its queue
    # (2048 spans) fills and new spans are dropped: a call never waits for the exporter.
    exporter = OTLPSpanExporter(endpoint=settings.endpoint, timeout=export_timeout)
    made.add_span_processor(BatchSpanProcessor(WhileResolved(exporter, settings.endpoint)))
    # Global too, so that other OpenTelemetry code in the process traces to the same place.
    trace.set_tracer_provider(made)
    enable(made)
    return True


class WhileResolved(SpanExporter):
    """Exports while the collector's host name resolves, and drops the spans quietly while it
    does not: compose's collector is in a profile (`observability`), and a stack started
    without it must not log an export failure every few seconds. Each change is one line
    in the log. A name that resolves but does not answer is the exporter's own failure, and
    logged as such."""

    def __init__(self, exporter: SpanExporter, endpoint: str) -> None:
        self._exporter = exporter
        self._host = urllib.parse.urlsplit(endpoint).hostname or endpoint
        self._resolved: bool | None = None

    def _resolves(self) -> bool:
        try:
            socket.getaddrinfo(self._host, None)
        except OSError:
            resolved = False
        else:
            resolved = True
        if resolved != self._resolved:
            self._resolved = resolved
            log.info(
                "trace collector found" if resolved else "no trace collector: spans dropped",
                extra={"collector": self._host},
            )
        return resolved

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if not self._resolves():
            return SpanExportResult.SUCCESS
        return self._exporter.export(spans)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._exporter.force_flush(timeout_millis)

    def shutdown(self) -> None:
        self._exporter.shutdown()


def enable(tracer_provider: trace.TracerProvider | None) -> None:
    """The runtime's spans go to `tracer_provider` from now on; None turns them off.
    Channels opened before keep what they had (grpckit/client/channel.py)."""
    global _tracer, _root_ratio
    _tracer = None if tracer_provider is None else tracer_provider.get_tracer("grpckit")
    roots = None if tracer_provider is None else _roots(tracer_provider)
    _root_ratio = None if roots is None else roots.rate


def tracer() -> trace.Tracer | None:
    """The runtime's tracer, or None when tracing is off."""
    return _tracer


def replica_name() -> str:
    """A client's `service.instance.id`: its host (the container's id in compose)."""
    return os.uname().nodename


def rpc_attributes(name: str) -> dict[str, str]:
    """The span attributes of a call to `name` ("pkg.Service/Method"), client or server."""
    service, _, method = name.partition("/")
    return {"rpc.system": "grpc", "rpc.service": service, "rpc.method": method}


def begin(
    server_tracer: trace.Tracer, method: str, context: grpc.aio.ServicerContext[Any, Any]
) -> Span | None:
    """A server span for a call to `method` ("/pkg.Service/Method"), child of the caller's
    span when it sent one, and current for the rest of the call's task; None for a root
    call not sampled, whose context is `_UNSAMPLED`."""
    carrier = {key: value for key, value in context.invocation_metadata() or () if key in _FIELDS}
    parent = PROPAGATOR.extract(carrier) if carrier else None
    decided = None
    if parent is None and _root_ratio is not None:
        if random.random() >= _root_ratio:
            otel_context.attach(_UNSAMPLED)
            return None
        decided = _decided.set(True)
    try:
        span = server_tracer.start_span(
            method[1:], context=parent, kind=SpanKind.SERVER, attributes=rpc_attributes(method[1:])
        )
    finally:
        if decided is not None:
            _decided.reset(decided)
    otel_context.attach(trace.set_span_in_context(span))
    return span


def end(span: Span, code: grpc.StatusCode) -> None:
    """The call's final code on its span, which ends; any code but OK is an error."""
    span.set_attribute("rpc.grpc.status_code", code.value[0])
    if code is not grpc.StatusCode.OK:
        span.set_status(Status(StatusCode.ERROR, code.name))
    span.end()


def trace_id(span: Span) -> str | None:
    """The span's trace id as W3C writes it (32 hex digits); None when its trace is not
    kept (not sampled, or none)."""
    span_context = span.get_span_context()
    return format(span_context.trace_id, "032x") if span_context.trace_flags.sampled else None
