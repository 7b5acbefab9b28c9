"""The caller behind the edge (grpckit/calls/callers.py): a server honours Envoy's
x-forwarded-client-cert only from the edge's identity, and then authorizes and logs the
client it names; from any other peer the header is ignored. Real servers on loopback, over
mutual TLS, with the edge's certificate from the test PKI standing in for the edge."""

import asyncio
import dataclasses
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from api import movie_pb2, movie_pb2_grpc, soccer_pb2, soccer_pb2_grpc
from grpckit.calls.authz import Peer
from grpckit.calls.callers import XFCC, forwarded_peer
from grpckit.lifecycle.server import Server, running
from movie.server import DEFAULT_CATALOGUE, Movies, MovieSettings
from soccer.server import Soccer, SoccerSettings
from tests.conftest import Connect, client_tls, server_settings

MARTIAN = "a8034f44-aee4-44cf-b32c-74cf452aaaae"
GET_MOVIE = "/Movie/GetMovieByID"
# What Envoy sends with set_current_client_cert_details {subject, uri, dns} for client.crt.
CLIENT = 'Hash=9a1f;Subject="CN=client";URI=;DNS=client'
MONITOR = 'Hash=77c0;Subject="CN=monitor";URI=;DNS=monitor'


def test_the_last_element_names_the_client_the_nearest_proxy_verified() -> None:
    assert forwarded_peer(CLIENT, "edge") == Peer(
        tls=True, dns=("client",), subject="CN=client", via="edge"
    )
    two = f"{MONITOR},By=spiffe://x;{CLIENT}"
    assert forwarded_peer(two, "edge").name == "client"
    quoted = 'Subject="CN=a\\"b,O=c;d";URI=spiffe://example.org/ns/x;DNS=a;DNS=b'
    peer = forwarded_peer(quoted, "edge")
    assert (peer.subject, peer.uris, peer.dns) == (
        'CN=a"b,O=c;d',
        ("spiffe://example.org/ns/x",),
        ("a", "b"),
    )
    assert peer.name == "spiffe://example.org/ns/x"


@pytest.mark.parametrize("header", ["", ",", "Hash=1", 'Subject="";URI=;DNS=', "garbage"])
def test_a_header_that_names_nobody_gives_no_identity(header: str) -> None:
    peer = forwarded_peer(header, "edge")
    assert (peer.uris, peer.dns, peer.subject, peer.via) == ((), (), "", "edge")


@pytest.fixture
async def movie(pki: Path) -> AsyncIterator[Server]:
    settings = dataclasses.replace(server_settings(pki, "movie"), forwarded_client_cert_from="edge")
    async with running(settings, [Movies(MovieSettings(DEFAULT_CATALOGUE, 0))]) as server:
        yield server


async def get_movie(channel: grpc.aio.Channel, xfcc: str | None) -> movie_pb2.MovieData:
    metadata = None if xfcc is None else ((XFCC, xfcc),)
    stub = movie_pb2_grpc.MovieStub(channel)
    return await stub.GetMovieByID(movie_pb2.MovieID(id=MARTIAN), metadata=metadata, timeout=10)


def access_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [r.__dict__ for r in caplog.records if r.name == "grpckit.access"]


async def test_through_the_edge_the_forwarded_client_is_authorized_and_logged(
    movie: Server, pki: Path, connect: Connect, caplog: pytest.LogCaptureFixture
) -> None:
    edge = connect(movie.port, client_tls(pki, identity="edge"))
    with caplog.at_level(logging.INFO, logger="grpckit.access"):
        assert (await get_movie(edge, CLIENT)).id == MARTIAN
    [line] = [line for line in access_lines(caplog) if line["method"] == GET_MOVIE]
    assert (line["client"], line["via"], line["code"]) == ("client", "edge", "OK")


async def test_the_forwarded_client_has_its_own_rights_not_the_edges(
    movie: Server, pki: Path, connect: Connect
) -> None:
    edge = connect(movie.port, client_tls(pki, identity="edge"))
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await get_movie(edge, MONITOR)
    assert error.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error.value.details() == f"identity monitor may not call {GET_MOVIE}"
    # A header that names nobody is no identity at all, not the edge's.
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await get_movie(edge, "Hash=1")
    assert error.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_the_edge_alone_may_ask_health_and_nothing_else(
    movie: Server, pki: Path, connect: Connect
) -> None:
    edge = connect(movie.port, client_tls(pki, identity="edge"))
    health = health_pb2_grpc.HealthStub(edge)
    answer = await health.Check(health_pb2.HealthCheckRequest(service="Movie"), timeout=10)
    assert answer.status == health_pb2.HealthCheckResponse.SERVING
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await get_movie(edge, None)
    assert error.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error.value.details() == f"identity edge may not call {GET_MOVIE}"


