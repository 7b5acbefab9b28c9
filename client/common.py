"""What every command shares: where the services are, how to talk to them, how to print."""

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import grpc
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc

from grpckit.calls.served_by import SERVED_BY
from grpckit.client.channel import ClientTls

PORTS: Final = {"cheese": 50051, "movie": 50052, "soccer": 50053}
DEFAULT_TIMEOUT: Final = 10.0


class ClientError(Exception):
    """An expected failure: main prints it as one line and exits, never a traceback."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def service_target(service: str) -> str:
    """CHEESE_TARGET and friends let compose point each service at its own container."""
    return os.environ.get(f"{service.upper()}_TARGET") or f"localhost:{PORTS[service]}"


@dataclass(frozen=True)
class Settings:
    # --target or GRPC_TARGET: one address for whichever service the command calls.
    target: str | None
    tls: ClientTls | None
    # Only what was asked for; None lets a watch last as long as the video.
    timeout: float | None

    def target_for(self, service: str) -> str:
        return self.target or service_target(service)

    @property
    def deadline(self) -> float:
        """Short calls always get a deadline: with wait-for-ready they never fail fast."""
        return DEFAULT_TIMEOUT if self.timeout is None else self.timeout


def message_dict(message: Message) -> dict[str, Any]:
    # Defaults included, so a BRIE cheese aged 0 still shows both fields to a script.
    return MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


def emit(record: Mapping[str, Any]) -> None:
    # Flushed per line so a pipe sees each result as it arrives, not when the stream ends.
    print(json.dumps(record), flush=True)


async def health_status(channel: grpc.aio.Channel, service: str, deadline: float) -> str:
    """The serving status name of `service` ("" is the whole server)."""
    stub = health_pb2_grpc.HealthStub(channel)
    request = health_pb2.HealthCheckRequest(service=service)
    response = await stub.Check(request, timeout=deadline)
    name: str = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    return name


def served_by(metadata: Any) -> str:
    """The replica a response names (see grpckit/calls/served_by.py); "unknown" from others."""
    for key, value in metadata or ():
        if key == SERVED_BY:
            return str(value)
    return "unknown"
