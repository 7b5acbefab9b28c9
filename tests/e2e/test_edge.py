"""The edge (Envoy, deploy/edge/envoy.yaml) on the running stack: JSON over HTTPS as the
README prints it, errors as HTTP codes with the gRPC message, a gRPC-Web call, mutual TLS
required, the client's identity forwarded to the servers, and its admin interface unpublished.
"""

import http.client
import json
import os
import re
import ssl
import struct
import subprocess
from typing import Any

import pytest

from api import movie_pb2
from tests.conftest import ROOT
from tests.e2e.test_compose import MARTIAN, compose

pytestmark = pytest.mark.e2e

CERTS = ROOT / "certs"
HTTPS = ("localhost", int(os.environ.get("HTTPS_PORT", "8443")))


def tls(*, with_cert: bool = True) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=CERTS / "ca.crt")
    if with_cert:
        context.load_cert_chain(CERTS / "client.crt", CERTS / "client.key")
    return context


def post(path: str, body: bytes, content_type: str) -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPSConnection(*HTTPS, context=tls(), timeout=30)
    try:
        connection.request("POST", path, body, {"content-type": content_type})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def readme_curl_commands() -> list[str]:
    """Every `curl` line of the README's shell blocks that calls the edge."""
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```sh\n(.*?)```", text, re.DOTALL)
    return [
        line
        for block in blocks
        for line in block.replace("\\\n", " ").splitlines()
        if line.startswith("curl ") and "8443" in line
    ]


def test_the_readmes_curl_returns_the_movie_as_json() -> None:
    commands = readme_curl_commands()
    assert commands, "the README prints no curl command for the edge"
    for command in commands:
        result = subprocess.run(
            ["bash", "-c", command], cwd=ROOT, capture_output=True, text=True, timeout=30
        )
        assert result.returncode == 0, (command, result.stderr)
        movie = json.loads(result.stdout)
        assert movie["id"] == MARTIAN, (command, movie)
        assert movie["title"] == "The Martian"


@pytest.mark.parametrize(
    ("path", "body", "status", "message"),
    [
        ("/Movie/GetMovieByID", {"id": "nope"}, 404, "no movie with id 'nope'"),
        ("/Movie/GetMovieByID", {"id": ""}, 400, "id"),
        ("/cheesefarm.CheeseService/Order", {"type": "BRIE"}, 200, None),
    ],
)
def test_json_errors_are_http_codes_with_the_grpc_message(
    path: str, body: dict[str, Any], status: int, message: str | None
) -> None:
    code, _, answer = post(path, json.dumps(body).encode(), "application/json")
    assert code == status, answer
    if message is not None:
        assert message in json.loads(answer)["message"], answer


def grpc_web_frames(body: bytes) -> tuple[list[bytes], dict[str, str]]:
    """Messages and trailers of a gRPC-Web response body (frames: flag, length, bytes)."""
    messages, trailers, at = [], {}, 0
    while at < len(body):
        flag, length = struct.unpack(">BI", body[at : at + 5])
        payload = body[at + 5 : at + 5 + length]
        at += 5 + length
        if flag & 0x80:
            for line in payload.decode().strip().split("\r\n"):
                key, _, value = line.partition(":")
                trailers[key.strip().lower()] = value.strip()
        else:
            messages.append(payload)
    return messages, trailers


def test_a_grpc_web_call_answers_and_names_its_replica() -> None:
    request = movie_pb2.MovieID(id=MARTIAN).SerializeToString()
    framed = struct.pack(">BI", 0, len(request)) + request
    status, headers, body = post("/Movie/GetMovieByID", framed, "application/grpc-web+proto")
    assert status == 200
    messages, trailers = grpc_web_frames(body)
    assert trailers["grpc-status"] == "0", trailers
    [message] = messages
    assert movie_pb2.MovieData.FromString(message).title == "The Martian"
    assert "served-by" in trailers or "served-by" in headers


def test_the_edge_requires_a_client_certificate() -> None:
    connection = http.client.HTTPSConnection(*HTTPS, context=tls(with_cert=False), timeout=30)
    with pytest.raises((ssl.SSLError, ConnectionError, http.client.HTTPException)):
        connection.request("POST", "/Movie/GetMovieByID", b"{}")
        connection.getresponse().read()
    connection.close()


def test_the_servers_log_the_client_the_edge_forwarded() -> None:
    status, _, _ = post(
        "/Movie/GetMovieByID", json.dumps({"id": MARTIAN}).encode(), "application/json"
    )
    assert status == 200
    logs = compose("logs", "--no-color", "--no-log-prefix", "movie").stdout
    lines = [json.loads(line) for line in logs.splitlines() if line.startswith("{")]
    calls = [line for line in lines if line.get("method") == "/Movie/GetMovieByID"]
    assert any(line.get("client") == "client" and line.get("via") == "edge" for line in calls)


def test_the_admin_interface_is_not_published() -> None:
    ports = compose("port", "edge", "9901", check=False)
    assert ports.returncode != 0 or not ports.stdout.strip()
    published = subprocess.run(
        ["docker", "inspect", "--format", "{{json .NetworkSettings.Ports}}",
         compose("ps", "--quiet", "edge").stdout.strip()],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert "9901" not in published
    # Inside the container it answers on loopback only.
    ready = compose("exec", "-T", "edge", "curl", "-fsS", "http://127.0.0.1:9901/ready")
    assert ready.stdout.strip() == "LIVE"
