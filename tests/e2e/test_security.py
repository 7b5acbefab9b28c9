"""What the running containers and the built images hold: no private key baked in, keys
mounted read-only and not world-readable, non-root, read-only root, no capabilities."""

import io
import json
import os
import re
import subprocess
import tarfile
from typing import Any

import pytest

from tests.conftest import ROOT
from tests.e2e.test_compose import compose

pytestmark = pytest.mark.e2e

SERVICES = ["cheese", "movie", "soccer"]
IMAGES = [
    f"grpcdemo-{name}:latest" for name in (*SERVICES, "edge", "client", "pki", "grpcurl", "grpcui")
]
# A whole PEM block, not just its header: TLS libraries carry the header as a constant.
PRIVATE_KEY = re.compile(
    rb"-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----\r?\n[A-Za-z0-9+/=\r\n]{40,}-----END"
)
KEY_NAMES = (".key", ".p12", ".pfx")


def inspect(service: str) -> dict[str, Any]:
    container = compose("ps", "--quiet", service).stdout.strip()
    output = subprocess.run(
        ["docker", "inspect", container], capture_output=True, text=True, check=True
    ).stdout
    details: dict[str, Any] = json.loads(output)[0]
    return details


def our_keys() -> list[bytes]:
    """The base64 body of every key the project generated: these must be in no image."""
    bodies = []
    for key in (ROOT / "certs").glob("*.key"):
        lines = key.read_bytes().splitlines()
        bodies.append(b"".join(line for line in lines if not line.startswith(b"-----"))[:48])
    assert bodies, "no keys in certs/: the pki one-shot makes them"
    return bodies


def secrets_in(layer: tarfile.TarFile, keys: list[bytes]) -> list[str]:
    found = []
    for member in layer:
        if member.name.endswith(KEY_NAMES):
            found.append(member.name)
        if not member.isfile() or member.size > 64 * 1024 * 1024:
            continue
        content = layer.extractfile(member)
        data = content.read() if content is not None else b""
        flat = data.replace(b"\n", b"")
        if any(key in flat for key in keys):
            found.append(f"{member.name}: one of the project's keys")
        # GnuTLS and OpenSSL ship well-known self-test keys inside their shared libraries.
        elif PRIVATE_KEY.search(data) and ".so" not in member.name.rsplit("/", 1)[-1]:
            found.append(f"{member.name}: a PEM private key")
    return found


@pytest.mark.parametrize("image", IMAGES)
def test_no_image_contains_a_private_key(image: str) -> None:
    """Every layer, so that a key added and later deleted is found too."""
    keys = our_keys()
    saved = subprocess.run(["docker", "save", image], capture_output=True, check=True).stdout
    found = []
    with tarfile.open(fileobj=io.BytesIO(saved)) as archive:
        layers = [m for m in archive if m.name.endswith(".tar")]
        assert layers, "no layers found in docker save output"
        for member in layers:
            blob = archive.extractfile(member)
            assert blob is not None
            with tarfile.open(fileobj=io.BytesIO(blob.read())) as layer:
                found += secrets_in(layer, keys)
    assert found == []


@pytest.mark.parametrize("service", SERVICES)
def test_keys_are_mounted_read_only_and_not_world_readable(service: str) -> None:
    mounts = {m["Destination"]: m for m in inspect(service)["Mounts"]}
    secrets = mounts["/run/secrets"]
    assert (secrets["Type"], secrets["RW"]) == ("volume", False)
    mode = compose(
        "exec", "-T", service, "stat", "-L", "-c", "%a", "/run/secrets/server.key"
    ).stdout
    assert int(mode.strip(), 8) & 0o077 == 0, f"group- or world-accessible key: {mode}"
    # Only its own key: no other service's, no client key, no CA key.
    secrets = compose("exec", "-T", service, "ls", "/run/secrets").stdout.split()
    assert sorted(secrets) == ["ca.crt", "server.crt", "server.key"]


@pytest.mark.parametrize("service", [*SERVICES, "edge"])
def test_containers_run_hardened(service: str) -> None:
    details = inspect(service)
    host = details["HostConfig"]
    assert details["Config"]["User"] not in ("", "0", "root")
    assert host["ReadonlyRootfs"] is True
    assert host["CapDrop"] == ["ALL"] or host["CapDrop"] == ["all"]
    assert any("no-new-privileges" in option for option in host["SecurityOpt"])
    uid = compose("exec", "-T", service, "id", "-u").stdout.strip()
    assert uid == "10001"
    denied = compose("exec", "-T", service, "touch", "/app/x", check=False)
    assert denied.returncode != 0


def edge_handshake(*options: str, port: int = 50051) -> str:
    """`openssl s_client` to a published port with the host's client identity: what the
    handshake agreed, or the alert that ended it."""
    certs = ROOT / "certs"
    result = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-alpn", "h2",
         "-cert", str(certs / "client.crt"), "-key", str(certs / "client.key"),
         "-CAfile", str(certs / "ca-bundle.crt"), *options],
        input="", capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    return result.stdout + result.stderr


@pytest.mark.parametrize("group", ["X25519", "P-256", "P-384"])
def test_the_edge_agrees_the_mozilla_intermediate_groups(group: str) -> None:
    assert "Verify return code: 0 (ok)" in (answer := edge_handshake("-groups", group)), answer
    assert "Server Temp Key:" in answer, answer


@pytest.mark.parametrize(
    "options", [("-groups", "P-521"), ("-groups", "X448"), ("-tls1_1",), ("-tls1",)]
)
def test_the_edge_refuses_what_the_mozilla_intermediate_profile_leaves_out(
    options: tuple[str, ...],
) -> None:
    answer = edge_handshake(*options)
    assert "alert handshake failure" in answer or "alert protocol version" in answer, answer
    assert "Server Temp Key:" not in answer, answer


# Each thread of the server (PID 1): "id name policy", as os.sched_getscheduler gives it.
_THREAD_POLICIES = (
    "import os, pathlib\n"
    "for t in pathlib.Path('/proc/1/task').iterdir():\n"
    "    print(t.name, (t / 'comm').read_text().strip(), os.sched_getscheduler(int(t.name)))\n"
)


@pytest.mark.parametrize("service", SERVICES)
def test_grpc_threads_yield_to_the_event_loop_without_privileges(service: str) -> None:
    """GRPC_THREAD_POLICY's default holds in a container with every capability dropped
    (grpckit/lifecycle/scheduling.py): gRPC's threads are SCHED_BATCH, the loop's is not."""
    lines = compose("exec", "-T", service, "python", "-c", _THREAD_POLICIES).stdout.splitlines()
    threads = {}
    for line in lines:
        tid, _, rest = line.partition(" ")
        name, _, policy = rest.rpartition(" ")
        threads[tid] = (name, int(policy))
    engine = {policy for name, policy in threads.values() if name == "event_engine"}
    assert engine == {os.SCHED_BATCH}, threads
    assert threads["1"][1] == os.SCHED_OTHER, threads
