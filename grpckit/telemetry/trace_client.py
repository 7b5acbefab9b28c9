"""The client half of tracing (grpckit/telemetry/tracing.py): a client span per call made on a
channel from grpckit/client/channel.py, its context sent as W3C `traceparent`, so that the server's
span of the same call is its child in the same trace.

A grpc.aio client interceptor (the server side avoids them for speed; a client makes far
fewer calls a second than a server serves). The call object is returned as gRPC made it, so
callers keep `read()`, `initial_metadata()` and the rest: a unary call's span ends when its
code is known, a stream's in a task that waits for its code.
"""

import asyncio
from typing import Any, TypeAlias, cast

import grpc
from grpc.aio import ClientCallDetails, Metadata
from opentelemetry import trace
from opentelemetry.propagators.textmap import Setter
from opentelemetry.trace import Span, SpanKind

from grpckit.telemetry import tracing

# An async callable of (details, request) to the call; grpc-stubs type it as returning the
# call itself, which it is not.
Continuation: TypeAlias = Any


class _Setter(Setter[Metadata]):
    """Puts the propagator's fields into gRPC metadata."""

    def set(self, carrier: Metadata, key: str, value: str) -> None:
        carrier[key] = value


_SETTER = _Setter()


# Generic only in grpc-stubs, hence the ignores on the four classes below.
class _Tracing:
    """What the four interceptors share: grpc.aio files an interceptor under the first of
    the four kinds it is (an `elif` chain), so each kind needs an object of its own."""

    def __init__(self, tracer: trace.Tracer, ending: set["asyncio.Task[None]"]) -> None:
        self._tracer = tracer
        # Tasks that end streams' spans, held so that they are not collected mid-wait.
        self._ending = ending

    def _start(self, details: ClientCallDetails) -> tuple[Span, ClientCallDetails]:
        method = cast(str | bytes, details.method)
        # grpc.aio passes the method as bytes (grpc/grpc#31092); str in case that is fixed.
        name = (method.decode() if isinstance(method, bytes) else method)[1:]
        span = self._tracer.start_span(
            name, kind=SpanKind.CLIENT, attributes=tracing.rpc_attributes(name)
        )
        metadata = Metadata(*tuple(details.metadata or ()))
        tracing.PROPAGATOR.inject(metadata, trace.set_span_in_context(span), _SETTER)
        sent = ClientCallDetails(
            details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
        )
        return span, sent

    async def _unary(
        self, continuation: Continuation, details: ClientCallDetails, request: Any
    ) -> Any:
        span, sent = self._start(details)
        try:
            call = await continuation(sent, request)
            code = await call.code()
        except BaseException as error:
            tracing.end(span, _code_of(error))
            raise
        tracing.end(span, code)
        return call

    async def _stream(
        self, continuation: Continuation, details: ClientCallDetails, request: Any
    ) -> Any:
        span, sent = self._start(details)
        try:
            call = await continuation(sent, request)
        except BaseException as error:
            tracing.end(span, _code_of(error))
            raise
        task = asyncio.ensure_future(_end_when_done(span, call))
        self._ending.add(task)
        task.add_done_callback(self._ending.discard)
        return call


class _UnaryUnary(_Tracing, grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[type-arg]
    async def intercept_unary_unary(
        self, continuation: Continuation, client_call_details: ClientCallDetails, request: Any
    ) -> Any:
        return await self._unary(continuation, client_call_details, request)


class _StreamUnary(_Tracing, grpc.aio.StreamUnaryClientInterceptor):  # type: ignore[type-arg]
    async def intercept_stream_unary(
        self,
        continuation: Continuation,
        client_call_details: ClientCallDetails,
        request_iterator: Any,
    ) -> Any:
        return await self._unary(continuation, client_call_details, request_iterator)


class _UnaryStream(_Tracing, grpc.aio.UnaryStreamClientInterceptor):  # type: ignore[type-arg]
    async def intercept_unary_stream(
        self, continuation: Continuation, client_call_details: ClientCallDetails, request: Any
    ) -> Any:
        return await self._stream(continuation, client_call_details, request)


class _StreamStream(_Tracing, grpc.aio.StreamStreamClientInterceptor):  # type: ignore[type-arg]
    async def intercept_stream_stream(
        self,
        continuation: Continuation,
        client_call_details: ClientCallDetails,
        request_iterator: Any,
    ) -> Any:
        return await self._stream(continuation, client_call_details, request_iterator)


def _code_of(error: BaseException) -> grpc.StatusCode:
    if isinstance(error, grpc.aio.AioRpcError):
        return error.code()
    if isinstance(error, asyncio.CancelledError):
        return grpc.StatusCode.CANCELLED
    return grpc.StatusCode.UNKNOWN


async def _end_when_done(span: Span, call: Any) -> None:
    try:
        code = await call.code()
    except BaseException as error:
        # The loop closing under a stream nobody finished.
        tracing.end(span, _code_of(error))
        raise
    tracing.end(span, code)


def interceptors() -> list[grpc.aio.ClientInterceptor]:
    """A client span per call when tracing is on; none at all (no cost) when it is off."""
    tracer = tracing.tracer()
    if tracer is None:
        return []
    ending: set[asyncio.Task[None]] = set()
    kinds = (_UnaryUnary, _UnaryStream, _StreamUnary, _StreamStream)
    return [cast(grpc.aio.ClientInterceptor, kind(tracer, ending)) for kind in kinds]
