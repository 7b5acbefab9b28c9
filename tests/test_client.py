"""The command-line client, run as a process against real servers on loopback."""

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import pytest

from cheese.server import Cheese, CheeseSettings
from grpckit.lifecycle.server import Server, running
from soccer import demo_video
from soccer.server import Soccer, SoccerSettings
from tests.conftest import (
    ROOT,
    eventually,
    every_service,
    free_port,
    replica_processes,
    server_settings,
)


@dataclass
class Result:
    code: int
    out: list[dict[str, object]]
    err: str


@pytest.fixture
async def environment(pki: Path, videos: Path) -> AsyncIterator[dict[str, str]]:
    async with every_service(pki, videos) as servers:
        yield {
            **os.environ,
            **{f"{name.upper()}_TARGET": f"localhost:{s.port}" for name, s in servers.items()},
            "TLS_CA": str(pki / "ca.crt"),
            "TLS_CERT": str(pki / "client.crt"),
            "TLS_KEY": str(pki / "client.key"),
        }


async def run(env: dict[str, str], *args: str) -> Result:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "client", *args, cwd=ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return Result(process.returncode, [json.loads(x) for x in out.splitlines()], err.decode())


async def test_smoke_passes_every_check(environment: dict[str, str]) -> None:
    result = await run(environment, "smoke")
    assert result.code == 0, result.err
    assert all(line["ok"] for line in result.out)
    assert len(result.out) >= 10


async def test_each_command_prints_json(environment: dict[str, str]) -> None:
    cheese = await run(environment, "cheese", "order", "roquefort")
    assert cheese.out[0]["type"] == "ROQUEFORT"
    movie = await run(environment, "movie", "get", "267eedb8-0f5d-42d5-8f43-72426b9fb3e6")
    assert movie.out[0]["title"] == "Creed"
    listed = await run(environment, "movie", "list")
    assert len(listed.out) == 7
    titled = await run(environment, "movie", "title", "spectre")
    assert titled.out[0]["director"] == "Sam Mendes"
    health = await run(environment, "health", "soccer")
    assert (health.code, health.out[0]["status"]) == (0, "SERVING")


async def test_load_balances_calls_over_every_address_of_the_target(
    environment: dict[str, str], pki: Path
) -> None:
    async with AsyncExitStack() as stack:
        replicas = [
            await stack.enter_async_context(
                running(
                    replace(server_settings(pki, "cheese"), replica=name),
                    [Cheese(CheeseSettings(0))],
                )
            )
            for name in ("cheese-a", "cheese-b")
        ]
        # What dns:///cheese resolves to with two replicas, written out.
        addresses = ",".join(f"127.0.0.1:{r.port}" for r in replicas)
        env = {**environment, "CHEESE_TARGET": f"ipv4:{addresses}"}
        # The name the certificate carries: an address list has no host name to check.
        result = await run(
            env, "--server-name", "localhost", "load", "cheese", "--seconds", "1",
            "--concurrency", "4",
        )  # fmt: skip
        assert result.code == 0, result.err
        [summary] = result.out
        assert summary["failed"] == 0
        served = summary["served_by"]
        assert isinstance(served, dict)
        assert set(served) == {"cheese-a", "cheese-b"}


@pytest.mark.parametrize("service", ["movie", "soccer"])
async def test_load_names_the_server_of_every_call(
    environment: dict[str, str], service: str
) -> None:
    result = await run(environment, "load", service, "--seconds", "0.5", "--concurrency", "2")
    assert result.code == 0, result.err
    [summary] = result.out
    assert summary["codes"] == {"OK": summary["calls"]}
    assert summary["served_by"] == {"local": summary["calls"]}


async def test_load_every_interval_adds_up_to_the_summary(environment: dict[str, str]) -> None:
    result = await run(
        environment, "load", "movie", "--seconds", "1.2", "--concurrency", "2", "--every", "0.3"
    )
    assert result.code == 0, result.err
    *intervals, summary = result.out
    assert len(intervals) >= 3
    times = [float(str(line["at"])) for line in intervals]
    assert times == sorted(times)
    assert sum(int(str(line["calls"])) for line in intervals) == summary["calls"]
    assert all(line["failed"] == 0 for line in intervals)


