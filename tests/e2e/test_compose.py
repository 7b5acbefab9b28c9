"""End to end on the running compose stack: grpcurl and the client container, by service name.

Run by `make e2e` (scripts/e2e.sh), which starts the stack first and tears it down after.
"""

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, make_pki

pytestmark = pytest.mark.e2e

TLS = ["-cacert", "/certs/ca.crt", "-cert", "/certs/client.crt", "-key", "/certs/client.key"]
TARGETS = {"cheese": "cheese:50051", "movie": "movie:50052", "soccer": "soccer:50053"}
NAMES = {"cheese": "cheesefarm.CheeseService", "movie": "Movie", "soccer": "stream.Soccer"}
MARTIAN = "a8034f44-aee4-44cf-b32c-74cf452aaaae"


def compose(
    *args: str, check: bool = True, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        ["docker", "compose", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )
    if check and result.returncode != 0:
        pytest.fail(f"docker compose {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def grpcurl(
    *args: str, tls: list[str] = TLS, volumes: tuple[str, ...] = (), check: bool = True
) -> subprocess.CompletedProcess[str]:
    mounts = [f"--volume={v}" for v in volumes]
    return compose("run", "--rm", "--no-deps", *mounts, "grpcurl", *tls, *args, check=check)


def objects(text: str) -> list[dict[str, Any]]:
    """grpcurl prints one JSON object per message, pretty-printed one after another."""
    decoder, found, at = json.JSONDecoder(), [], 0
    while at < len(text.rstrip()):
        value, end = decoder.raw_decode(text, at)
        found.append(value)
        at = end
        while at < len(text) and text[at].isspace():
            at += 1
    return found


def call(service: str, method: str, body: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    data = ["-d", json.dumps(body)] if body is not None else []
    return objects(grpcurl(*data, TARGETS[service], method).stdout)


def health(service: str, name: str = "") -> str:
    [answer] = call(service, "grpc.health.v1.Health/Check", {"service": name})
    status: str = answer["status"]
    return status


def container_health(service: str) -> str:
    container = compose("ps", "--quiet", service).stdout.strip()
    result = subprocess.run(
        ["docker", "inspect", "--format", "{{.State.Health.Status}}", container],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return result.stdout.strip()


def wait_healthy(service: str, within: float = 90) -> None:
    deadline = time.monotonic() + within
    while (status := container_health(service)) != "healthy":
        assert time.monotonic() < deadline, f"{service} still {status} after {within}s"
        time.sleep(0.5)


@pytest.mark.parametrize("service", TARGETS)
def test_reflection_lists_and_describes_each_service(service: str) -> None:
    listed = grpcurl(TARGETS[service], "list").stdout.split()
    assert set(listed) == {
        NAMES[service],
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    }
    described = grpcurl(TARGETS[service], "describe", NAMES[service]).stdout
    assert f"service {NAMES[service].split('.')[-1]} {{" in described
    assert "rpc " in described


@pytest.mark.parametrize("service", TARGETS)
def test_health_is_serving_for_server_and_service(service: str) -> None:
    assert health(service) == "SERVING"
    assert health(service, NAMES[service]) == "SERVING"


def test_grpcurl_calls_every_contract_method() -> None:
    [cheese] = call("cheese", "cheesefarm.CheeseService/Order", {"type": "ROQUEFORT"})
    assert cheese["type"] == "ROQUEFORT"
    assert cheese["age"] >= 3
    [movie] = call("movie", "Movie/GetMovieByID", {"id": MARTIAN})
    assert (movie["title"], movie["director"]) == ("The Martian", "Ridley Scott")
    movies = call("movie", "Movie/GetListMovies", {})
    assert len(movies) == 7
    frames = call(
        "soccer", "stream.Soccer/Watch", {"id": "demo", "encoding": "JPEG", "max_frames": 3}
    )
    # grpcurl keeps proto field names and leaves out fields at their default (index 0).
    assert [int(f.get("frame_index", 0)) for f in frames] == [0, 1, 2]
    assert all((f["width"], f["height"], f["encoding"]) == (1280, 720, "JPEG") for f in frames)


def test_bad_input_gets_its_status_over_the_network() -> None:
    result = grpcurl(
        "-d", '{"id": "no-such-movie"}', TARGETS["movie"], "Movie/GetMovieByID", check=False
    )
    assert result.returncode != 0
    assert "Code: NotFound" in result.stderr
    result = grpcurl(
        "-d", '{"id": "../../etc/passwd"}', TARGETS["soccer"], "stream.Soccer/Watch", check=False
    )
    assert "Code: InvalidArgument" in result.stderr


def test_client_container_smoke_passes() -> None:
    result = compose("run", "--rm", "client", "smoke")
    lines = [json.loads(x) for x in result.stdout.splitlines() if x.startswith("{")]
    assert lines[-1] == {"check": "all", "ok": True, "detail": "0 failed"}


@pytest.fixture(scope="module")
def foreign_pki(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    directory = tmp_path_factory.mktemp("foreign")
    directory.chmod(0o755)
    make_pki(directory, "--key-mode", "0644")
    yield directory


@pytest.mark.parametrize("service", TARGETS)
def test_connections_without_a_valid_client_certificate_are_refused(
    service: str, foreign_pki: Path
) -> None:
    attempts = {
        "plaintext": grpcurl("-plaintext", TARGETS[service], "list", tls=[], check=False),
        "no client certificate": grpcurl(
            "-cacert", "/certs/ca.crt", TARGETS[service], "list", tls=[], check=False
        ),
        "certificate from another CA": grpcurl(
            "-cacert", "/certs/ca.crt",
            "-cert", "/foreign/client.crt", "-key", "/foreign/client.key",
            TARGETS[service], "list",
            tls=[], volumes=(f"{foreign_pki}:/foreign:ro",), check=False,
        ),
    }  # fmt: skip
    for attempt, result in attempts.items():
        assert result.returncode != 0, f"{attempt} was accepted: {result.stdout}"
        assert "Failed to dial" in result.stderr or "failed" in result.stderr.lower(), result.stderr
    assert health(service) == "SERVING"


def test_movie_comes_back_by_itself_after_restart_and_kill() -> None:
    compose("restart", "movie")
    wait_healthy("movie")
    assert call("movie", "Movie/GetMovieByID", {"id": MARTIAN})[0]["title"] == "The Martian"

    container = compose("ps", "--quiet", "movie").stdout.strip()
    pid = subprocess.run(
        ["docker", "inspect", "--format", "{{.State.Pid}}", container],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    subprocess.run(["kill", "-9", pid], check=True)
    deadline = time.monotonic() + 30
    while container_health("movie") == "healthy":
        # Until Docker notices the death and restarts it.
        assert time.monotonic() < deadline, "movie was never seen restarting"
        time.sleep(0.2)
    wait_healthy("movie")
    assert call("movie", "Movie/GetMovieByID", {"id": MARTIAN})[0]["title"] == "The Martian"
    restarts = subprocess.run(
        ["docker", "inspect", "--format", "{{.RestartCount}}", container],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    assert int(restarts) >= 1
