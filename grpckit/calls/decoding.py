"""Requests that do not decode are the caller's mistake: INVALID_ARGUMENT, not UNKNOWN.

When a request does not decode, gRPC answers UNKNOWN and logs a traceback, as if the server
had a bug. The runtime decodes tolerantly instead: a request that fails becomes an
`Undecodable`, which never reaches a handler. A method that takes one request answers it
with INVALID_ARGUMENT before its handler runs; one that takes a stream of requests gets them
through `each_decoded`, which ends the call with INVALID_ARGUMENT when it meets one.
"""

from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from grpc.aio import ServicerContext

Deserializer = Callable[[bytes], Any]


class Undecodable:
    __slots__ = ("error",)

    def __init__(self, error: Exception) -> None:
        self.error = error


def tolerant(deserializer: Deserializer | None) -> Deserializer | None:
    if deserializer is None:
        return None

    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception as error:  # any decoding failure is the caller's bad input
            return Undecodable(error)

    return deserialize


Refusal = tuple[grpc.StatusCode, str]


def refusal(request: Any) -> Refusal | None:
    """The answer to a request that did not decode; None for one that did. A plain function,
    not a coroutine: it runs on every call."""
    if type(request) is Undecodable:
        return grpc.StatusCode.INVALID_ARGUMENT, f"malformed request: {request.error}"
    return None


async def each_decoded(
    requests: AsyncIterator[Any], context: ServicerContext[Any, Any]
) -> AsyncIterator[Any]:
    async for request in requests:
        refused = refusal(request)
        if refused is not None:
            await context.abort(*refused)
        yield request
