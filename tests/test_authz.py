"""Authorization (grpckit/calls/authz.py): the A43 policy format as gRPC reads it, and each
service's policy enforced on real servers over mutual TLS, both ways."""

import dataclasses
import json
import re
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from api import cheese_pb2, cheese_pb2_grpc, movie_pb2, movie_pb2_grpc, soccer_pb2, soccer_pb2_grpc
from grpckit.calls import authz
from grpckit.calls.authz import Peer, Policy, PolicyError
from grpckit.client.channel import ClientTls
from grpckit.lifecycle.server import Server, running
from tests import echo
from tests.conftest import (
    ROOT,
    Connect,
    cause_of_failed_start,
    client_tls,
    eventually,
    every_service,
    server_settings,
)
from tests.echo import Echo

MARTIAN = "a8034f44-aee4-44cf-b32c-74cf452aaaae"
GET_MOVIE = "/Movie/GetMovieByID"


class Metadata:
    """The one part of a call context that header rules read."""

    def __init__(self, *pairs: tuple[str, str]) -> None:
        self.pairs = pairs

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self.pairs


def client(name: str, *, uris: tuple[str, ...] = ()) -> Peer:
    return Peer(tls=True, uris=uris, dns=(name,), subject=f"CN={name}")


def allows(policy: dict[str, Any], method: str, peer: Peer, context: Any = None) -> bool:
    call: Any = context or Metadata()
    return Policy.parse(json.dumps(policy)).allows(method, peer, call)


# gRFC A43's own example, word for word in meaning.
EXAMPLE = {
    "name": "example-policy",
    "allow_rules": [
        {
            "name": "admin-access",
            "source": {"principals": ["spiffe://foo.com/sa/admin1", "spiffe://foo.com/sa/admin2"]},
            "request": {"paths": ["/pkg.service/*"]},
        },
        {
            "name": "dev-access",
            "source": {"principals": ["*", ""]},
            "request": {
                "paths": ["/pkg.service/foo", "/pkg.service/bar"],
                "headers": [{"key": "dev-path", "values": ["/dev/path/*"]}],
            },
        },
    ],
    "deny_rules": [{"name": "deny-access", "request": {"paths": ["*/secret"]}}],
}


def test_the_a43_example_decides_as_the_proposal_says() -> None:
    admin = client("admin", uris=("spiffe://foo.com/sa/admin1",))
    anyone = client("someone")
    assert allows(EXAMPLE, "/pkg.service/anything", admin)
    assert not allows(EXAMPLE, "/pkg.service/anything", anyone)
    dev = Metadata(("dev-path", "/dev/path/x"))
    assert allows(EXAMPLE, "/pkg.service/foo", anyone, dev)
    assert not allows(EXAMPLE, "/pkg.service/foo", anyone, Metadata(("dev-path", "/prod")))
    assert not allows(EXAMPLE, "/pkg.service/foo", anyone)  # header absent
    # Deny rules come first: not even an admin may call */secret.
    assert not allows(EXAMPLE, "/pkg.service/secret", admin)
    # Without TLS no principal matches, not even "*" or "".
    assert not allows(EXAMPLE, "/pkg.service/foo", Peer(tls=False), dev)
    # TLS without a client certificate matches "" only.
    assert allows(EXAMPLE, "/pkg.service/foo", Peer(tls=True), dev)


def test_deny_rules_beat_allow_rules_and_anything_unmatched_is_denied() -> None:
    policy = {
        "name": "p",
        "allow_rules": [{"name": "all"}],
        "deny_rules": [{"name": "no-monitor", "source": {"principals": ["monitor"]}}],
    }
    assert allows(policy, "/a.B/C", client("client"))
    assert not allows(policy, "/a.B/C", client("monitor"))
    only = {"name": "p", "allow_rules": [{"name": "c", "request": {"paths": ["/a.B/*"]}}]}
    assert allows(only, "/a.B/C", client("x"))
    assert not allows(only, "/a.Bee/C", client("x"))


@pytest.mark.parametrize(
    ("pattern", "value", "matches"),
    [
        ("abc", "abc", True),
        ("abc", "abcd", False),
        ("abc*", "abc", True),
        ("abc*", "abcd", True),
        ("abc*", "xabc", False),
        ("*abc", "xabc", True),
        ("*abc", "abcx", False),
        ("*", "x", True),
    ],
)
def test_patterns_are_exact_prefix_suffix_or_presence(
    pattern: str, value: str, matches: bool
) -> None:
    policy = {"name": "p", "allow_rules": [{"name": "r", "source": {"principals": [pattern]}}]}
    # The subject is matched last, so a peer whose only name is `value` is tested on it.
    peer = Peer(tls=True, subject=value)
    assert allows(policy, "/a.B/C", peer) is matches


