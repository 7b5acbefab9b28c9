"""What every call goes through: the runtime's jobs, each in a module of its own or a line
here, in this order:

1. in flight (grpckit/calls/in_flight.py): the call is counted; a health watch is remembered
   so that shutdown can end it. With tracing on (grpckit/telemetry/tracing.py), its server
   span starts, child of the caller's `traceparent`, and is current for the call.
2. caller and access log (grpckit/calls/callers.py, grpckit/calls/access_log.py): the call's
   start, peer and client (the edge's forwarded one, when the edge sent it) are read, and its
   line is written when it ends, whatever ended it.
3. served-by (grpckit/calls/served_by.py): the replica's name goes into the trailing metadata
   first, so that it is there even when the call fails; a stream sends it in its initial
   metadata too, with its first message.
4. readiness: a call to a service before every service has started gets UNAVAILABLE
   (health says NOT_SERVING meanwhile); health and reflection always answer.
5. decoding (grpckit/calls/decoding.py): a request that did not decode ends the call with
   INVALID_ARGUMENT.
6. budgets (grpckit/calls/budgets.py): a call to a service over the server's or its client's
   budget of calls or streams gets RESOURCE_EXHAUSTED before its handler runs.
7. the service's own handler.
8. cancellation (grpckit/calls/cancellation.py): a write that failed because the client went away
   ends the call as cancelled, not as a server error.

1 to 3 see what 4 to 8 do, so a refused or malformed call is counted, logged and named like
any other. The jobs are composed into one handler per method as services register it
(`Registrar`), not through gRPC's interceptor API: with any interceptor at all, grpc.aio
builds every call's metadata and handler-call details in Python and awaits the chain before
the handler runs: about 50 us of CPU per unary call at peak load, measured with ghz.

Authorization (grpckit/calls/authz.py) guards every method, health and reflection included, just
before 6: a call the server's policy does not allow gets PERMISSION_DENIED before any budget
is spent or its handler runs. Both are one `Guard` (grpckit/calls/guards.py), asked inline by the
call's one wrapper here, so a call reads its caller once and pays no coroutine layer per
guard.
"""

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from typing import Any, TypeAlias, cast

import grpc
from grpc.aio import ServicerContext

from grpckit.calls import cancellation, decoding
from grpckit.calls.access_log import AccessLogger, final_code
from grpckit.calls.authz import Authorization, Peer
from grpckit.calls.budgets import CallBudgets
from grpckit.calls.callers import Callers
from grpckit.calls.guards import Guard
from grpckit.calls.in_flight import HEALTH_CHECK, HEALTH_WATCH, InFlight
from grpckit.calls.served_by import served_by
from grpckit.config import AccessLog
from grpckit.telemetry import metrics, tracing

Behaviour = Callable[..., Any]
# Generic only in grpc-stubs, so the alias must stay a string at run time.
Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"
GenericHandler: TypeAlias = "grpc.GenericRpcHandler[Any, Any]"
Context = ServicerContext[Any, Any]

_STARTING = (grpc.StatusCode.UNAVAILABLE, "starting: not serving yet")


