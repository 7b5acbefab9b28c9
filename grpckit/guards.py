"""A check that runs before a method's handler, and what it took given back after: the shape
authorization (grpckit/authz.py) and budgets (grpckit/budgets.py) share.

The guarded behaviour is the same kind of callable as the original: the interceptor drives
async generators and coroutines differently.
"""

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeAlias, TypeVar, cast

import grpc
from grpc.aio import ServicerContext

Behaviour = Callable[..., Any]
# Generic only in grpc-stubs, so the alias must stay a string at run time.
Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"
Context = ServicerContext[Any, Any]
T = TypeVar("T")


def guarded(
    handler: Handler,
    enter: Callable[[Context], Awaitable[T]],
    leave: Callable[[T], None] | None = None,
) -> Handler:
    """`handler` whose behaviour runs after `enter(context)` (which ends the call to refuse
    it) and, when given, `leave(what enter returned)` however the behaviour ends."""
    kind = ("stream" if handler.request_streaming else "unary") + (
        "_stream" if handler.response_streaming else "_unary"
    )
    behaviour: Behaviour = getattr(handler, kind)
    # A named tuple in grpcio; the stubs do not say so.
    replace = handler._replace  # type: ignore[attr-defined]
    return cast(Handler, replace(**{kind: _guarded(behaviour, enter, leave)}))


def _guarded(
    behaviour: Behaviour,
    enter: Callable[[Context], Awaitable[T]],
    leave: Callable[[T], None] | None,
) -> Behaviour:
    if inspect.isasyncgenfunction(behaviour):

        async def generated(request: Any, context: Context) -> AsyncIterator[Any]:
            entered = await enter(context)
            try:
                async for response in behaviour(request, context):
                    yield response
            finally:
                if leave is not None:
                    leave(entered)

        return generated

    async def awaited(request: Any, context: Context) -> Any:
        entered = await enter(context)
        try:
            return await behaviour(request, context)
        finally:
            if leave is not None:
                leave(entered)

    return awaited
