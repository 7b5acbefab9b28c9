"""The settings every server has, whatever its services (grpckit/settings.py reads them)."""

import enum
from dataclasses import dataclass
from pathlib import Path

from grpckit.settings import setting


class AccessLog(enum.StrEnum):
    ALL = "all"
    ERRORS = "errors"  # calls that did not end OK
    OFF = "off"


class EventLoop(enum.StrEnum):
    UVLOOP = "uvloop"
    ASYNCIO = "asyncio"


class GrpcThreadPolicy(enum.StrEnum):
    """Linux's scheduling policy for gRPC's own threads (grpckit/lifecycle/scheduling.py)."""

    BATCH = "batch"
    NORMAL = "normal"


class LogLevel(enum.StrEnum):
    DEBUG = "DEBUG"
    INFO = "INFO"
    WARNING = "WARNING"
    ERROR = "ERROR"


class TraceSampler(enum.StrEnum):
    """OpenTelemetry's standard sampler names (OTEL_TRACES_SAMPLER), those the SDK has."""

    ALWAYS_ON = "always_on"
    ALWAYS_OFF = "always_off"
    TRACEIDRATIO = "traceidratio"
    PARENTBASED_ALWAYS_ON = "parentbased_always_on"
    PARENTBASED_ALWAYS_OFF = "parentbased_always_off"
    PARENTBASED_TRACEIDRATIO = "parentbased_traceidratio"