class Calls:
    def __init__(
        self,
        services: Sequence[str],
        access_log: AccessLog = AccessLog.ALL,
        replica: str = "local",
        proxy: str | None = None,
    ) -> None:
        self._services = set(services)
        self.callers = Callers(proxy)
        # Set once every service has started; never unset (shutdown drains, it does not refuse).
        self.started = False
        self.in_flight = InFlight()
        self.access = None if access_log is AccessLog.OFF else AccessLogger(access_log)
        self._served_by = served_by(replica)
        # Each method's handler, assembled once: generated code registers each twice.
        self._handlers: dict[str, Handler] = {}
        # Set by the server when callers have identities (TLS); every method is guarded.
        self.authorization: Authorization | None = None
        # Set by the server; health and reflection are never budgeted.
        self.budgets: CallBudgets | None = None

    def handler(self, method: str, found: Handler) -> Handler:
        """`found`, the handler a service registered for `method`, as calls will run it."""
        handler = self._handlers.get(method)
        if handler is None:
            handler = self._handlers[method] = self._assemble(method, found)
            metrics.SERVED.add(method[1:])
        return handler

    def _guard(self, method: str, handler: Handler, guarded: bool) -> Guard | None:
        """Authorization for every method, budgets for the services' own; None when neither
        applies (plaintext servers have no policy)."""
        budget = self.budgets.of(handler) if self.budgets is not None and guarded else None
        if self.authorization is None and budget is None:
            return None
        return Guard(method, self.authorization, budget)

    def _assemble(self, method: str, handler: Handler) -> Handler:
        one_request = not handler.request_streaming
        guarded = method.split("/")[1] in self._services
        guard = self._guard(method, handler, guarded)
        kwargs = {
            "request_deserializer": decoding.tolerant(handler.request_deserializer),
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary:
            unary = handler.unary_unary
            if method == HEALTH_CHECK:
                unary = self.in_flight.checked(unary)
            behaviour = self._awaited(method, unary, one_request, guarded, guard, stream=False)
            return grpc.unary_unary_rpc_method_handler(behaviour, **kwargs)
        if handler.stream_unary:
            behaviour = self._awaited(
                method, handler.stream_unary, one_request, guarded, guard, stream=False
            )
            return grpc.stream_unary_rpc_method_handler(behaviour, **kwargs)
        if handler.unary_stream:
            streaming = handler.unary_stream
            if method == HEALTH_WATCH:
                streaming = self.in_flight.tracked(streaming)
            behaviour = self._streamed(method, streaming, one_request, guarded, guard)
            return grpc.unary_stream_rpc_method_handler(behaviour, **kwargs)
        streaming = cast(Behaviour, handler.stream_stream)
        behaviour = self._streamed(method, streaming, one_request, guarded, guard)
        return grpc.stream_stream_rpc_method_handler(behaviour, **kwargs)

    def prepare(
        self, request: Any, context: Context, *, stream: bool, guarded: bool, one_request: bool
    ) -> tuple[Any, decoding.Refusal | None]:
        """Served-by, readiness and decoding: the request for the handler, or the refusal to
        answer instead (synchronous, so that a call pays for no coroutine here). A stream
        sends its initial metadata only with its first message (`_HeadersWithFirstWrite`,
        `_generated`): a refusal, by the runtime or by the handler before it writes (a
        budget of its own, a request it cannot serve), is then one trailers-only answer,
        where sending headers first made a refused stream cost twice a unary call."""
        context.set_trailing_metadata(self._served_by)
        if guarded and not self.started:
            return request, _STARTING
        if one_request:
            return request, decoding.refusal(request)
        return decoding.each_decoded(request, context), None

    def writer(self, context: Context) -> Context:
        """The context a stream's handler that writes (`context.write`) gets."""
        return cast(Context, _HeadersWithFirstWrite(context, self._served_by))

    def admit(
        self,
        request: Any,
        context: Context,
        caller: Peer,
        guard: Guard | None,
        options: dict[str, bool],
    ) -> tuple[Any, str | None, decoding.Refusal | None]:
        """`prepare`, then the guard's authorization and budgets: the request, what the
        guard took (to give back however the call ends), and the refusal, if any."""
        request, refused = self.prepare(request, context, **options)
        if refused is not None or guard is None:
            return request, None, refused
        taken, refused = guard.admit(context, caller)
        return request, taken, refused

    async def start(self, context: Context) -> None:
        """A stream's initial metadata, so that its client knows its server from the first
        message on."""
        await context.send_initial_metadata(self._served_by)

    def _streamed(
        self,
        method: str,
        behaviour: Behaviour,
        one_request: bool,
        guarded: bool,
        guard: Guard | None,
    ) -> Behaviour:
        if not inspect.isasyncgenfunction(behaviour):
            # Writes through context.write(): awaited like a unary behaviour.
            return self._awaited(method, behaviour, one_request, guarded, guard, stream=True)
        return self._generated(method, behaviour, one_request, guarded, guard)

    def _awaited(
        self,
        method: str,
        behaviour: Behaviour,
        one_request: bool,
        guarded: bool,
        guard: Guard | None,
        *,
        stream: bool,
    ) -> Behaviour:
        calls = self
        options = {"stream": stream, "guarded": guarded, "one_request": one_request}

        if guard is None:

            async def call(request: Any, context: Context) -> Any:
                with _Observed(calls, method, context):
                    request, refused = calls.prepare(request, context, **options)
                    if refused is not None:
                        await context.abort(*refused)
                    return await behaviour(request, calls.writer(context) if stream else context)

            return call

        async def guarded_call(request: Any, context: Context) -> Any:
            with _Observed(calls, method, context) as caller:
                request, taken, refused = calls.admit(request, context, caller, guard, options)
                if refused is not None:
                    await context.abort(*refused)
                try:
                    return await behaviour(request, calls.writer(context) if stream else context)
                finally:
                    if taken is not None:
                        guard.give_back(taken)

        return guarded_call

    def _generated(
        self,
        method: str,
        behaviour: Behaviour,
        one_request: bool,
        guarded: bool,
        guard: Guard | None,
    ) -> Behaviour:
        calls = self
        options = {"stream": True, "guarded": guarded, "one_request": one_request}

        async def call(request: Any, context: Context) -> AsyncIterator[Any]:
            with _Observed(calls, method, context) as caller:
                request, taken, refused = calls.admit(request, context, caller, guard, options)
                if refused is not None:
                    await context.abort(*refused)
                try:
                    responses = behaviour(request, context)
                    async for response in responses:
                        await calls.start(context)
                        yield response
                        break
                    async for response in responses:
                        yield response
                finally:
                    if guard is not None and taken is not None:
                        guard.give_back(taken)

        return call


class _HeadersWithFirstWrite:
    """The context a stream's handler writes through: its first `write` sends the initial
    metadata (served-by) just before the message, and then `write` is the call's own, so
    that later messages pay nothing for it. Everything else is the call's context."""

    __slots__ = ("_context", "_metadata", "write")

    def __init__(self, context: Context, metadata: tuple[tuple[str, str], ...]) -> None:
        self._context = context
        self._metadata = metadata
        self.write: Callable[[Any], Awaitable[None]] = self._first_write

    async def _first_write(self, message: Any) -> None:
        self.write = self._context.write
        await self._context.send_initial_metadata(self._metadata)
        await self._context.write(message)

    async def send_initial_metadata(self, metadata: Sequence[tuple[str, str]]) -> None:
        self.write = self._context.write
        await self._context.send_initial_metadata((*self._metadata, *metadata))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)


