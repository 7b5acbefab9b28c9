"""What `docker compose up` creates on a fresh clone, and what it keeps across restarts.

scripts/stack-test.sh started the stack with the literal `docker compose up -d --wait` (in CI
from a clone with no PKI and no videos). The `pki` one-shot made the PKI in certs/ and gave
each identity its own volume; `demo-video` made videos/demo.mp4. The last test stops the
stack as a user would (Ctrl-C on a foreground `up`, then `down -v`) and starts it again.
"""

import hashlib
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.e2e.test_compose import compose

pytestmark = pytest.mark.e2e

CERTS = ROOT / "certs"
SERVERS = ("cheese", "movie", "soccer")
IDENTITIES = (*SERVERS, "client")


def fingerprint(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def pki_fingerprints() -> dict[str, str]:
    files = ["ca.crt", *(f"{n}.{ext}" for n in IDENTITIES for ext in ("crt", "key"))]
    return {name: fingerprint(CERTS / name) for name in files}


def one_shot_exit_codes() -> dict[str, str]:
    output = compose("ps", "--all", "--format", "{{.Service}} {{.State}} {{.ExitCode}}").stdout
    return {
        service: f"{state} {code}"
        for service, state, code in (line.split() for line in output.splitlines())
        if service in ("pki", "demo-video")
    }


def test_the_one_shots_completed() -> None:
    assert one_shot_exit_codes() == {"pki": "exited 0", "demo-video": "exited 0"}


def test_the_pki_is_in_certs_readable_by_its_owner_only() -> None:
    owner = CERTS.stat().st_uid
    for name in IDENTITIES:
        key, crt = CERTS / f"{name}.key", CERTS / f"{name}.crt"
        assert key.stat().st_mode & 0o077 == 0, f"{key} is readable by others"
        assert (key.stat().st_uid, crt.stat().st_uid) == (owner, owner)
        purpose = "sslclient" if name == "client" else "sslserver"
        subprocess.run(
            ["openssl", "verify", "-CAfile", CERTS / "ca.crt", "-purpose", purpose, crt],
            check=True, capture_output=True,
        )  # fmt: skip


@pytest.mark.parametrize("service", SERVERS)
def test_each_server_holds_its_own_identity_from_certs(service: str) -> None:
    inside = {
        name: compose("exec", "-T", service, "cat", f"/run/secrets/{name}").stdout
        for name in ("server.crt", "ca.crt")
    }
    assert inside["server.crt"] == (CERTS / f"{service}.crt").read_text()
    assert inside["ca.crt"] == (CERTS / "ca.crt").read_text()


def test_the_demo_match_was_made() -> None:
    video = ROOT / "videos" / "demo.mp4"
    assert video.stat().st_size > 100_000


def test_ctrl_c_stops_a_foreground_up_cleanly_and_down_v_then_up_keeps_the_pki(
    tmp_path: Path,
) -> None:
    before = pki_fingerprints()

    # A foreground `up` attaches to the running stack; Ctrl-C (SIGINT to its process group,
    # as a terminal sends it) stops every container. Its output goes to a file: a pipe left
    # unread would stall compose, and through it the containers' own writes.
    output = tmp_path / "up.log"
    with output.open("w") as sink:
        foreground = subprocess.Popen(
            ["docker", "compose", "up"], cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    deadline = time.monotonic() + 120
    while "Attaching to" not in output.read_text():
        assert foreground.poll() is None, output.read_text()
        assert time.monotonic() < deadline, "docker compose up never attached"
        time.sleep(0.2)
    os.killpg(foreground.pid, signal.SIGINT)
    foreground.wait(timeout=60)
    log = output.read_text()
    assert "panic" not in log, log
    states = compose("ps", "--all", "--format", "{{.Service}} {{.State}} {{.ExitCode}}").stdout
    stopped = {line.split()[0]: line.split()[1:] for line in states.splitlines()}
    for service in SERVERS:
        assert stopped[service] == ["exited", "0"], f"{service}: {stopped}\n{log}"

    compose("down", "--volumes")
    compose("up", "--detach", "--wait", timeout=300)
    assert pki_fingerprints() == before, "the PKI in certs/ changed across down -v and up"
    assert one_shot_exit_codes() == {"pki": "exited 0", "demo-video": "exited 0"}