def test_principals_are_uri_sans_then_dns_sans_then_the_subject() -> None:
    def rule(principal: str) -> dict[str, Any]:
        return {"name": "p", "allow_rules": [{"name": "r", "source": {"principals": [principal]}}]}

    peer = Peer(tls=True, uris=("spiffe://x/y",), dns=("cheese", "localhost"), subject="CN=c")
    for principal in ("spiffe://x/y", "cheese", "localhost", "CN=c"):
        assert allows(rule(principal), "/a.B/C", peer), principal
    assert not allows(rule("c"), "/a.B/C", peer)
    assert peer.name == "spiffe://x/y"
    assert client("client").name == "client"


def test_a_repeated_header_is_one_value_joined_by_commas() -> None:
    policy = {
        "name": "p",
        "allow_rules": [
            {"name": "r", "request": {"headers": [{"key": "Tier", "values": ["a,b"]}]}}
        ],
    }
    assert allows(policy, "/a.B/C", client("x"), Metadata(("tier", "a"), ("tier", "b")))
    assert not allows(policy, "/a.B/C", client("x"), Metadata(("tier", "a")))


@pytest.mark.parametrize(
    ("text", "cause"),
    [
        ("{", "Expecting"),
        ("[]", "policy: is not an object"),
        ('{"allow_rules": [{"name": "r"}]}', '"name" is not present'),
        ('{"name": "p"}', '"allow_rules" is not present'),
        ('{"name": "p", "allow_rules": []}', '"allow_rules" is empty'),
        ('{"name": "p", "allow_rules": {}}', "allow_rules: is not an array"),
        ('{"name": "p", "allow_rules": [{}]}', 'allow_rules 0: "name" is not present'),
        (
            '{"name": "p", "allow_rules": [{"name": "r"}], "audit_logging_options": {}}',
            'unknown field "audit_logging_options"',
        ),
        ('{"name": "p", "allow_rules": [{"name": "r", "sources": {}}]}', 'unknown field "sources"'),
        (
            '{"name": "p", "allow_rules": [{"name": "r", "source": {"principals": "client"}}]}',
            "allow_rules 0 (r) principals: is not an array",
        ),
        (
            '{"name": "p", "allow_rules": [{"name": "r", "source": {"principals": [1]}}]}',
            "allow_rules 0 (r) principals 0: is not a string",
        ),
        (
            '{"name": "p", "allow_rules": [{"name": "r", "request": {"paths": ["/a*b"]}}]}',
            "'*' only as the whole pattern",
        ),
        (
            '{"name": "p", "allow_rules": [{"name": "r", "request": {"paths": ["*a*"]}}]}',
            "'*' only as the whole pattern",
        ),
        (
            '{"name": "p", "allow_rules": [{"name": "r", "request": {"headers": '
            '[{"key": ":path", "values": ["x"]}]}}]}',
            'unsupported "key" :path',
        ),
        (
            '{"name": "p", "allow_rules": [{"name": "r", "request": {"headers": '
            '[{"key": "grpc-timeout", "values": ["x"]}]}}]}',
            'unsupported "key" grpc-timeout',
        ),
        (
            '{"name": "p", "allow_rules": [{"name": "r", "request": {"headers": '
            '[{"key": "x", "values": []}]}}]}',
            '"values" is not present',
        ),
        ('{"name": "p", "allow_rules": [{"name": "r"}, {"name": "r"}]}', 'two rules are named "r"'),
        ('{"name": "p", "name": "q", "allow_rules": [{"name": "r"}]}', '"name" appears twice'),
    ],
)
def test_a_malformed_policy_is_refused_with_its_cause_named(text: str, cause: str) -> None:
    with pytest.raises(PolicyError, match=re.escape(cause)):
        Policy.parse(text)


def test_the_shipped_policies_are_valid_and_default_deny() -> None:
    for service, business in [
        ("cheese", "/cheesefarm.CheeseService/Order"),
        ("movie", GET_MOVIE),
        ("soccer", "/stream.Soccer/Watch"),
    ]:
        policy = Policy.load(ROOT / service / "authz.json")
        health = "/grpc.health.v1.Health/Check"
        reflection = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
        context: Any = Metadata()
        for method in (business, health, reflection):
            assert policy.allows(method, client("client"), context), (service, method)
        assert policy.allows(health, client("monitor"), context)
        assert policy.allows("/grpc.health.v1.Health/Watch", client("monitor"), context)
        for method in (business, reflection):
            assert not policy.allows(method, client("monitor"), context), (service, method)
        for identity in ("cheese", "movie", "soccer", "localhost", "stranger"):
            for method in (business, health, reflection):
                assert not policy.allows(method, client(identity), context), (identity, method)


