"""Server reflection v1 and v1alpha on the real services (ports 0, mutual TLS): a client
that speaks v1 alone lists and describes every service, with the descriptors v1alpha gives."""

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection_pb2 as v1alpha_pb2
from grpc_reflection.v1alpha import reflection_pb2_grpc as v1alpha_grpc

from api.grpc.reflection.v1 import reflection_pb2 as v1_pb2
from api.grpc.reflection.v1 import reflection_pb2_grpc as v1_grpc
from grpckit.lifecycle.server import Server
from tests.conftest import Connect, client_tls, every_service

EXPECTED = {
    "cheese": {"cheesefarm.CheeseService"},
    "movie": {"Movie"},
    "soccer": {"stream.Soccer"},
}
RUNTIME = {
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
}


@pytest.fixture
async def servers(pki: Path, videos: Path) -> AsyncIterator[dict[str, Server]]:
    async with every_service(pki, videos) as servers:
        yield servers


async def ask_v1(
    channel: grpc.aio.Channel, *requests: v1_pb2.ServerReflectionRequest
) -> list[v1_pb2.ServerReflectionResponse]:
    """Every request on one v1 stream, as a v1-only client sends them (the stream is bidi:
    one answer per request, in order)."""
    stub = v1_grpc.ServerReflectionStub(channel)
    answers = [a async for a in stub.ServerReflectionInfo(iter(requests), timeout=10)]
    assert len(answers) == len(requests)
    return answers


async def ask_v1alpha(
    channel: grpc.aio.Channel, *requests: v1alpha_pb2.ServerReflectionRequest
) -> list[v1alpha_pb2.ServerReflectionResponse]:
    stub = v1alpha_grpc.ServerReflectionStub(channel)
    return [a async for a in stub.ServerReflectionInfo(iter(requests), timeout=10)]


def describe(
    answer: v1_pb2.ServerReflectionResponse, service: str
) -> descriptor_pb2.ServiceDescriptorProto:
    """The service as a client rebuilds it from the files the answer carries (each with its
    dependencies), in a pool of its own: nothing of the test's own generated code helps."""
    assert answer.WhichOneof("message_response") == "file_descriptor_response", answer
    files = [
        descriptor_pb2.FileDescriptorProto.FromString(blob)
        for blob in answer.file_descriptor_response.file_descriptor_proto
    ]
    pool = descriptor_pool.DescriptorPool()
    pending = {f.name: f for f in files}
    while pending:  # dependencies first, whatever order they came in
        ready = [f for f in pending.values() if all(d not in pending for d in f.dependency)]
        assert ready, f"files depend on files not sent: {sorted(pending)}"
        for f in ready:
            pool.Add(f)
            del pending[f.name]
    found = descriptor_pb2.ServiceDescriptorProto()
    pool.FindServiceByName(service).CopyToProto(found)
    return found


async def test_a_v1_only_client_lists_and_describes_every_service(
    servers: dict[str, Server], connect: Connect, pki: Path
) -> None:
    for name, server in servers.items():
        channel = connect(server.port, client_tls(pki))
        (listing,) = await ask_v1(channel, v1_pb2.ServerReflectionRequest(list_services=""))
        listed = {s.name for s in listing.list_services_response.service}
        assert listed == EXPECTED[name] | RUNTIME, name
        requests = [
            v1_pb2.ServerReflectionRequest(file_containing_symbol=s) for s in sorted(listed)
        ]
        answers = await ask_v1(channel, *requests)
        for service, answer in zip(sorted(listed), answers, strict=True):
            described = describe(answer, service)
            # What the server's own code registers: the same methods, types and shapes.
            expected = descriptor_pb2.ServiceDescriptorProto()
            descriptor_pool.Default().FindServiceByName(service).CopyToProto(expected)
            assert described == expected, service
            assert described.method, service


async def test_v1_and_v1alpha_answer_the_same_bytes(
    servers: dict[str, Server], connect: Connect, pki: Path
) -> None:
    channel = connect(servers["movie"].port, client_tls(pki))
    asks = [
        {"list_services": ""},
        {"file_containing_symbol": "Movie"},
        {"file_containing_symbol": "Movie.GetListMovies"},
        {"file_by_filename": "api/movie.proto"},
        {"file_containing_symbol": "no.such.Service"},
    ]
    v1 = await ask_v1(channel, *(v1_pb2.ServerReflectionRequest(**a) for a in asks))  # type: ignore[arg-type]
    alpha = await ask_v1alpha(channel, *(v1alpha_pb2.ServerReflectionRequest(**a) for a in asks))
    assert [a.SerializeToString() for a in v1] == [a.SerializeToString() for a in alpha]
    # The unknown symbol is an error inside the stream, as the protocol says, not a status.
    assert v1[-1].error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]
    assert v1[-1].original_request.file_containing_symbol == "no.such.Service"


async def test_v1_is_refused_to_an_identity_the_policy_does_not_allow(
    servers: dict[str, Server], connect: Connect, pki: Path
) -> None:
    channel = connect(servers["cheese"].port, client_tls(pki, identity="monitor"))
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await ask_v1(channel, v1_pb2.ServerReflectionRequest(list_services=""))
    assert error.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo" in str(error.value.details())