async def test_watch_saves_a_playable_video(environment: dict[str, str], tmp_path: Path) -> None:
    saved = tmp_path / "out.mp4"
    result = await run(
        environment, "soccer", "watch", "small", "--encoding", "jpeg", "--frames", "12",
        "--unpaced", "--save", str(saved),
    )  # fmt: skip
    assert result.code == 0, result.err
    assert result.out[-1]["frames"] == 12
    capture = cv2.VideoCapture(str(saved))
    try:
        assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 12
        assert int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)) == 320
    finally:
        capture.release()


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["movie", "get", "nope"], 1, "error: NOT_FOUND: no movie with id 'nope'"),
        (["soccer", "watch", "../x"], 1, "error: INVALID_ARGUMENT: match id must be"),
        (["cheese", "order", "gouda"], 2, "gouda"),
        (["--key", "/nonexistent.key", "movie", "list"], 2, "/nonexistent.key"),
    ],
)
async def test_errors_are_one_line_and_a_non_zero_exit(
    environment: dict[str, str], args: list[str], code: int, message: str
) -> None:
    result = await run(environment, *args)
    assert result.code == code
    assert message in result.err
    assert "Traceback" not in result.err


async def test_watch_resumes_after_a_server_restart_without_losing_a_frame(
    pki: Path, videos: Path
) -> None:
    settings = replace(server_settings(pki, "soccer", grace=0.5), port=free_port())
    first = Soccer(SoccerSettings(videos))
    server = Server(settings, [first])
    await server.start()
    env = {
        **os.environ,
        "SOCCER_TARGET": f"localhost:{settings.port}",
        "TLS_CA": str(pki / "ca.crt"),
        "TLS_CERT": str(pki / "client.crt"),
        "TLS_KEY": str(pki / "client.key"),
    }
    watching = asyncio.create_task(run(env, "soccer", "watch", "small", "--encoding", "jpeg"))

    async def streaming() -> None:
        # Well into the match, so the client has frames to resume after (before the first
        # frame, gRPC's own retry policy would retry the call and hide the break).
        assert any(hub.next_index >= 10 for hub in first.hubs.live())

    await eventually(streaming)
    await server.stop()
    # The same port, as after a container restart.
    async with running(settings, [Soccer(SoccerSettings(videos))]):
        result = await watching
    assert result.code == 0, result.err
    summary = result.out[-1]
    resumed = summary["resumed"]
    assert isinstance(resumed, int) and resumed >= 1
    assert (summary["frames"], summary["first_frame"], summary["last_frame"]) == (30, 0, 29)
    assert summary["skipped"] == 0


async def test_watch_resumes_on_another_replica_when_its_replica_freezes(
    pki: Path, tmp_path: Path
) -> None:
    """SIGSTOP on the replica serving the viewer: its connection stays open and nothing more
    comes. The viewer calls the stream stalled (client/stall.py) and resumes on the other
    replica from the next frame."""
    demo_video.generate(tmp_path / "long.mp4", seconds=3.0, fps=30, width=320, height=180)
    videos = ("--videos-dir", str(tmp_path))
    async with replica_processes(pki, "soccer", 2, *videos) as replicas:
        env = {
            **os.environ,
            "SOCCER_TARGET": "ipv4:" + ",".join(f"127.0.0.1:{r.port}" for r in replicas),
            "TLS_SERVER_NAME": "localhost",
            "TLS_CA": str(pki / "ca.crt"),
            "TLS_CERT": str(pki / "client.crt"),
            "TLS_KEY": str(pki / "client.key"),
        }
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "client", "soccer", "watch", "long", "--encoding", "jpeg",
            cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert process.stderr is not None
        first = (await asyncio.wait_for(process.stderr.readline(), 30)).decode()
        assert first.startswith("served by "), first
        [frozen] = [r for r in replicas if r.name == first.removeprefix("served by ").strip()]
        frozen.process.send_signal(signal.SIGSTOP)
        out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err
    summary = json.loads(out.splitlines()[-1])
    assert summary["stalled"] >= 1, summary
    assert summary["served_by"][0] == frozen.name, summary
    assert frozen.name not in summary["served_by"][1:], summary
    assert (summary["frames"], summary["first_frame"], summary["last_frame"]) == (90, 0, 89)
    assert summary["skipped"] == 0, summary