# On real servers, over mutual TLS.


def denied(error: pytest.ExceptionInfo[grpc.aio.AioRpcError], identity: str, method: str) -> None:
    assert error.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error.value.details() == f"identity {identity} may not call {method}"


@pytest.fixture
async def services(pki: Path, videos: Path) -> AsyncIterator[dict[str, Server]]:
    async with every_service(pki, videos) as servers:
        yield servers


async def test_client_calls_business_methods_health_and_reflection(
    services: dict[str, Server], pki: Path, connect: Connect
) -> None:
    def channel(name: str) -> grpc.aio.Channel:
        return connect(services[name].port, client_tls(pki))

    cheese = cheese_pb2_grpc.CheeseServiceStub(channel("cheese"))
    await cheese.Order(cheese_pb2.CheeseRequest(type=cheese_pb2.BRIE), timeout=10)
    movie = movie_pb2_grpc.MovieStub(channel("movie"))
    assert (await movie.GetMovieByID(movie_pb2.MovieID(id=MARTIAN), timeout=10)).id == MARTIAN
    soccer = soccer_pb2_grpc.SoccerStub(channel("soccer"))
    frames = soccer.Watch(
        soccer_pb2.Match(id="demo", max_frames=1, encoding=soccer_pb2.JPEG), timeout=10
    )
    assert len([frame async for frame in frames]) == 1
    for name in services:
        health = health_pb2_grpc.HealthStub(channel(name))
        answer = await health.Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
        assert "Movie" in await listed_services(channel("movie"))


async def listed_services(channel: grpc.aio.Channel) -> list[str]:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    async for answer in stub.ServerReflectionInfo(iter([request]), timeout=10):
        return [s.name for s in answer.list_services_response.service]
    return []


async def test_monitor_asks_health_and_nothing_else(
    services: dict[str, Server], pki: Path, connect: Connect
) -> None:
    def channel(name: str) -> grpc.aio.Channel:
        return connect(services[name].port, client_tls(pki, identity="monitor"))

    for name in services:
        health = health_pb2_grpc.HealthStub(channel(name))
        answer = await health.Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
    movie = movie_pb2_grpc.MovieStub(channel("movie"))
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await movie.GetMovieByID(movie_pb2.MovieID(id=MARTIAN), timeout=10)
    denied(error, "monitor", GET_MOVIE)
    # A stream is refused before its first message.
    soccer = soccer_pb2_grpc.SoccerStub(channel("soccer"))
    with pytest.raises(grpc.aio.AioRpcError) as error:
        async for _ in soccer.Watch(soccer_pb2.Match(id="demo", max_frames=1), timeout=10):
            pytest.fail("a frame reached a caller the policy refuses")
    denied(error, "monitor", "/stream.Soccer/Watch")
    # Nothing sent: a request written after the refusal fails on the client's side instead.
    reflection = reflection_pb2_grpc.ServerReflectionStub(channel("cheese"))
    call = reflection.ServerReflectionInfo(timeout=10)
    assert await call.code() == grpc.StatusCode.PERMISSION_DENIED
    method = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
    assert await call.details() == f"identity monitor may not call {method}"


async def test_a_server_certificate_cannot_call_another_service(
    services: dict[str, Server], pki: Path, connect: Connect
) -> None:
    """The PKI issues server certificates for serving only, so the handshake refuses the
    cheese server's key as a client's (this is what let it call movie before)."""
    channel = connect(
        services["movie"].port, client_tls(pki, identity="cheese"), watch_health=False
    )
    movie = movie_pb2_grpc.MovieStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await movie.GetMovieByID(movie_pb2.MovieID(id=MARTIAN), timeout=10, wait_for_ready=False)
    assert error.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_a_server_certificate_that_can_still_be_a_client_gets_nothing_from_the_policy(
    services: dict[str, Server], pki: Path, connect: Connect, tmp_path: Path
) -> None:
    """A PKI from before (server certificates with clientAuth, as a bring-your-own PKI may
    still have): the TLS layer lets it through and the policy refuses it."""
    legacy = legacy_server_certificate(pki, "cheese", tmp_path)
    channel = connect(services["movie"].port, legacy, watch_health=False)
    movie = movie_pb2_grpc.MovieStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await movie.GetMovieByID(movie_pb2.MovieID(id=MARTIAN), timeout=10)
    denied(error, "cheese", GET_MOVIE)
    health = health_pb2_grpc.HealthStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await health.Check(health_pb2.HealthCheckRequest(), timeout=10)
    denied(error, "cheese", "/grpc.health.v1.Health/Check")


