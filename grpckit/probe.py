"""A gRPC health probe for container healthchecks: exit 0 only when the server is SERVING.

It reads the server's own settings (PORT, TLS_CERT, TLS_KEY, TLS_CA, INSECURE) and dials it
on localhost over mutual TLS, presenting the server's certificate as its client identity,
so a healthcheck needs no extra key inside the container.
"""

import asyncio
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from grpckit.channel import ClientTls, open_channel
from grpckit.config import ServerSettings
from grpckit.settings import UsageError, parse, setting, usage_error

PROG = "python -m grpckit.probe"


@dataclass(frozen=True)
class ProbeSettings:
    service: str = setting("", None, "health service name; empty: the server as a whole")
    timeout: float = setting(3.0, None, "seconds to wait for the answer", minimum=0)


async def probe(server: ServerSettings, service: str, deadline: float) -> str:
    files = server.tls
    tls = None if files is None else ClientTls(files.ca, files.cert, files.key)
    async with open_channel(f"localhost:{server.port}", tls, watch_health=False) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        response = await stub.Check(
            health_pb2.HealthCheckRequest(service=service), timeout=deadline, wait_for_ready=False
        )
    name: str = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    return name


def main(argv: Sequence[str] | None = None) -> int:
    try:
        server, own = parse(
            [ServerSettings, ProbeSettings], prog=PROG, description=__doc__ or "", argv=argv
        )
    except UsageError as error:
        print(usage_error(PROG, error), file=sys.stderr)
        return 2
    try:
        status = asyncio.run(probe(server, own.service, own.timeout))
    except grpc.aio.AioRpcError as error:
        print(f"unhealthy: {error.code().name}: {error.details()}", file=sys.stderr)
        return 1
    print(status)
    return 0 if status == "SERVING" else 1


if __name__ == "__main__":
    raise SystemExit(main())
