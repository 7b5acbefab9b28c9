"""A gRPC health probe for container healthchecks: exit 0 only when the server is SERVING.

It reads the server's own settings and dials it on localhost. With HEALTH_PORT set it asks
the plaintext, health-only maintenance port, so a healthcheck needs no key inside the
container at all. Otherwise it asks the main port over mutual TLS as a monitor identity
(PROBE_TLS_CERT, PROBE_TLS_KEY; the policy lets `monitor` ask health and nothing else): a
server's own certificate is for serving only and cannot be presented as a client's.
"""

import asyncio
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from grpckit.client.channel import ClientTls, open_channel
from grpckit.config import ServerSettings
from grpckit.settings import UsageError, parse, setting, usage_error

PROG = "python -m grpckit.client.probe"


@dataclass(frozen=True)
class ProbeSettings:
    service: str = setting("", None, "health service name; empty: the server as a whole")
    timeout: float = setting(3.0, None, "seconds to wait for the answer", minimum=0)
    cert: Path = setting(
        Path("certs/monitor.crt"), "PROBE_TLS_CERT", "client certificate, without HEALTH_PORT"
    )
    key: Path = setting(Path("certs/monitor.key"), "PROBE_TLS_KEY", "its private key")


async def probe(server: ServerSettings, own: ProbeSettings) -> str:
    files = server.tls
    port, tls = server.port, None
    if server.health_port is not None:
        port = server.health_port
    elif files is not None:
        tls = ClientTls(files.ca, own.cert, own.key)
    async with open_channel(f"localhost:{port}", tls, watch_health=False) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        response = await stub.Check(
            health_pb2.HealthCheckRequest(service=own.service),
            timeout=own.timeout,
            wait_for_ready=False,
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
        status = asyncio.run(probe(server, own))
    except grpc.aio.AioRpcError as error:
        print(f"unhealthy: {error.code().name}: {error.details()}", file=sys.stderr)
        return 1
    except OSError as error:
        print(f"unhealthy: cannot read the probe's TLS files: {error}", file=sys.stderr)
        return 1
    print(status)
    return 0 if status == "SERVING" else 1


if __name__ == "__main__":
    raise SystemExit(main())
