"""A write that fails because the client has gone is a cancellation, not a server error.

When a client cancels a stream (or drops its connection) while the handler is writing,
gRPC's core fails the write with ExecuteBatchError before it tells the handler that the call
was cancelled. The handler's exception then looks like a bug: gRPC logs it at ERROR with a
traceback, and the access log would call it UNKNOWN. Raised again as CancelledError, it is
what gRPC does with every other cancelled call: nothing sent, a debug line at most.
"""

import asyncio

from grpc._cython import cygrpc  # type: ignore[attr-defined]


def translated(error: BaseException) -> BaseException:
    """`error`, or a CancelledError to raise from it when the call broke under the handler."""
    if isinstance(error, cygrpc.ExecuteBatchError):
        return asyncio.CancelledError("the client went away during a write")
    return error
