"""`client smoke --wait`: a smoke started before its servers, as a Kubernetes Job applied
with the Deployments is, waits for them instead of failing.

There the servers' names do not resolve until a pod is ready (a headless Service has no
address before), and a channel fails calls at once before its first resolution. Here a DNS
server of the test's own, on loopback, answers SERVFAIL for the servers' names (as the
cluster's did) until the servers are up, then their address.
"""

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import replace
from pathlib import Path

import pytest

from cheese.server import Cheese, CheeseSettings
from grpckit.lifecycle.server import running
from grpckit.lifecycle.service import Service
from movie.server import DEFAULT_CATALOGUE, Movies, MovieSettings
from soccer.server import Soccer, SoccerSettings
from tests.conftest import eventually, free_port, server_settings
from tests.dns_server import DOMAIN, Names, serving_names
from tests.test_client import run

SERVICES = ("cheese", "movie", "soccer")


@pytest.fixture
async def names() -> AsyncIterator[Names]:
    async with serving_names(failing=True) as server:
        yield server


def smoke_environment(pki: Path, names: Names, ports: dict[str, int]) -> dict[str, str]:
    targets = {f"{name.upper()}_TARGET": names.target(name, port) for name, port in ports.items()}
    return {
        **os.environ,
        **targets,
        "TLS_CA": str(pki / "ca.crt"),
        "TLS_CERT": str(pki / "client.crt"),
        "TLS_KEY": str(pki / "client.key"),
        # The names are the test's; the server certificates name localhost.
        "TLS_SERVER_NAME": "localhost",
    }


async def test_without_wait_a_name_that_does_not_resolve_fails_the_smoke(
    pki: Path, names: Names
) -> None:
    ports = {name: free_port() for name in SERVICES}
    result = await run(smoke_environment(pki, names, ports), "--timeout", "5", "smoke")
    assert result.code == 1
    failed = [line for line in result.out if not line["ok"] and line["check"] != "all"]
    assert failed
    # The cluster's message, word for word.
    assert all("DNS server returned general failure" in str(line["detail"]) for line in failed)


async def test_smoke_waits_for_servers_whose_names_resolve_later(
    pki: Path, videos: Path, names: Names
) -> None:
    ports = {name: free_port() for name in SERVICES}
    smoke = asyncio.create_task(run(smoke_environment(pki, names, ports), "smoke", "--wait", "40"))

    async def refused() -> None:
        assert f"cheese.{DOMAIN}" in names.asked

    # The smoke has asked for the first name and been refused before any server exists.
    await eventually(refused, within=20)
    assert not smoke.done()

    services: dict[str, Service] = {
        "cheese": Cheese(CheeseSettings(0.0)),
        "movie": Movies(MovieSettings(DEFAULT_CATALOGUE, 0)),
        "soccer": Soccer(SoccerSettings(videos)),
    }
    async with AsyncExitStack() as stack:
        for name, service in services.items():
            settings = replace(server_settings(pki, name), port=ports[name])
            await stack.enter_async_context(running(settings, [service]))
        names.failing = False
        result = await smoke
    assert result.code == 0, (result.out, result.err)
    ready = [line for line in result.out if str(line["check"]).endswith(" ready")]
    assert [line["check"] for line in ready] == [f"{name} ready" for name in SERVICES]
    assert all(line["ok"] for line in result.out)
