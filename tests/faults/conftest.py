"""The stack of the fault runs: three movie replicas and two soccer ones, and the faults
that close no connection, injected for real: `docker pause` (the process stops, its
connections stay open) and a blackhole (iptables inside the replica's network namespace
drops every packet but loopback's, so its own healthcheck still runs); and between a host
viewer and the stack, toxiproxy's latency and bandwidth limits."""

import json
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from tests.conftest import ROOT, free_port
from tests.e2e.test_replicas import inspected, replicas, scale

SCALE = {"cheese": 1, "movie": 3, "soccer": 2}


@pytest.fixture(scope="module")
def scaled() -> Iterator[dict[str, dict[str, str]]]:
    """service -> replica host name -> container id, at SCALE."""
    scale(SCALE)
    found = {service: replicas(service) for service in SCALE}
    assert {s: len(names) for s, names in found.items()} == SCALE, found
    yield found
    scale(dict.fromkeys(SCALE, 1))  # what the other e2e modules expect


def report(name: str, **figures: object) -> None:
    print(json.dumps({"fault": name, **figures}))


def docker(*args: str) -> None:
    result = subprocess.run(["docker", *args], capture_output=True, text=True)
    assert result.returncode == 0, f"docker {' '.join(args)}: {result.stderr}"


@contextmanager
def paused(container: str) -> Iterator[None]:
    docker("pause", container)
    try:
        yield
    finally:
        docker("unpause", container)


BLACKHOLE = [["INPUT", "!", "-i", "lo", "-j", "DROP"], ["OUTPUT", "!", "-o", "lo", "-j", "DROP"]]


@contextmanager
def blackholed(container: str) -> Iterator[None]:
    """Every packet to or from the replica's network dropped: no reset, no FIN, nothing."""
    netns = ["nsenter", "-t", inspected(container, "{{.State.Pid}}"), "-n", "iptables"]
    for rule in BLACKHOLE:
        subprocess.run([*netns, "-I", *rule], check=True, capture_output=True)
    try:
        yield
    finally:
        for rule in BLACKHOLE:
            subprocess.run([*netns, "-D", *rule], check=True, capture_output=True)


TOXIPROXY = ROOT / ".tools/bin/toxiproxy"  # make faults installs it (v2.12.0)


class Toxiproxy:
    """Shopify's toxiproxy on loopback: a proxy to one of the stack's published ports, and
    toxics (latency, bandwidth) on it through its HTTP API."""

    def __init__(self, api: str) -> None:
        self.api = api

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"{self.api}{path}", data=data, method=method)
        with urllib.request.urlopen(request, timeout=10) as response:
            text = response.read()
        return json.loads(text) if text else None

    @contextmanager
    def proxy(self, upstream: str, *toxics: dict[str, Any]) -> Iterator[str]:
        """A proxy to `upstream` with `toxics`; yields the address to dial instead."""
        listen = f"127.0.0.1:{free_port()}"
        self.request("POST", "/proxies", {"name": "stack", "listen": listen, "upstream": upstream})
        try:
            for toxic in toxics:
                self.request("POST", "/proxies/stack/toxics", toxic)
            yield listen
        finally:
            self.request("DELETE", "/proxies/stack")


@pytest.fixture(scope="module")
def toxiproxy() -> Iterator[Toxiproxy]:
    port = free_port()
    server = subprocess.Popen(
        [str(TOXIPROXY), "-host", "127.0.0.1", "-port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    proxy = Toxiproxy(f"http://127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                proxy.request("GET", "/version")
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, "toxiproxy down"
                time.sleep(0.1)
        yield proxy
    finally:
        server.terminate()
        server.wait(timeout=30)
