"""One call to every RPC of every service, plus the error codes that bad input must get.

The end-to-end check runs this against the compose stack: one JSON line per check, and an
exit code that says whether all of them passed.
"""

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Final

import grpc

from api import cheese_pb2, cheese_pb2_grpc, movie_pb2, movie_pb2_grpc, soccer_pb2, soccer_pb2_grpc
from client.common import ClientError, Settings, emit, health_status
from client.watch import decode_frame
from grpckit.client.channel import open_channel

Check = Callable[[grpc.aio.Channel, float], Awaitable[str]]

MARTIAN_ID: Final = "a8034f44-aee4-44cf-b32c-74cf452aaaae"
MARTIAN: Final = "The Martian"
DIRECTOR: Final = "Ridley Scott"
DEMO_FRAMES: Final = 5


class CheckError(Exception):
    pass


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise CheckError(message)


async def order(channel: grpc.aio.Channel, deadline: float) -> str:
    request = cheese_pb2.CheeseRequest(type=cheese_pb2.BRIE)
    cheese = await cheese_pb2_grpc.CheeseServiceStub(channel).Order(request, timeout=deadline)
    expect(cheese.type == cheese_pb2.BRIE, f"ordered BRIE, got {cheese.type}")
    return f"BRIE aged {cheese.age} months"


async def movie_by_id(channel: grpc.aio.Channel, deadline: float) -> str:
    stub = movie_pb2_grpc.MovieStub(channel)
    movie = await stub.GetMovieByID(movie_pb2.MovieID(id=MARTIAN_ID), timeout=deadline)
    expect(movie.title == MARTIAN, f"expected {MARTIAN!r}, got {movie.title!r}")
    return movie.title


async def list_movies(channel: grpc.aio.Channel, deadline: float) -> str:
    stub = movie_pb2_grpc.MovieStub(channel)
    count = 0
    async for _ in stub.GetListMovies(movie_pb2.Empty(), timeout=deadline):
        count += 1
    expect(count >= 1, "no movies")
    return f"{count} movies"


async def movie_by_title(channel: grpc.aio.Channel, deadline: float) -> str:
    stub = movie_pb2_grpc.MovieStub(channel)
    movie = await stub.GetMovieByTitle(movie_pb2.MovieTitle(title=MARTIAN), timeout=deadline)
    expect(movie.id == MARTIAN_ID, f"expected id {MARTIAN_ID}, got {movie.id!r}")
    return f"{movie.title} by {movie.director}"


async def movies_by_director(channel: grpc.aio.Channel, deadline: float) -> str:
    stub = movie_pb2_grpc.MovieStub(channel)
    titles = [
        movie.title
        async for movie in stub.GetMoviesByDirector(
            movie_pb2.Director(name=DIRECTOR), timeout=deadline
        )
    ]
    expect(MARTIAN in titles, f"{MARTIAN!r} not among {titles}")
    return f"{len(titles)} movies"


async def unknown_movie(channel: grpc.aio.Channel, deadline: float) -> str:
    stub = movie_pb2_grpc.MovieStub(channel)
    return await expect_code(
        grpc.StatusCode.NOT_FOUND, stub.GetMovieByID(movie_pb2.MovieID(id="nope"), timeout=deadline)
    )


async def watch_demo(channel: grpc.aio.Channel, deadline: float) -> str:
    match = soccer_pb2.Match(
        id="demo", encoding=soccer_pb2.JPEG, max_frames=DEMO_FRAMES, unpaced=True
    )
    frames = 0
    async for video in soccer_pb2_grpc.SoccerStub(channel).Watch(match, timeout=deadline):
        decode_frame(video)
        frames += 1
    expect(frames == DEMO_FRAMES, f"asked for {DEMO_FRAMES} frames, got {frames}")
    return f"{frames} JPEG frames decode"


async def watch_escape(channel: grpc.aio.Channel, deadline: float) -> str:
    call = soccer_pb2_grpc.SoccerStub(channel).Watch(
        soccer_pb2.Match(id="../etc/passwd"), timeout=deadline
    )
    return await expect_code(grpc.StatusCode.INVALID_ARGUMENT, drain(call))


async def drain(call: grpc.aio.UnaryStreamCall[soccer_pb2.Match, soccer_pb2.Video]) -> None:
    try:
        async for _ in call:
            pass
    finally:
        call.cancel()


async def expect_code(code: grpc.StatusCode, call: Awaitable[object]) -> str:
    try:
        await call
    except grpc.aio.AioRpcError as error:
        expect(
            error.code() == code,
            f"expected {code.name}, got {error.code().name}: {error.details()}",
        )
        return f"{code.name} as expected"
    raise CheckError(f"expected {code.name}, got OK")


def health(service: str) -> Check:
    async def check(channel: grpc.aio.Channel, deadline: float) -> str:
        status = await health_status(channel, service, deadline)
        expect(status == "SERVING", f"{service} is {status}")
        return status

    return check


def service_name(module: Any, service: str) -> str:
    name: str = module.DESCRIPTOR.services_by_name[service].full_name
    return name


CHECKS: Final[dict[str, list[tuple[str, Check]]]] = {
    "cheese": [
        ("cheese Order", order),
        (
            "cheese health",
            health(service_name(cheese_pb2, "CheeseService")),
        ),
    ],
    "movie": [
        ("movie GetMovieByID", movie_by_id),
        ("movie GetListMovies", list_movies),
        ("movie GetMovieByTitle", movie_by_title),
        ("movie GetMoviesByDirector", movies_by_director),
        ("movie GetMovieByID unknown", unknown_movie),
        ("movie health", health(service_name(movie_pb2, "Movie"))),
    ],
    "soccer": [
        ("soccer Watch", watch_demo),
        ("soccer Watch path escape", watch_escape),
        ("soccer health", health(service_name(soccer_pb2, "Soccer"))),
    ],
}


async def run_check(name: str, check: Check, channel: grpc.aio.Channel, deadline: float) -> bool:
    try:
        detail, ok = await check(channel, deadline), True
    except grpc.aio.AioRpcError as error:
        detail, ok = f"{error.code().name}: {error.details()}", False
    except (CheckError, ClientError) as error:
        detail, ok = str(error), False
    emit({"check": name, "ok": ok, "detail": detail})
    return ok


async def ready(channel: grpc.aio.Channel, within: float) -> str:
    """Waits until a server of the channel reports SERVING.

    A smoke started together with its servers (a Kubernetes Job applied with the
    Deployments) may find no address yet: a headless Service's name does not resolve until
    a pod is ready. Before its first resolution a channel fails calls at once, whatever the
    service config says about waiting for ready, so the waiting is done here.
    """
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        await asyncio.wait_for(channel.channel_ready(), within)
    except TimeoutError:
        state = channel.get_state().name
        raise CheckError(f"no server ready within {within:g} s (channel {state})") from None
    return f"ready after {loop.time() - started:.1f} s"


async def run_smoke(settings: Settings, wait: float = 0.0) -> int:
    """Every service at its own target: CHEESE_TARGET, MOVIE_TARGET, SOCCER_TARGET.
    With `wait`, each service is first given that many seconds to have a server ready."""
    failed = 0
    for service, checks in CHECKS.items():
        async with open_channel(settings.target_for(service), settings.tls) as channel:
            if wait > 0:
                failed += not await run_check(f"{service} ready", ready, channel, wait)
            for name, check in checks:
                failed += not await run_check(name, check, channel, settings.deadline)
    emit({"check": "all", "ok": failed == 0, "detail": f"{failed} failed"})
    return 1 if failed else 0
