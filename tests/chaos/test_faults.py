"""Faults on the running compose stack (`make chaos`): kills, stops and a corrupt catalogue
under load, with the project's own channel settings (retries on UNAVAILABLE, wait for
ready, deadlines). Recovery figures are printed; run with -s to see them.
"""

import asyncio
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import grpc
import pytest

from api import movie_pb2, movie_pb2_grpc, soccer_pb2, soccer_pb2_grpc
from client.watch import watch
from tests.chaos.conftest import Load, report, unary_call
from tests.e2e.test_compose import compose, container_health, wait_healthy

pytestmark = pytest.mark.chaos


def process_pid(service: str) -> str:
    container = compose("ps", "--quiet", service).stdout.strip()
    return subprocess.run(
        ["docker", "inspect", "--format", "{{.State.Pid}}", container],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip


def exit_code(service: str) -> str:
    container = compose("ps", "--all", "--quiet", service).stdout.strip()
    return subprocess.run(
        ["docker", "inspect", "--format", "{{.State.ExitCode}}", container],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip


async def kill_and_time_recovery(service: str) -> float:
    os.kill(int(await asyncio.to_thread(process_pid, service)), signal.SIGKILL)
    killed = time.monotonic()
    deadline = killed + 30
    while await asyncio.to_thread(container_health, service) == "healthy":
        assert time.monotonic() < deadline, f"{service} never seen restarting"
        await asyncio.sleep(0.1)
    await asyncio.to_thread(wait_healthy, service)
    return time.monotonic() - killed


@pytest.mark.parametrize("service", ["cheese", "movie"])
async def test_sigkill_under_unary_load_fails_no_call(
    service: str, channels: dict[str, grpc.aio.Channel]
) -> None:
    load = Load(unary_call(service, channels[service]))
    running = asyncio.create_task(load.run())
    await asyncio.sleep(1)  # load established before the fault
    recovery = await kill_and_time_recovery(service)
    before = load.ok
    await asyncio.sleep(2)  # and served again after it
    load.stop.set()
    await running
    report(
        "sigkill",
        service=service,
        recovery_seconds=round(recovery, 2),
        calls=load.ok,
        errors=len(load.errors),
    )
    assert load.errors == []
    assert load.ok > before


async def test_sigkill_during_watch_resumes_without_losing_a_frame(
    channels: dict[str, grpc.aio.Channel],
) -> None:
    match = soccer_pb2.Match(id="demo", encoding=soccer_pb2.JPEG)
    watching = asyncio.create_task(watch(channels["soccer"], match, None, None))
    await asyncio.sleep(2)
    recovery = await kill_and_time_recovery("soccer")
    summary = await watching
    report("sigkill-watch", recovery_seconds=round(recovery, 2), **summary.record())
    assert summary.resumed >= 1
    assert (summary.first_frame, summary.last_frame, summary.skipped) == (0, 299, 0)


async def test_sigterm_drains_unary_calls_and_ends_streams_cleanly(
    channels: dict[str, grpc.aio.Channel],
) -> None:
    soccer = soccer_pb2_grpc.SoccerStub(channels["soccer"])
    stream = soccer.Watch(soccer_pb2.Match(id="demo", encoding=soccer_pb2.JPEG), timeout=60)
    frames = stream.__aiter__()
    await anext(frames)
    loads = {name: Load(unary_call(name, channels[name])) for name in ("cheese", "movie")}
    running = [asyncio.create_task(load.run()) for load in loads.values()]
    await asyncio.sleep(1)
    stopped = time.monotonic()
    await asyncio.to_thread(compose, "stop", "cheese", "movie", "soccer")
    stop_seconds = time.monotonic() - stopped
    codes = {s: await asyncio.to_thread(exit_code, s) for s in ("cheese", "movie", "soccer")}
    with pytest.raises(grpc.aio.AioRpcError) as ended:
        async for _ in frames:
            pass
    for load in loads.values():
        load.stop.set()
    # Calls started while the servers were stopped wait for ready until the restart below.
    await asyncio.to_thread(compose, "start", "cheese", "movie", "soccer")
    await asyncio.gather(*running)
    for service in ("cheese", "movie", "soccer"):
        await asyncio.to_thread(wait_healthy, service)
    report("sigterm", stop_seconds=round(stop_seconds, 2), exit_codes=codes, stream=ended.value.code().name,
           calls={n: load.ok for n, load in loads.items()})  # fmt: skip
    assert ended.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "resume with start_frame=" in (ended.value.details() or "")
    assert all(load.errors == [] for load in loads.values()), {
        n: x.errors[:3] for n, x in loads.items()
    }
    assert codes == {"cheese": "0", "movie": "0", "soccer": "0"}
    assert stop_seconds < 15


async def test_corrupt_then_good_catalogue_under_load(
    channels: dict[str, grpc.aio.Channel],
) -> None:
    data = Path(os.environ["MOVIE_DATA_DIR"])
    catalogue = data / "movies.json"
    good = catalogue.read_text()
    load = Load(unary_call("movie", channels["movie"]))
    running = asyncio.create_task(load.run())
    movies = movie_pb2_grpc.MovieStub(channels["movie"])

    def replace_with(text: str) -> None:
        staged = data / ".movies.json.new"
        staged.write_text(text)
        staged.chmod(0o644)
        staged.replace(catalogue)

    replace_with('{"movies": [{"title": "broken"')
    reported = time.monotonic() + 20
    while "catalogue rejected" not in (await asyncio.to_thread(compose, "logs", "movie")).stdout:
        assert time.monotonic() < reported, "the corrupt catalogue was never reported"
        await asyncio.sleep(0.5)
    document = json.loads(good)
    document["movies"].append(
        {"title": "Arrival", "rating": 7.9, "director": "Denis Villeneuve", "id": "arrival"}
    )
    replace_with(json.dumps(document))
    picked = time.monotonic() + 20
    while True:
        try:
            await movies.GetMovieByID(movie_pb2.MovieID(id="arrival"), timeout=5)
            break
        except grpc.aio.AioRpcError as error:
            assert error.code() == grpc.StatusCode.NOT_FOUND
            assert time.monotonic() < picked, "the good catalogue was never picked up"
            await asyncio.sleep(0.2)
    load.stop.set()
    await running
    replace_with(good)
    report("catalogue", calls=load.ok, errors=len(load.errors))
    assert load.errors == []
