"""Server settings: environment variables first, command-line flags over them.

Containers are configured through the environment, people at a shell through flags; each
setting has both, and `--help` shows the variable and the default next to every flag.
"""

import argparse
import os
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def parse_bool(text: str) -> bool:
    value = text.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean (1/0, true/false), got {text!r}")


ACCESS_LOG_CHOICES = ("all", "errors", "off")
EVENT_LOOPS = ("uvloop", "asyncio")


def optional_port(text: str) -> int | None:
    """A port number, or nothing for an empty value: the setting is off."""
    return int(text) if text.strip() else None


def one_of(*choices: str) -> Callable[[str], str]:
    def choose(text: str) -> str:
        if text not in choices:
            raise argparse.ArgumentTypeError(f"expected one of {', '.join(choices)}")
        return text

    return choose


@dataclass(frozen=True)
class TlsFiles:
    cert: Path
    key: Path
    ca: Path


@dataclass(frozen=True)
class ServerConfig:
    host: str
    port: int
    # None only when plaintext was asked for explicitly.
    tls: TlsFiles | None
    grace_seconds: float
    log_level: str
    workers: int = 1
    drain_seconds: float = 1.0
    access_log: str = "all"
    # The plaintext, health-only maintenance port; None: no such port.
    health_port: int | None = None
    # Names this server in logs and in every response's metadata (see grpckit/interceptors.py).
    replica: str = "local"
    max_connection_age_seconds: float = 60.0
    event_loop: str = "uvloop"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


class ConfigParser:
    """An argparse parser whose defaults come from the environment."""

    def __init__(self, service: str, default_port: int, description: str) -> None:
        self.parser = argparse.ArgumentParser(
            prog=f"python -m {service}",
            description=description,
            formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        )
        self.add("--host", "HOST", "0.0.0.0", "address to listen on", str)  # noqa: S104
        self.add("--port", "PORT", default_port, "port to listen on; 0 picks a free one", int)
        self.add("--tls-cert", "TLS_CERT", Path(f"certs/{service}.crt"), "server certificate", Path)
        self.add("--tls-key", "TLS_KEY", Path(f"certs/{service}.key"), "server private key", Path)
        self.add("--tls-ca", "TLS_CA", Path("certs/ca.crt"), "CA that client certs chain to", Path)
        self.add(
            "--insecure",
            "INSECURE",
            False,
            "DEVELOPMENT ONLY: plaintext, no TLS and no client certificates",
            parse_bool,
        )
        self.add(
            "--grace", "SHUTDOWN_GRACE", 10.0, "seconds in-flight calls get on shutdown", float
        )
        self.add(
            "--drain",
            "SHUTDOWN_DRAIN",
            1.0,
            "seconds of serving on after NOT_SERVING, before new calls are refused",
            float,
        )
        self.add("--log-level", "LOG_LEVEL", "INFO", "DEBUG, INFO, WARNING or ERROR", str)
        self.add(
            "--access-log",
            "ACCESS_LOG",
            "all",
            "log a line per call: all, errors (calls that did not end OK) or off; "
            "a line per call costs about a quarter of the peak unary rate",
            one_of(*ACCESS_LOG_CHOICES),
        )
        self.add(
            "--health-port",
            "HEALTH_PORT",
            None,
            "also serve the health service alone, in PLAINTEXT, on this port, for probes "
            "that cannot speak mutual TLS (Kubernetes); empty: off",
            optional_port,
        )
        self.add(
            "--replica",
            "REPLICA_NAME",
            socket.gethostname(),
            "this server's name in logs and in the served-by response metadata",
            str,
        )
        self.add(
            "--max-connection-age",
            "MAX_CONNECTION_AGE",
            60.0,
            "seconds after which a client connection is asked to reconnect (GOAWAY), so "
            "clients re-resolve DNS and find new replicas; calls in flight are never cut",
            float,
        )
        self.add(
            "--event-loop",
            "EVENT_LOOP",
            "uvloop",
            "uvloop (faster per message, see grpckit/loop.py) or asyncio (the standard loop)",
            one_of(*EVENT_LOOPS),
        )
        self.add(
            "--workers",
            "WORKERS",
            1,
            "server processes sharing the port (SO_REUSEPORT); see grpckit/workers.py",
            int,
        )

    def add(self, flag: str, env: str, default: T, help: str, type: Callable[[str], T]) -> None:
        raw = os.environ.get(env)
        value = default if raw is None else type(raw)
        # A boolean flag given alone (`--insecure`) means true.
        if type is parse_bool:
            self.parser.add_argument(
                flag, type=type, default=value, help=f"{help} [env {env}]", nargs="?", const=True
            )
        else:
            self.parser.add_argument(
                flag, type=type, default=value, help=f"{help} [env {env}]", metavar=env
            )

    def parse(self, argv: Sequence[str] | None = None) -> tuple[ServerConfig, argparse.Namespace]:
        args = self.parser.parse_args(argv)
        if args.workers < 1:
            self.parser.error("--workers must be at least 1")
        if args.workers > 1 and args.port == 0:
            self.parser.error("--workers needs a fixed --port: each worker must bind the same one")
        tls = None if args.insecure else TlsFiles(args.tls_cert, args.tls_key, args.tls_ca)
        server = ServerConfig(
            host=args.host,
            port=args.port,
            tls=tls,
            grace_seconds=args.grace,
            log_level=args.log_level,
            workers=args.workers,
            drain_seconds=args.drain,
            access_log=args.access_log,
            health_port=args.health_port,
            replica=args.replica,
            max_connection_age_seconds=args.max_connection_age,
            event_loop=args.event_loop,
        )
        return server, args