def legacy_server_certificate(pki: Path, name: str, folder: Path) -> ClientTls:
    """`name`'s key, certified by `pki`'s CA for serverAuth and clientAuth both."""
    extensions = folder / "ext.cnf"
    extensions.write_text(
        f"extendedKeyUsage = serverAuth, clientAuth\nsubjectAltName = DNS:{name}, DNS:localhost\n"
    )
    request, certificate = folder / f"{name}.csr", folder / f"{name}.crt"
    subprocess.run(
        ["openssl", "req", "-new", "-key", str(pki / f"{name}.key"), "-subj", f"/CN={name}",
         "-out", str(request)],
        check=True, capture_output=True,
    )  # fmt: skip
    subprocess.run(
        ["openssl", "x509", "-req", "-in", str(request), "-CA", str(pki / "ca.crt"),
         "-CAkey", str(pki / "ca.key"), "-days", "1", "-extfile", str(extensions),
         "-out", str(certificate)],
        check=True, capture_output=True,
    )  # fmt: skip
    return dataclasses.replace(client_tls(pki), cert=certificate, key=pki / f"{name}.key")


def write_policy(path: Path, policy: dict[str, Any]) -> Path:
    staged = path.with_suffix(".tmp")
    staged.write_text(json.dumps(policy))
    staged.replace(path)
    return path


async def test_deny_rules_beat_allow_rules_on_a_server(
    pki: Path, connect: Connect, tmp_path: Path
) -> None:
    policy = write_policy(
        tmp_path / "policy.json",
        {
            "name": "echo",
            "allow_rules": [{"name": "client-calls-all", "source": {"principals": ["client"]}}],
            "deny_rules": [{"name": "no-echo", "request": {"paths": [echo.ECHO]}}],
        },
    )
    settings = server_settings(pki, "cheese", policy=policy)
    async with running(settings, [Echo()]) as server:
        channel = connect(server.port, client_tls(pki))
        assert await echo.join(channel)(iter(["a", "b"]), timeout=10) == "a b"
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await echo.echo(channel)("hi", timeout=10)
        denied(error, "client", echo.ECHO)


async def test_a_changed_policy_applies_without_a_restart_and_a_bad_one_is_ignored(
    pki: Path, connect: Connect, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(authz, "RELOAD_SECONDS", 0.02)
    path = write_policy(tmp_path / "policy.json", json.loads(echo.POLICY.read_text()))
    async with running(server_settings(pki, "cheese", policy=path), [Echo()]) as server:
        call = echo.echo(connect(server.port, client_tls(pki)))
        assert await call("hi", timeout=10) == "hi"
        write_policy(
            path,
            {
                "name": "echo",
                "allow_rules": [{"name": "health", "request": {"paths": ["/grpc.health.v1*"]}}],
            },
        )

        async def refused() -> None:
            try:
                await call("hi", timeout=10)
            except grpc.aio.AioRpcError as error:
                assert error.details() == f"identity client may not call {echo.ECHO}"
            else:
                raise AssertionError("still allowed")

        await eventually(refused)
        path.write_text("{not json")
        with pytest.raises(grpc.aio.AioRpcError):  # the last good policy still decides
            await call("hi", timeout=10)
        write_policy(path, json.loads(echo.POLICY.read_text()))

        async def allowed() -> None:
            assert await call("hi", timeout=10) == "hi"

        await eventually(allowed)


async def test_a_malformed_policy_fails_start_up_with_its_cause(pki: Path, tmp_path: Path) -> None:
    bad = tmp_path / "policy.json"
    bad.write_text('{"name": "cheese", "allow_rules": [{"name": "r", "sources": {}}]}')
    cause = await cause_of_failed_start(pki, "cheese", "--authz-policy", str(bad))
    assert cause == (
        f'bad authorization policy {bad}: allow_rules 0: unknown field "sources" (not in gRFC A43)'
    )
    missing = tmp_path / "missing.json"
    cause = await cause_of_failed_start(pki, "cheese", "--authz-policy", str(missing))
    assert cause == f"cannot read authorization policy {missing}: No such file or directory"
