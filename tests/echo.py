"""A service of the runtime tests' own, on generic handlers: text in, text out.

Requests decode as UTF-8, so invalid UTF-8 is a request that does not decode. What `Echo`
does depends on the text: "bug" raises, "reject" ends INVALID_ARGUMENT, "sleep <s>" answers
after s seconds, "peer <s>" answers its caller's address after s seconds; anything else is
echoed. `Ticks` writes numbered messages until cancelled; `Join` joins a stream of requests.

`python -m tests.echo` runs it, like `python -m cheese`.
"""

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from grpc.aio import ServicerContext

from grpckit.lifecycle.main import main
from grpckit.lifecycle.service import BackgroundTasks, Program, Service, StartupError
from grpckit.settings import setting

NAME = "test.Echo"
ECHO = f"/{NAME}/Echo"
TICKS = f"/{NAME}/Ticks"
JOIN = f"/{NAME}/Join"
# Who may call it: `client` everything, `monitor` health.
POLICY = Path(__file__).with_name("echo_authz.json")

Context = ServicerContext[str, bytes]


@dataclass(frozen=True)
class EchoSettings:
    fail_start: bool = setting(False, "ECHO_FAIL_START", "refuse to start")


def _decode(data: bytes) -> str:
    return data.decode("utf-8")


def _encode(text: str) -> bytes:
    return text.encode("utf-8")


# Responses go out as the handlers' bytes: grpcio encodes a str response itself (as UTF-8)
# before any serializer sees it.


class Echo(Service):
    names = (NAME,)

    def __init__(self, settings: EchoSettings | None = None) -> None:
        self.settings = settings or EchoSettings()
        # Set by a test to hold `start` until it says so.
        self.gate: asyncio.Event | None = None
        self.starting = asyncio.Event()
        self.stopped = asyncio.Event()
        # Ticks calls inside a write (blocked, once the client stops reading), and the
        # errors of writes that failed because the client had gone.
        self.writing = 0
        self.write_errors: list[BaseException] = []

    def add_to(self, server: grpc.aio.Server) -> None:
        handlers = {
            "Echo": grpc.unary_unary_rpc_method_handler(self.Echo, _decode),
            "Ticks": grpc.unary_stream_rpc_method_handler(self.Ticks, _decode),
            "Join": grpc.stream_unary_rpc_method_handler(self.Join, _decode),
        }
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(NAME, handlers),))

    async def start(self, tasks: BackgroundTasks) -> None:
        self.starting.set()
        if self.settings.fail_start:
            raise StartupError("told to fail (ECHO_FAIL_START)")
        if self.gate is not None:
            await self.gate.wait()

    async def stop(self) -> None:
        self.stopped.set()

    async def Echo(self, request: str, context: Context) -> bytes:
        word, _, argument = request.partition(" ")
        if word == "bug":
            raise RuntimeError("a bug in the handler")
        if word == "reject":
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "rejected as asked")
        if word == "sleep":
            await asyncio.sleep(float(argument))
        if word == "peer":
            peer = context.peer()
            await asyncio.sleep(float(argument))
            return _encode(peer)
        return _encode(request)

    async def Ticks(self, request: str, context: Context) -> None:
        """Messages of `request` bytes each, numbered, for as long as the client reads."""
        padding = b"." * int(request)
        tick = 0
        while True:
            self.writing += 1
            try:
                await context.write(b"%d " % tick + padding)
            except Exception as error:
                self.write_errors.append(error)
                raise
            finally:
                self.writing -= 1
            tick += 1

    async def Join(self, requests: AsyncIterator[str], context: Context) -> bytes:
        return _encode(" ".join([text async for text in requests]))


def echo(channel: grpc.aio.Channel) -> Any:
    return channel.unary_unary(ECHO, request_serializer=_encode, response_deserializer=_decode)


def ticks(channel: grpc.aio.Channel) -> Any:
    return channel.unary_stream(TICKS, request_serializer=_encode, response_deserializer=_decode)


def join(channel: grpc.aio.Channel) -> Any:
    return channel.stream_unary(JOIN, request_serializer=_encode, response_deserializer=_decode)


PROGRAM = Program("echo", 0, "The runtime tests' echo server.", EchoSettings, lambda s: [Echo(s)])

if __name__ == "__main__":
    raise SystemExit(main(PROGRAM))
