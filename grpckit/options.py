"""Channel and server options shared by both ends of every connection.

gRPC's default message limit is 4 MiB, which a single raw 1080p frame (6.2 MB) already
exceeds. Both ends must raise it: the sender's send limit and the receiver's receive
limit. Requests stay small, so servers keep gRPC's 4 MiB default for what they receive
and a client that sends more gets RESOURCE_EXHAUSTED before any handler runs.
"""

import json
from typing import Final

MiB: Final = 1024 * 1024
# Fits one raw 4K BGR frame (3840 x 2160 x 3 = 24.9 MB) with room to spare.
MAX_RESPONSE_BYTES: Final = 32 * MiB
MAX_REQUEST_BYTES: Final = 4 * MiB

ChannelOptions = list[tuple[str, int | str]]

# Keepalive keeps idle video streams alive through NATs and notices dead peers. A client
# pings no more often than the server permits, or the server answers GOAWAY too_many_pings.
SERVER_OPTIONS: Final[ChannelOptions] = [
    ("grpc.max_send_message_length", MAX_RESPONSE_BYTES),
    ("grpc.max_receive_message_length", MAX_REQUEST_BYTES),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ("grpc.http2.max_pings_without_data", 0),
]


def server_options(
    max_connection_age_seconds: float, handshake_timeout_seconds: float = 10.0
) -> ChannelOptions:
    """SERVER_OPTIONS plus a maximum connection age and a handshake deadline.

    A connection that has not finished its TLS handshake within the deadline is closed
    (gRPC's own default is 120 s): idle or slow connections, which hold a socket and a
    handshake's memory each, cannot pile up by the thousand.

    A client re-resolves its target's DNS name when a connection ends, and only then finds
    replicas that came up since (`docker compose up --scale`, a Kubernetes rollout). The age
    makes every connection end now and then with a GOAWAY: new calls move to a fresh
    connection while calls in flight finish on the old one (no grace limit is set, so a
    long video stream is never cut for age).
    """
    return [
        *SERVER_OPTIONS,
        ("grpc.max_connection_age_ms", int(max_connection_age_seconds * 1000)),
        ("grpc.server_handshake_timeout_ms", max(1, int(handshake_timeout_seconds * 1000))),
    ]


# Retry only UNAVAILABLE (the call never reached a handler, or the server is restarting)
# and wait for the channel to be ready instead of failing fast while a server restarts.
# round_robin over every address the name resolves to, and client-side health checking:
# a server that reports NOT_SERVING (it is shutting down) gets no new calls, so none
# reaches it in the moment it stops. Clients in other languages should do the same.
SERVICE_CONFIG: Final = json.dumps(
    {
        "loadBalancingConfig": [{"round_robin": {}}],
        "healthCheckConfig": {"serviceName": ""},
        "methodConfig": [
            {
                "name": [{}],
                "waitForReady": True,
                "retryPolicy": {
                    "maxAttempts": 5,
                    "initialBackoff": "0.1s",
                    "maxBackoff": "2s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ],
    }
)

CHANNEL_OPTIONS: Final[ChannelOptions] = [
    ("grpc.max_receive_message_length", MAX_RESPONSE_BYTES),
    ("grpc.max_send_message_length", MAX_REQUEST_BYTES),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.enable_retries", 1),
    ("grpc.service_config", SERVICE_CONFIG),
]
