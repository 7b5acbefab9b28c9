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

# Keepalive: how long a dead peer goes unnoticed. A server pings each client every
# SERVER_KEEPALIVE_SECONDS and closes the connection when no answer comes within as much
# again: a viewer whose host vanished without closing (no FIN, no RST) has its streams
# cancelled, and their hub places and frame buffers given back, within twice that (10 s;
# tests/test_soccer.py measures it).
# Clients ping every 2 s (CHANNEL_OPTIONS); the servers let them, even on a connection
# that carries no data (a health watch): a server sent pings more often than
# min_ping_interval_without_data_ms answers GOAWAY too_many_pings.
SERVER_KEEPALIVE_SECONDS: Final = 5
SERVER_OPTIONS: Final[ChannelOptions] = [
    ("grpc.max_send_message_length", MAX_RESPONSE_BYTES),
    ("grpc.max_receive_message_length", MAX_REQUEST_BYTES),
    ("grpc.keepalive_time_ms", SERVER_KEEPALIVE_SECONDS * 1000),
    ("grpc.keepalive_timeout_ms", SERVER_KEEPALIVE_SECONDS * 1000),
    # gRPC 1.85 waits this long for any ping's answer, keepalive's too (60 s by default,
    # whatever keepalive_timeout_ms says).
    ("grpc.http2.ping_timeout_ms", SERVER_KEEPALIVE_SECONDS * 1000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 1_000),
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


# Every channel's service config (gRFC A2); clients in other languages should use the same
# (docs/failures-and-stress.md).
#
# round_robin over every address the name resolves to, with client-side health checking:
# a server that reports NOT_SERVING (it is shutting down) gets no new calls. Around it,
# outlier detection (gRFC A50): every half second, a replica that failed at least 20% of
# at least 5 calls in that time (a frozen or blackholed one fails them all) gets no calls
# for 10 s, then twice as long each time it is ejected again, up to 60 s; never more than
# a third of the replicas at once, and none while there are fewer than two. Until it is
# ejected, every caller's attempts keep landing on it (and each retry again with one
# chance in three): the sooner it goes, the fewer calls use up their deadline there.
#
# Every method waits for a ready server and retries UNAVAILABLE (the call never reached a
# handler, or the server is restarting). The read-only methods (READ_ONLY_METHODS) also
# give up on an attempt that has had no answer in 0.25 s and send it again, to whichever
# replica round_robin picks next (gRFC A6 perAttemptRecvTimeout): a frozen replica then
# costs a call a quarter of a second, not its deadline. gRPC's C core (Python, C++) has no
# hedging, so this is how the project's clients get around a replica that answers nothing.
# At most 5 attempts: a read-only call whose every attempt takes longer than 0.25 s fails
# after 1.25 s (CANCELLED). retryThrottling stops retries while failures outnumber a tenth
# of successes (tokens: -1 per failed attempt, +0.1 per success, retries only above
# half of 100), so they never multiply the load of a service in trouble.
READ_ONLY_METHODS: Final = [
    {"service": "Movie"},
    {"service": "grpc.health.v1.Health", "method": "Check"},
]
PER_ATTEMPT_SECONDS: Final = 0.25

SERVICE_CONFIG: Final = json.dumps(
    {
        "loadBalancingConfig": [
            {
                "outlier_detection_experimental": {
                    "interval": "0.5s",
                    "baseEjectionTime": "10s",
                    "maxEjectionTime": "60s",
                    "maxEjectionPercent": 33,
                    "failurePercentageEjection": {
                        "threshold": 20,
                        "enforcementPercentage": 100,
                        "minimumHosts": 2,
                        "requestVolume": 5,
                    },
                    "childPolicy": [{"round_robin": {}}],
                }
            }
        ],
        "healthCheckConfig": {"serviceName": ""},
        "retryThrottling": {"maxTokens": 100, "tokenRatio": 0.1},
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
            },
            {
                "name": READ_ONLY_METHODS,
                "waitForReady": True,
                "retryPolicy": {
                    "maxAttempts": 5,
                    "initialBackoff": "0.01s",
                    "maxBackoff": "0.1s",
                    "backoffMultiplier": 2,
                    "perAttemptRecvTimeout": f"{PER_ATTEMPT_SECONDS}s",
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            },
        ],
    }
)

CHANNEL_OPTIONS: Final[ChannelOptions] = [
    ("grpc.max_receive_message_length", MAX_RESPONSE_BYTES),
    ("grpc.max_send_message_length", MAX_REQUEST_BYTES),
    # A ping every 2 s, on every connection, even one that carries no data (0: no limit
    # to such pings): a connection to a frozen or unreachable server ends within 5 s; a
    # busy server has 3 s to answer.
    ("grpc.keepalive_time_ms", 2_000),
    ("grpc.keepalive_timeout_ms", 3_000),
    ("grpc.http2.ping_timeout_ms", 3_000),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.enable_retries", 1),
    # Without it the C core ignores perAttemptRecvTimeout (it has no hedging, whatever
    # the name says).
    ("grpc.experimental.enable_hedging", 1),
    ("grpc.service_config", SERVICE_CONFIG),
    # A client finds new replicas only by resolving its target again, which gRPC allows once
    # per 30 s by default: on Kubernetes, when a rollout had replaced every pod a client knew
    # (one replica, or the last old one of three going), its calls waited up to 30 s for
    # the new pods and failed at their deadline. Once a second.
    ("grpc.dns_min_time_between_resolutions_ms", 1_000),
]