@dataclass(frozen=True)
class TraceSettings:
    """Tracing (grpckit/telemetry/tracing.py), for servers and the client alike: OpenTelemetry's own
    variables, read from the environment only (no flags: every OpenTelemetry SDK reads
    them so, and an operator sets them once for the whole stack)."""

    endpoint: str | None = setting(
        None,
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTLP/gRPC collector for traces (http:// plaintext, https:// TLS); empty: no tracing",
    )
    # A caller's decision stands; of the calls that come with none, one in a hundred is
    # traced: tracing every call costs a unary server about 30 % of its calls/s
    # (docs/observability.md).
    sampler: TraceSampler = setting(
        TraceSampler.PARENTBASED_TRACEIDRATIO, "OTEL_TRACES_SAMPLER", "which calls are traced"
    )
    sampler_arg: float = setting(
        0.01,
        "OTEL_TRACES_SAMPLER_ARG",
        "the ratio of traces kept by the *traceidratio samplers",
        minimum=0,
        maximum=1,
    )


@dataclass(frozen=True)
class TlsFiles:
    cert: Path
    key: Path
    ca: Path


@dataclass(frozen=True)
class ServerSettings:
    host: str = setting("0.0.0.0", "HOST", "address to listen on")  # noqa: S104
    # The defaults of port and of the server's own certificate are each program's.
    port: int = setting(
        0, "PORT", "port to listen on; 0 picks a free one", minimum=0, maximum=65535
    )
    tls_cert: Path = setting(Path("certs/server.crt"), "TLS_CERT", "server certificate")
    tls_key: Path = setting(Path("certs/server.key"), "TLS_KEY", "server private key")
    tls_ca: Path = setting(Path("certs/ca.crt"), "TLS_CA", "CA that client certificates chain to")
    # Each program's default is the policy in its package, <name>/authz.json.
    authz_policy: Path = setting(
        Path("authz.json"),
        "AUTHZ_POLICY",
        "who may call which method (gRFC A43 JSON, default deny); reloaded when it changes",
    )
    forwarded_client_cert_from: str | None = setting(
        None,
        "FORWARDED_CLIENT_CERT_FROM",
        "the certificate name of the proxy (the edge) whose x-forwarded-client-cert header "
        "names the caller; from any other peer the header is ignored; unset: from none",
    )
    insecure: bool = setting(
        False, "INSECURE", "DEVELOPMENT ONLY: plaintext, no TLS and no client certificates"
    )
    grace: float = setting(
        10.0, "SHUTDOWN_GRACE", "seconds in-flight calls get on shutdown", minimum=0
    )
    drain: float = setting(
        1.0,
        "SHUTDOWN_DRAIN",
        "seconds of serving on after NOT_SERVING, before new calls are refused",
        minimum=0,
    )
    log_level: LogLevel = setting(
        LogLevel.INFO, "LOG_LEVEL", "the lowest level logged (JSON lines on stderr)"
    )
    access_log: AccessLog = setting(
        AccessLog.ALL,
        "ACCESS_LOG",
        "a log line per call; errors: only for calls that did not end OK",
    )
    health_port: int | None = setting(
        None,
        "HEALTH_PORT",
        "also serve the health service alone, in PLAINTEXT, on this port, for probes "
        "that cannot speak mutual TLS (Kubernetes)",
        minimum=0,
        maximum=65535,
    )
    replica: str = setting(
        "local",
        "REPLICA_NAME",
        "this server's name in logs and in the served-by response metadata",
    )
    max_connection_age: float = setting(
        60.0,
        "MAX_CONNECTION_AGE",
        "seconds after which a client connection is asked to reconnect (GOAWAY), so "
        "clients re-resolve DNS and find new replicas; calls in flight are never cut",
        minimum=0.001,
    )
    event_loop: EventLoop = setting(
        EventLoop.UVLOOP,
        "EVENT_LOOP",
        "uvloop is faster per message (see grpckit/lifecycle/loop.py); "
        "asyncio is the standard loop",
    )
    grpc_thread_policy: GrpcThreadPolicy = setting(
        GrpcThreadPolicy.BATCH,
        "GRPC_THREAD_POLICY",
        "batch: gRPC's threads do not preempt the event loop when they wake, and hand it "
        "completions in batches (see grpckit/lifecycle/scheduling.py); normal: Linux's default",
    )
    workers: int = setting(
        1,
        "WORKERS",
        "server processes sharing the port (SO_REUSEPORT, grpckit/lifecycle/workers.py)",
        minimum=1,
    )

    # Budgets (grpckit/calls/budgets.py). Each program sizes these to its container's memory
    # (Program.defaults); these are the runtime's own, for a server of small unary calls.
    max_calls: int = setting(
        1000,
        "MAX_CALLS",
        "unary calls served at once; more get RESOURCE_EXHAUSTED",
        minimum=1,
    )
    max_calls_per_client: int = setting(
        500,
        "MAX_CALLS_PER_CLIENT",
        "unary calls served at once for one client identity (certificate), so that one "
        "client cannot take them all",
        minimum=1,
    )
    max_streams: int = setting(
        100,
        "MAX_STREAMS",
        "streams served at once (a stream counts until it ends); more get RESOURCE_EXHAUSTED",
        minimum=1,
    )
    max_streams_per_client: int = setting(
        50,
        "MAX_STREAMS_PER_CLIENT",
        "streams served at once for one client identity (certificate)",
        minimum=1,
    )
    metrics: bool = setting(
        True,
        "METRICS",
        "gRPC's and the services' metrics, served as /metrics on HEALTH_PORT (Prometheus "
        "text); off records nothing",
    )
    grpc_metrics: bool = setting(
        True,
        "GRPC_METRICS",
        "with METRICS, gRPC's own per-method call metrics too (grpcio-observability)",
    )
    handshake_timeout: float = setting(
        10.0,
        "HANDSHAKE_TIMEOUT",
        "seconds a new connection gets to finish its TLS handshake before it is closed, so "
        "idle or slow connections cannot pile up",
        minimum=0.001,
    )

    def __post_init__(self) -> None:
        if self.workers > 1 and self.port == 0:
            raise ValueError("WORKERS above 1 needs a fixed PORT: each worker binds the same one")
        for kind in ("calls", "streams"):
            if getattr(self, f"max_{kind}_per_client") > getattr(self, f"max_{kind}"):
                raise ValueError(
                    f"MAX_{kind.upper()}_PER_CLIENT must not exceed MAX_{kind.upper()}"
                )

    @property
    def tls(self) -> TlsFiles | None:
        """None only when plaintext was asked for explicitly."""
        return None if self.insecure else TlsFiles(self.tls_cert, self.tls_key, self.tls_ca)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"
