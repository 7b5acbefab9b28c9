"""What every call goes through: one structured log line (method, peer, client, status
code, duration), a count of calls in flight, INVALID_ARGUMENT for requests that do not
decode (gRPC would otherwise answer UNKNOWN and log a traceback), and the replica's name in
the response metadata under `served-by`.

`served-by` travels in the trailing metadata of unary responses, where it costs nothing
extra, and in the initial metadata of streams, so that a viewer knows its server from the
start (and a test knows which replica to stop).
"""

import asyncio
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeAlias, cast

import grpc
from grpc.aio import ServicerContext

log = logging.getLogger("grpckit.access")

SERVED_BY = "served-by"

Behaviour = Callable[..., Any]


def _client_name(context: ServicerContext[Any, Any]) -> str | None:
    names = list(context.auth_context().get("x509_common_name", ()))
    return names[0].decode() if names else None


def _final_code(context: ServicerContext[Any, Any], error: BaseException | None) -> grpc.StatusCode:
    if isinstance(error, asyncio.CancelledError):
        return grpc.StatusCode.CANCELLED
    # Typed as always a code, but None until the handler sets or aborts with one.
    code: grpc.StatusCode | None = context.code()
    if code is not None:
        return code
    # An exception that was not an abort reaches the client as UNKNOWN.
    return grpc.StatusCode.OK if error is None else grpc.StatusCode.UNKNOWN


class _Call:
    def __init__(
        self, method: str, context: ServicerContext[Any, Any], gauge: "CallInterceptor"
    ) -> None:
        self.method = method
        self.context = context
        self.gauge = gauge
        self.start = time.perf_counter()
        # Read while the call is alive: asking a cancelled call for its peer can crash the
        # process (a use-after-free in gRPC's core, seen as SIGSEGV when viewers cancel).
        self.peer = context.peer()
        self.client = _client_name(context)
        gauge.in_flight += 1

    def done(self, error: BaseException | None) -> None:
        self.gauge.in_flight -= 1
        if self.gauge.access_log == "off":
            return
        code = _final_code(self.context, error)
        if code is grpc.StatusCode.OK and self.gauge.access_log == "errors":
            return
        level = logging.ERROR if code is grpc.StatusCode.UNKNOWN else logging.INFO
        log.log(
            level,
            "call",
            extra={
                "method": self.method,
                "peer": self.peer,
                "client": self.client,
                "code": code.name,
                "duration_ms": round((time.perf_counter() - self.start) * 1000, 3),
            },
            exc_info=error if level == logging.ERROR else None,
        )


class _Undecodable:
    def __init__(self, error: Exception) -> None:
        self.error = error


def _tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None

    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception as error:  # any decoding failure is the caller's bad input
            return _Undecodable(error)

    return deserialize


async def _reject_undecodable(request: Any, context: ServicerContext[Any, Any]) -> None:
    if isinstance(request, _Undecodable):
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"malformed request: {request.error}")


def _wrap_unary(
    method: str, behaviour: Behaviour, gauge: "CallInterceptor", *, stream: bool = False
) -> Behaviour:
    async def wrapper(request: Any, context: ServicerContext[Any, Any]) -> Any:
        call = _Call(method, context, gauge)
        try:
            if stream:
                await context.send_initial_metadata(gauge.served_by)
            else:
                context.set_trailing_metadata(gauge.served_by)
            await _reject_undecodable(request, context)
            response = await behaviour(request, context)
        except BaseException as error:
            call.done(error)
            raise
        call.done(None)
        return response

    return wrapper


def _wrap_stream(method: str, behaviour: Behaviour, gauge: "CallInterceptor") -> Behaviour:
    if not inspect.isasyncgenfunction(behaviour):
        # Writes through context.write(): it is awaited like a unary behaviour.
        return _wrap_unary(method, behaviour, gauge, stream=True)

    async def wrapper(request: Any, context: ServicerContext[Any, Any]) -> AsyncIterator[Any]:
        call = _Call(method, context, gauge)
        try:
            await context.send_initial_metadata(gauge.served_by)
            await _reject_undecodable(request, context)
            async for response in behaviour(request, context):
                yield response
        except BaseException as error:
            call.done(error)
            raise
        call.done(None)

    return wrapper


# Generic only in grpc-stubs, so the alias must stay a string at run time.
Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"
HEALTH_WATCH = "/grpc.health.v1.Health/Watch"


class CallInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Counts the calls in flight too: shutdown reports them and tests wait on them."""

    def __init__(self, access_log: str = "all", replica: str = "local") -> None:
        # "all", "errors" (calls that did not end OK) or "off".
        self.access_log = access_log
        self.served_by = ((SERVED_BY, replica),)
        self.in_flight = 0
        self._health_watches: set[asyncio.Task[Any]] = set()
        # The wrapped handler of each method, built on its first call: the services of a
        # server are fixed once it starts, so every later call skips the lookup and wrapping.
        self._wrapped: dict[str, Handler] = {}

    def end_health_watches(self) -> None:
        for task in self._health_watches:
            task.cancel()

    def _tracked(self, behaviour: Behaviour) -> Behaviour:
        """A health watch whose task shutdown can cancel (it writes through context.write)."""

        async def watch(request: Any, context: ServicerContext[Any, Any]) -> Any:
            task = asyncio.current_task()
            assert task is not None
            self._health_watches.add(task)
            try:
                return await behaviour(request, context)
            finally:
                self._health_watches.discard(task)

        return watch

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler:
        method = handler_call_details.method
        wrapped = self._wrapped.get(method)
        if wrapped is None:
            # None when no service has the method: gRPC answers UNIMPLEMENTED itself.
            handler: Handler | None = await continuation(handler_call_details)
            if handler is None:
                return cast(Handler, None)
            wrapped = self._wrapped[method] = self._wrap(method, handler)
        return wrapped

    def _wrap(self, method: str, handler: Handler) -> Handler:
        kwargs = {
            "request_deserializer": _tolerant(handler.request_deserializer),
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                _wrap_unary(method, handler.unary_unary, self), **kwargs
            )
        if handler.unary_stream:
            behaviour = handler.unary_stream
            if method == HEALTH_WATCH:
                behaviour = self._tracked(behaviour)
            return grpc.unary_stream_rpc_method_handler(
                _wrap_stream(method, behaviour, self), **kwargs
            )
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                _wrap_unary(method, handler.stream_unary, self), **kwargs
            )
        return grpc.stream_stream_rpc_method_handler(
            _wrap_stream(method, cast(Behaviour, handler.stream_stream), self), **kwargs
        )