async def test_a_header_from_any_other_peer_is_ignored(
    movie: Server, pki: Path, connect: Connect, caplog: pytest.LogCaptureFixture
) -> None:
    # monitor may ask health only: claiming to be client gets it nothing.
    monitor = connect(movie.port, client_tls(pki, identity="monitor"))
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await get_movie(monitor, CLIENT)
    assert error.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error.value.details() == f"identity monitor may not call {GET_MOVIE}"
    # client claiming to be monitor is still client, in the policy and in the log.
    client = connect(movie.port, client_tls(pki))
    with caplog.at_level(logging.INFO, logger="grpckit.access"):
        assert (await get_movie(client, MONITOR)).id == MARTIAN
    [line] = [line for line in access_lines(caplog) if line["method"] == GET_MOVIE]
    assert line["client"] == "client"
    assert "via" not in line


async def test_a_server_that_trusts_no_proxy_ignores_the_header_from_the_edge_too(
    pki: Path, connect: Connect
) -> None:
    async with running(
        server_settings(pki, "movie"), [Movies(MovieSettings(DEFAULT_CATALOGUE, 0))]
    ) as server:
        edge = connect(server.port, client_tls(pki, identity="edge"))
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await get_movie(edge, CLIENT)
    assert error.value.details() == f"identity edge may not call {GET_MOVIE}"


async def test_soccer_charges_a_forwarded_viewer_to_its_own_client(
    pki: Path, videos: Path, connect: Connect
) -> None:
    """Decoders are per client: through the edge, per forwarded client, not per edge."""
    settings = dataclasses.replace(
        server_settings(pki, "soccer"), forwarded_client_cert_from="edge"
    )
    soccer = Soccer(SoccerSettings(videos))
    async with running(settings, [soccer]) as server:
        edge = soccer_pb2_grpc.SoccerStub(connect(server.port, client_tls(pki, identity="edge")))
        match = soccer_pb2.Match(id="demo", max_frames=2, encoding=soccer_pb2.JPEG, unpaced=True)
        call = edge.Watch(match, metadata=((XFCC, CLIENT),), timeout=10)
        frame = await call.read()
        assert isinstance(frame, soccer_pb2.Video) and frame.frame_index == 0
        assert set(soccer.hubs.decoders.per_client.in_use) == {"client"}
        call.cancel()


async def test_health_asked_through_the_edge_of_a_draining_replica_is_sent_elsewhere(
    pki: Path, connect: Connect
) -> None:
    """A draining replica tells the edge's own check NOT_SERVING, but a check forwarded
    through the edge asks about the service, which other replicas still serve: UNAVAILABLE,
    which the edge retries elsewhere, and a forwarded watch ends so that it is asked again."""
    settings = dataclasses.replace(
        server_settings(pki, "movie"), forwarded_client_cert_from="edge", drain=3.0, grace=3.0
    )
    server = Server(settings, [Movies(MovieSettings(DEFAULT_CATALOGUE, 0))])
    await server.start()
    edge = connect(server.port, client_tls(pki, identity="edge"), watch_health=False)
    health = health_pb2_grpc.HealthStub(edge)
    request = health_pb2.HealthCheckRequest(service="Movie")
    forwarded = ((XFCC, CLIENT),)
    watch = health.Watch(request, metadata=forwarded, timeout=30)
    assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
    stopping = asyncio.ensure_future(server.stop())
    try:
        with pytest.raises(grpc.aio.AioRpcError) as ended:
            while True:
                await watch.read()
        assert ended.value.code() == grpc.StatusCode.UNAVAILABLE
        answer = await health.Check(request, timeout=10)
        assert answer.status == health_pb2.HealthCheckResponse.NOT_SERVING
        for again in (health.Check(request, metadata=forwarded, timeout=10),
                      health.Watch(request, metadata=forwarded, timeout=10).read()):  # fmt: skip
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await again
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "ask again through the edge" in str(refused.value.details())
    finally:
        await stopping
