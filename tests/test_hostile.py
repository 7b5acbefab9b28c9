"""Hostile requests for every RPC: each gets its status, and the server keeps serving."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from api import cheese_pb2, movie_pb2, soccer_pb2
from tests.conftest import Connect, client_tls, every_service

OK = grpc.StatusCode.OK
INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
TOO_BIG = grpc.StatusCode.RESOURCE_EXHAUSTED
MiB = 1024 * 1024

# Method path -> whether it streams. Requests go as raw bytes so that anything can be sent,
# including unknown fields and messages no generated class would build.
METHODS = {
    "/cheesefarm.CheeseService/Order": False,
    "/Movie/GetMovieByID": False,
    "/Movie/GetMovieByTitle": False,
    "/Movie/GetListMovies": True,
    "/Movie/GetMoviesByDirector": True,
    "/stream.Soccer/Watch": True,
}


@dataclass
class Servers:
    ports: dict[str, int]
    channels: dict[str, grpc.aio.Channel]

    def channel(self, method: str) -> grpc.aio.Channel:
        service = {"cheesefarm": "cheese", "Movie": "movie", "stream": "soccer"}[
            method.split("/")[1].split(".")[0]
        ]
        return self.channels[service]

    async def call(self, method: str, request: bytes) -> tuple[grpc.StatusCode, int]:
        """The status and the number of responses; never hangs (short deadline)."""
        channel = self.channel(method)
        identity: Any = lambda b: b  # noqa: E731
        try:
            if METHODS[method]:
                stream = channel.unary_stream(method, identity, identity)
                count = 0
                async for _ in stream(request, timeout=10):
                    count += 1
                    if count >= 3:
                        break
                return OK, count
            await channel.unary_unary(method, identity, identity)(request, timeout=10)
            return OK, 1
        except grpc.aio.AioRpcError as error:
            return error.code(), 0


@pytest.fixture
async def servers(
    pki: Path, videos: Path, connect: Connect, tmp_path: Path
) -> AsyncIterator[Servers]:
    outside = tmp_path / "secret.mp4"
    outside.write_bytes((videos / "small.mp4").read_bytes())
    link = videos / "link-out.mp4"
    if not link.is_symlink():
        link.symlink_to(outside)
    async with every_service(pki, videos) as running:
        channels = {name: connect(server.port, client_tls(pki)) for name, server in running.items()}
        yield Servers({n: s.port for n, s in running.items()}, channels)


def unknown_field(message: bytes) -> bytes:
    # Field 99, length-delimited: an older server must skip what a newer client adds.
    return message + b"\x9a\x06\x05hello"


CASES: list[tuple[str, str, bytes, grpc.StatusCode]] = [
    ("unknown enum", "/cheesefarm.CheeseService/Order", b"\x08\x07", INVALID),
    ("negative enum", "/cheesefarm.CheeseService/Order", cheese_pb2.CheeseRequest(type=-5).SerializeToString(), INVALID),  # type: ignore[arg-type]
    ("unknown field", "/cheesefarm.CheeseService/Order", unknown_field(b"\x08\x01"), OK),
    ("garbage bytes", "/cheesefarm.CheeseService/Order", b"\xff\xff\xff\xff", INVALID),
    ("over the size limit", "/cheesefarm.CheeseService/Order", b"\x00" * (5 * MiB), TOO_BIG),
    ("empty id", "/Movie/GetMovieByID", b"", INVALID),
    ("1 MiB id", "/Movie/GetMovieByID", movie_pb2.MovieID(id="x" * MiB).SerializeToString(), INVALID),
    ("non-ASCII id", "/Movie/GetMovieByID", movie_pb2.MovieID(id="фильм-🎬").SerializeToString(), NOT_FOUND),
    ("control characters", "/Movie/GetMovieByID", movie_pb2.MovieID(id="\x00\x1b[2J\n").SerializeToString(), NOT_FOUND),
    ("invalid UTF-8", "/Movie/GetMovieByID", b"\x0a\x02\xc3\x28", INVALID),
    ("unknown field", "/Movie/GetMovieByID", unknown_field(movie_pb2.MovieID(id="a8034f44-aee4-44cf-b32c-74cf452aaaae").SerializeToString()), OK),
    ("1 MiB title", "/Movie/GetMovieByTitle", movie_pb2.MovieTitle(title="t" * MiB).SerializeToString(), INVALID),
    ("control characters", "/Movie/GetMovieByTitle", movie_pb2.MovieTitle(title="\r\n\t").SerializeToString(), INVALID),
    ("unknown field", "/Movie/GetListMovies", unknown_field(b""), OK),
    ("1 MiB director", "/Movie/GetMoviesByDirector", movie_pb2.Director(name="d" * MiB).SerializeToString(), INVALID),
    ("dot-dot", "/stream.Soccer/Watch", soccer_pb2.Match(id="..").SerializeToString(), INVALID),
    ("parent path", "/stream.Soccer/Watch", soccer_pb2.Match(id="../../etc/passwd").SerializeToString(), INVALID),
    ("slash", "/stream.Soccer/Watch", soccer_pb2.Match(id="a/b").SerializeToString(), INVALID),
    ("percent-encoded", "/stream.Soccer/Watch", soccer_pb2.Match(id="%2e%2e%2f").SerializeToString(), INVALID),
    ("absolute path", "/stream.Soccer/Watch", soccer_pb2.Match(id="/etc/passwd").SerializeToString(), INVALID),
    ("NUL", "/stream.Soccer/Watch", soccer_pb2.Match(id="small\x00.mp4").SerializeToString(), INVALID),
    ("symlink out", "/stream.Soccer/Watch", soccer_pb2.Match(id="link-out").SerializeToString(), INVALID),
    ("1 MiB id", "/stream.Soccer/Watch", soccer_pb2.Match(id="s" * MiB).SerializeToString(), INVALID),
    ("non-ASCII id", "/stream.Soccer/Watch", soccer_pb2.Match(id="spiel-ä").SerializeToString(), INVALID),
    ("negative start", "/stream.Soccer/Watch", soccer_pb2.Match(id="small", start_frame=-1).SerializeToString(), INVALID),
    ("huge start", "/stream.Soccer/Watch", soccer_pb2.Match(id="small", start_frame=2**62, unpaced=True).SerializeToString(), grpc.StatusCode.OUT_OF_RANGE),
    ("unknown encoding", "/stream.Soccer/Watch", soccer_pb2.Match(id="small", encoding=9).SerializeToString(), INVALID),  # type: ignore[arg-type]
    ("unknown field", "/stream.Soccer/Watch", unknown_field(soccer_pb2.Match(id="small", unpaced=True).SerializeToString()), OK),
]  # fmt: skip


@pytest.mark.parametrize(
    ("method", "request_", "code"),
    [case[1:] for case in CASES],
    ids=[f"{case[1].rsplit('/', 1)[1]}: {case[0]}" for case in CASES],
)
async def test_hostile_request_gets_its_status_and_the_server_keeps_serving(
    servers: Servers, method: str, request_: bytes, code: grpc.StatusCode
) -> None:
    got, _ = await servers.call(method, request_)
    assert got == code
    # Still serving: a good request to the same service succeeds afterwards.
    good = {
        "cheesefarm": ("/cheesefarm.CheeseService/Order", b""),
        "Movie": ("/Movie/GetListMovies", b""),
        "stream": ("/stream.Soccer/Watch", soccer_pb2.Match(id="small", unpaced=True).SerializeToString()),
    }[method.split("/")[1].split(".")[0]]  # fmt: skip
    assert (await servers.call(*good))[0] == OK


FUZZ = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
EXPECTED = {OK, INVALID, NOT_FOUND, grpc.StatusCode.OUT_OF_RANGE}


@FUZZ
@given(cheese_type=st.integers(-(2**31), 2**31 - 1))
async def test_fuzz_cheese(servers: Servers, cheese_type: int) -> None:
    request = cheese_pb2.CheeseRequest(type=cheese_type)  # type: ignore[arg-type]
    code, _ = await servers.call("/cheesefarm.CheeseService/Order", request.SerializeToString())
    assert code == (OK if 0 <= cheese_type <= 4 else INVALID)


@FUZZ
@given(text=st.text(max_size=300))
async def test_fuzz_movie_lookups(servers: Servers, text: str) -> None:
    for method, message in [
        ("/Movie/GetMovieByID", movie_pb2.MovieID(id=text)),
        ("/Movie/GetMovieByTitle", movie_pb2.MovieTitle(title=text)),
        ("/Movie/GetMoviesByDirector", movie_pb2.Director(name=text)),
    ]:
        code, count = await servers.call(method, message.SerializeToString())
        assert code in {INVALID, NOT_FOUND} or (code == OK and count > 0)


@FUZZ
@given(
    match_id=st.text(max_size=80),
    encoding=st.integers(-3, 5),
    quality=st.integers(-5, 120),
    start=st.integers(-(2**40), 2**40),
    frames=st.integers(-5, 5),
)
async def test_fuzz_watch(
    servers: Servers, match_id: str, encoding: int, quality: int, start: int, frames: int
) -> None:
    request = soccer_pb2.Match(
        id=match_id, encoding=encoding, jpeg_quality=quality,  # type: ignore[arg-type]
        start_frame=start, max_frames=frames, unpaced=True,
    )  # fmt: skip
    code, count = await servers.call("/stream.Soccer/Watch", request.SerializeToString())
    assert code in EXPECTED
    assert code != OK or count > 0  # never a silent empty stream
