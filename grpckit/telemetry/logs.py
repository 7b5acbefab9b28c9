"""JSON logs, one object per line, so that container log collectors can parse them.

At peak unary load the access log writes thousands of lines a second, and a write per line
costs more than the call it describes: a system call, and with it the GIL handed to gRPC's
poller thread and taken back. So lines are written in batches: an INFO line waits at most
`BATCH_SECONDS` for others to go with it, a WARNING or worse is written at once (with what
waits before it), and so is everything at exit.

The access log's lines are also formatted in the batch (`add_deferred`): its call hands over
the fields and the batch makes the text, all of it in one loop. The same formatting done
once per call, between calls, cost five times as much CPU at peak unary load (21 against
about 4 us a line, cheese `Order` at c=50 on one CPU): the event loop there is preempted
several times a call by gRPC's poller thread, and each line was made with cold caches.

A line written during a traced call carries the call's `trace_id` (grpckit/telemetry/tracing.py
makes the call's server span current for it), so a log search finds the trace and back.
"""

import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TextIO

from opentelemetry import trace

BATCH_SECONDS = 0.05
BATCH_BYTES = 64 * 1024
# What a deferred line is counted as towards BATCH_BYTES before it is made (an access line
# is 250 to 350 bytes).
DEFERRED_BYTES = 300

# A line to make when its batch is written: a function and its arguments.
Deferred = tuple[Callable[..., str], tuple[Any, ...]]

# Attributes every LogRecord has; anything else was passed with `extra=` and is ours.
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message"}
_ENCODER = json.JSONEncoder(default=str)


class JsonFormatter(logging.Formatter):
    def __init__(self, replica: str | None = None) -> None:
        super().__init__()
        # With replicas, which one wrote the line (compose and Kubernetes interleave them).
        self.replica = replica
        self._second = -1
        self._stamp = ""
        self._heads: dict[tuple[str, str, int | None, str], str] = {}

    def _time(self, created: float) -> str:
        """ISO 8601 in UTC to the millisecond; the date and time are made once a second."""
        second = int(created)
        if second != self._second:
            self._second = second
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._stamp}.{int((created - second) * 1000):03d}+00:00"

    def opening(
        self, created: float, severity: str, logger: str, pid: int | None, message: str
    ) -> str:
        """`line` up to its message, left open for fields: a writer of many lines of one form
        (the access log) appends its fields as JSON text itself, five times cheaper than a
        dict encoded per line. What follows the time is encoded once per form."""
        key = (severity, logger, pid, message)
        head = self._heads.get(key)
        if head is None:
            if len(self._heads) >= 64:
                self._heads.clear()
            head = self._heads[key] = _ENCODER.encode(self._head(severity, logger, pid, message))
        return f'{{"time": "{self._time(created)}", {head[1:-1]}'

    def _head(self, severity: str, logger: str, pid: int | None, message: str) -> dict[str, Any]:
        return {
            "severity": severity,
            "logger": logger,
            "pid": pid,
            **({"replica": self.replica} if self.replica else {}),
            "message": message,
        }

    def format(self, record: logging.LogRecord) -> str:
        fields = {k: v for k, v in record.__dict__.items() if k not in _STANDARD}
        if "trace_id" not in fields:
            # Only a kept trace's id: none outside a traced call, with tracing off, or in a
            # call not sampled (no backend has that trace).
            span_context = trace.get_current_span().get_span_context()
            if span_context.trace_flags.sampled:
                fields["trace_id"] = format(span_context.trace_id, "032x")
        if record.exc_info:
            fields["exception"] = self.formatException(record.exc_info)
        return self.line(
            record.created,
            record.levelname,
            record.name,
            record.process,
            record.getMessage(),
            fields,
        )

    def line(
        self,
        created: float,
        severity: str,
        logger: str,
        pid: int | None,
        message: str,
        fields: dict[str, Any],
    ) -> str:
        """The line of a record with these attributes and `extra` fields."""
        entry: dict[str, Any] = {"time": self._time(created)}
        entry.update(self._head(severity, logger, pid, message))
        entry.update(fields)
        return _ENCODER.encode(entry)


class BatchingHandler(logging.Handler):
    """Lines to `stream` in batches (see the module's docstring)."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__()
        self._stream = stream
        self._pending: list[str | Deferred] = []
        self._bytes = 0
        self._wake = threading.Event()
        # The process whose flusher thread runs: a forked worker starts its own.
        self._flusher_pid: int | None = None
        # A forked worker leaves the lines it inherited to its parent, who writes them.
        os.register_at_fork(after_in_child=self._pending.clear)

    def emit(self, record: logging.LogRecord) -> None:
        # Called with the handler's lock held (Handler.handle).
        try:
            line = self.format(record)
        except Exception:
            self.handleError(record)
            return
        self._add(line, urgent=record.levelno >= logging.WARNING)

    def add_deferred(self, make: Callable[..., str], arguments: tuple[Any, ...]) -> None:
        """An INFO line that `make(*arguments)` returns, made when its batch is written (see
        `direct` and the module's docstring): the arguments must not change meanwhile."""
        with self.lock:  # type: ignore[union-attr]
            self._add((make, arguments), urgent=False)

    def _add(self, line: str | Deferred, *, urgent: bool) -> None:
        self._pending.append(line)
        self._bytes += len(line) if isinstance(line, str) else DEFERRED_BYTES
        if urgent or self._bytes >= BATCH_BYTES:
            self._write()
            return
        if len(self._pending) > 1:
            return  # the flusher is awake already, waiting for company
        if self._flusher_pid != os.getpid():
            self._flusher_pid = os.getpid()
            threading.Thread(target=self._flush_batches, name="log-flusher", daemon=True).start()
        self._wake.set()

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            self._write()

    def _write(self) -> None:
        if self._pending:
            lines = [x if isinstance(x, str) else x[0](*x[1]) for x in self._pending]
            self._stream.write("\n".join(lines) + "\n")
            self._pending.clear()
            self._bytes = 0
            self._stream.flush()

    def _flush_batches(self) -> None:
        while True:
            self._wake.wait()
            time.sleep(BATCH_SECONDS)
            with self.lock:  # type: ignore[union-attr]
                self._wake.clear()
                try:
                    self._write()
                except Exception:  # a closed stream at exit: nothing left to tell
                    return


def configure(level: str = "INFO", replica: str | None = None) -> None:
    handler = BatchingHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(replica))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    # No line says which thread or source line wrote it, so logging need not find out
    # (the "Optimization" section of the logging documentation).
    logging.logThreads = False
    logging.logMultiprocessing = False
    logging._srcfile = None


def direct(logger: logging.Logger) -> tuple[BatchingHandler, JsonFormatter] | None:
    """Where `logger`'s INFO lines can be written without a LogRecord: when they are enabled
    and would reach nothing but this module's JSON lines. Building a record and passing it
    through logging costs about 80 us of CPU at peak unary load, more than a unary call
    itself; the access log writes its line here instead, in the same form, when it can."""
    root = logging.root
    if logger.handlers or not logger.propagate or not logger.isEnabledFor(logging.INFO):
        return None
    if len(root.handlers) != 1 or root.filters:
        return None
    handler = root.handlers[0]
    if not isinstance(handler, BatchingHandler) or handler.filters:
        return None
    formatter = handler.formatter
    if not isinstance(formatter, JsonFormatter) or handler.level > logging.INFO:
        return None
    return handler, formatter


def flush() -> None:
    """Write what waits, before an exit that skips Python's own (os._exit)."""
    for handler in logging.getLogger().handlers:
        handler.flush()
