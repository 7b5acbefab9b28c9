"""The maintenance port: health over plaintext gRPC and `/metrics` over HTTP/1.1, on one port.

Kubernetes' gRPC probes, compose's healthchecks (grpckit/client/probe.py) and Prometheus all come
to the one plaintext port that carries no business RPC. grpcio cannot answer HTTP/1.1, so a
small listener reads each connection's first bytes and routes it:

- the HTTP/2 client preface (`PRI * HTTP/2.0`: gRPC, kubelet's probes) is spliced, bytes
  both ways, to the health-only gRPC server, which listens on loopback alone;
- `GET /metrics` gets the Prometheus exposition (grpckit/telemetry/metrics.py), then the connection
  is closed; any other path 404, any other request 400.

Bounded like every other listener: at most MAX_CONNECTIONS at once (more are closed at
once), FIRST_BYTES_SECONDS to send the preface or a request head of at most HEAD_BYTES.
"""

import asyncio
import contextlib
import logging
from typing import Final

import grpc

from grpckit.telemetry import metrics

log = logging.getLogger("grpckit.maintenance")

PREFACE: Final = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
MAX_CONNECTIONS: Final = 64
FIRST_BYTES_SECONDS: Final = 5.0
HEAD_BYTES: Final = 8 * 1024
_CHUNK: Final = 64 * 1024


def _response(status: str, body: bytes, content_type: str = "text/plain; charset=utf-8") -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


class Maintenance:
    """`health` (a grpc.aio server with the health service alone) behind the router."""

    def __init__(self, health: grpc.aio.Server, *, serve_metrics: bool) -> None:
        self._grpc = health
        self._serve_metrics = serve_metrics
        self._inner_port = 0
        self._listener: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()

    async def start(self, host: str, port: int) -> int:
        """Listen on host:port; returns the bound port. OSError when it cannot be bound."""
        self._inner_port = self._grpc.add_insecure_port("127.0.0.1:0")
        await self._grpc.start()
        self._listener = await asyncio.start_server(self._accept, host, port)
        bound: int = self._listener.sockets[0].getsockname()[1]
        return bound

    async def stop(self) -> None:
        if self._listener is not None:
            self._listener.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        await self._grpc.stop(None)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if len(self._connections) >= MAX_CONNECTIONS:
            writer.close()
            return
        self._connections.add(task)
        try:
            await self._route(reader, writer)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
            pass  # the peer went away, stalled or sent too much: nothing to answer
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def _route(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # One deadline for the first bytes, whichever protocol they turn out to start.
        deadline = asyncio.get_running_loop().time() + FIRST_BYTES_SECONDS
        async with asyncio.timeout_at(deadline):
            start = await reader.readexactly(4)
        if start == PREFACE[:4]:
            await self._splice_grpc(reader, writer, deadline)
        else:
            await self._serve_http(reader, writer, start, deadline)

    async def _splice_grpc(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, deadline: float
    ) -> None:
        """The rest of the preface by `deadline`, then the connection spliced to gRPC."""
        async with asyncio.timeout_at(deadline):
            if await reader.readexactly(len(PREFACE) - 4) != PREFACE[4:]:
                return
            upstream = await asyncio.open_connection("127.0.0.1", self._inner_port)
        await _splice(reader, writer, upstream, PREFACE)

    async def _serve_http(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        start: bytes,
        deadline: float,
    ) -> None:
        """The request head that begins with `start`, read by `deadline`, answered."""
        async with asyncio.timeout_at(deadline):
            head = start + await self._head(reader)
        writer.write(await self._answer(head))
        await writer.drain()

    async def _head(self, reader: asyncio.StreamReader) -> bytes:
        """The rest of an HTTP request head, at most HEAD_BYTES."""
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = await reader.read(HEAD_BYTES)
            if not chunk:
                break
            head += chunk
            if len(head) > HEAD_BYTES:
                break
        return head

    async def _answer(self, head: bytes) -> bytes:
        line = head.split(b"\r\n", 1)[0].split(b" ")
        if len(line) != 3 or not line[2].startswith(b"HTTP/1.") or b"\r\n\r\n" not in head:
            return _response("400 Bad Request", b"bad request\n")
        method, target = line[0], line[1].split(b"?", 1)[0]
        if method != b"GET":
            return _response("405 Method Not Allowed", b"GET only\n")
        if target != b"/metrics" or not self._serve_metrics:
            return _response("404 Not Found", b"not found\n")
        body = await asyncio.to_thread(metrics.exposition)
        return _response("200 OK", body, metrics.CONTENT_TYPE)


async def _splice(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    first: bytes,
) -> None:
    """Bytes both ways until either side closes."""
    up_reader, up_writer = upstream
    up_writer.write(first)
    try:
        pipes = [
            asyncio.ensure_future(_pipe(reader, up_writer)),
            asyncio.ensure_future(_pipe(up_reader, writer)),
        ]
        try:
            await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pipe in pipes:
                pipe.cancel()
            await asyncio.gather(*pipes, return_exceptions=True)
    finally:
        up_writer.close()


async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        while chunk := await source.read(_CHUNK):
            sink.write(chunk)
            await sink.drain()
