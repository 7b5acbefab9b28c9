"""A gRPC health probe for container healthchecks: exit 0 only when the server is SERVING.

It reads the server's own settings (PORT, TLS_CERT, TLS_KEY, TLS_CA, INSECURE) and dials it
on localhost over mutual TLS, presenting the server's certificate as its client identity,
so a healthcheck needs no extra key inside the container.
"""

import asyncio
import sys
from collections.abc import Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from grpckit.channel import ClientTls, open_channel
from grpckit.config import ConfigParser, ServerConfig


async def probe(config: ServerConfig, service: str, deadline: float) -> str:
    tls = None if config.tls is None else ClientTls(config.tls.ca, config.tls.cert, config.tls.key)
    async with open_channel(f"localhost:{config.port}", tls, watch_health=False) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        response = await stub.Check(
            health_pb2.HealthCheckRequest(service=service), timeout=deadline, wait_for_ready=False
        )
    name: str = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    return name


def main(argv: Sequence[str] | None = None) -> int:
    parser = ConfigParser("grpckit.probe", 0, __doc__ or "")
    parser.parser.add_argument("--service", default="", help="health service name; '' = server")
    parser.parser.add_argument("--timeout", type=float, default=3.0, help="seconds")
    config, args = parser.parse(argv)
    try:
        status = asyncio.run(probe(config, args.service, args.timeout))
    except grpc.aio.AioRpcError as error:
        print(f"unhealthy: {error.code().name}: {error.details()}", file=sys.stderr)
        return 1
    print(status)
    return 0 if status == "SERVING" else 1


if __name__ == "__main__":
    raise SystemExit(main())