class _Observed:
    """One call, counted, traced and logged from its start to its end, whatever ends it."""

    __slots__ = ("_access", "_caller", "_calls", "_context", "_entry", "_method", "_span")

    def __init__(self, calls: Calls, method: str, context: Context) -> None:
        self._calls = calls
        self._method = method
        self._context = context
        calls.in_flight.count += 1
        tracer = tracing.tracer()
        self._span = None if tracer is None else tracing.begin(tracer, method, context)
        self._caller = calls.callers.of(context)
        self._access = calls.access
        self._entry = self._access.begin(context, self._caller) if self._access else None

    def __enter__(self) -> Peer:
        return self._caller

    def __exit__(self, kind: object, error: BaseException | None, traceback: object) -> None:
        self._calls.in_flight.count -= 1
        ended = None if error is None else cancellation.translated(error)
        span = self._span
        if span is not None or self._entry is not None:
            code = final_code(self._context, ended)
            if span is not None:
                tracing.end(span, code)
            if self._access is not None and self._entry is not None:
                trace_id = None if span is None else tracing.trace_id(span)
                self._access.end(self._method, code, self._entry, ended, trace_id)
        if ended is not error:
            raise cast(BaseException, ended) from error


class Registrar(grpc.aio.Server):
    """What services add themselves to: every method handler added is put through the
    runtime's jobs (`Calls.handler`), then added to the gRPC server. The ports and the
    server's lifecycle stay the runtime's."""

    def __init__(self, server: grpc.aio.Server, calls: Calls) -> None:
        self._server = server
        self._calls = calls

    def add_registered_method_handlers(
        self, service_name: str, method_handlers: dict[str, Handler]
    ) -> None:
        # Newer than grpc-stubs, hence the ignore.
        self._server.add_registered_method_handlers(  # type: ignore[attr-defined]
            service_name,
            {
                name: self._calls.handler(f"/{service_name}/{name}", handler)
                for name, handler in method_handlers.items()
            },
        )

    def add_generic_rpc_handlers(self, generic_rpc_handlers: Iterable[GenericHandler]) -> None:
        self._server.add_generic_rpc_handlers(
            [_Generic(generic, self._calls) for generic in generic_rpc_handlers]
        )

    def add_insecure_port(self, address: str) -> int:
        raise NotImplementedError("the runtime binds the ports")

    def add_secure_port(self, address: str, server_credentials: grpc.ServerCredentials) -> int:
        raise NotImplementedError("the runtime binds the ports")

    async def start(self) -> None:
        raise NotImplementedError("the runtime starts the server")

    async def stop(self, grace: float | None = None) -> None:
        raise NotImplementedError("the runtime stops the server")

    async def wait_for_termination(self, timeout: float | None = None) -> bool:  # noqa: ASYNC109
        raise NotImplementedError("the runtime stops the server")


class _Generic(grpc.GenericRpcHandler):  # type: ignore[type-arg]
    """A generic handler whose methods go through the runtime's jobs."""

    def __init__(self, inner: GenericHandler, calls: Calls) -> None:
        self._inner = inner
        self._calls = calls

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> "Handler | None":
        found = self._inner.service(handler_call_details)
        if found is None:
            # No such method here: gRPC answers UNIMPLEMENTED itself.
            return None
        return self._calls.handler(handler_call_details.method, found)
