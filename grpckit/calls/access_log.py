"""One log line per call: method, peer, client certificate name (and the proxy it came
through), final code, duration, and with tracing on the call's trace id.

The code is what the client got. A call the client cancelled is CANCELLED at INFO, even when
the handler noticed it as a failed write (a viewer that leaves mid-frame makes
`context.write` raise): that is the client's choice, not a server error. Only an exception
on a call that was not cancelled and not ended with a status is UNKNOWN, logged at ERROR
with its traceback: that is a bug.
"""

import asyncio
import logging
import os
import time
from json.encoder import encode_basestring_ascii as _json
from typing import Any

import grpc
from grpc.aio import ServicerContext

from grpckit.calls.authz import Peer
from grpckit.config import AccessLog
from grpckit.telemetry import logs

log = logging.getLogger("grpckit.access")

Context = ServicerContext[Any, Any]


def final_code(context: Context, error: BaseException | None) -> grpc.StatusCode:
    if isinstance(error, asyncio.CancelledError):
        return grpc.StatusCode.CANCELLED
    # Typed as always a code, but None until the handler sets or aborts with one.
    code: grpc.StatusCode | None = context.code()
    if code is not None:
        return code
    if error is None:
        return grpc.StatusCode.OK
    if context.cancelled():
        return grpc.StatusCode.CANCELLED
    # An exception that was not an abort reaches the client as UNKNOWN.
    return grpc.StatusCode.UNKNOWN


class Entry:
    """What must be read while the call is alive: asking a cancelled call for its peer can
    crash the process (a use-after-free in gRPC's core, seen as SIGSEGV when viewers cancel).

    `client` is the caller's name, the one the policy matched (grpckit/calls/callers.py): through
    the edge, the client the edge verified, and `via` the edge."""

    __slots__ = ("client", "peer", "start", "via")

    def __init__(self, context: Context, caller: Peer) -> None:
        self.start = time.perf_counter()
        self.peer = context.peer()
        self.client = caller.name if caller.uris or caller.dns or caller.subject else None
        self.via = caller.via


class AccessLogger:
    def __init__(self, mode: AccessLog) -> None:
        self.errors_only = mode is AccessLog.ERRORS

    def begin(self, context: Context, caller: Peer) -> Entry:
        return Entry(context, caller)

    def end(
        self,
        method: str,
        code: grpc.StatusCode,
        entry: Entry,
        error: BaseException | None,
        trace_id: str | None = None,
    ) -> None:
        """The call's line; `code` is its `final_code`, `error` what ended it, if anything."""
        if code is grpc.StatusCode.OK and self.errors_only:
            return
        duration_ms = round((time.perf_counter() - entry.start) * 1000, 3)
        output = None if code is grpc.StatusCode.UNKNOWN else logs.direct(log)
        if output is not None:
            handler, formatter = output
            arguments = (formatter, method, entry, code, duration_ms, trace_id, time.time())
            handler.add_deferred(_line, arguments)
            return
        fields: dict[str, Any] = {
            "method": method,
            "peer": entry.peer,
            "client": entry.client,
            "code": code.name,
            "duration_ms": duration_ms,
        }
        if entry.via:
            fields["via"] = entry.via
        if trace_id is not None:
            # Given, not read from the current span: the line is written as the call's span
            # ends, and an abandoned stream can end in another task's context.
            fields["trace_id"] = trace_id
        if code is grpc.StatusCode.UNKNOWN:
            log.error("call", extra=fields, exc_info=error)
        else:
            log.info("call", extra=fields)


def _line(
    formatter: logs.JsonFormatter,
    method: str,
    entry: Entry,
    code: grpc.StatusCode,
    duration_ms: float,
    trace_id: str | None,
    created: float,
) -> str:
    """The call's line, ended at `created`, as `formatter.line` writes it from the same
    fields, in JSON text made here (tests/test_access_line.py holds the two to the same
    output). Made by the log's batch, perhaps in its writer thread."""
    client = "null" if entry.client is None else _json(entry.client)
    opening = formatter.opening(created, "INFO", log.name, os.getpid(), "call")
    text = (
        f'{opening}, "method": {_json(method)}, "peer": {_json(entry.peer)}, '
        f'"client": {client}, "code": "{code.name}", "duration_ms": {duration_ms!r}'
    )
    if entry.via:
        text += f', "via": {_json(entry.via)}'
    if trace_id is not None:
        text += f', "trace_id": "{trace_id}"'
    return text + "}"
