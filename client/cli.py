"""Call the cheese, movie and soccer services from a shell.

Results go to stdout as one JSON object per line, so scripts and the end-to-end smoke can
parse them; an error is one line on stderr and a non-zero exit code, never a traceback.
"""

import argparse
import asyncio
import os
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import grpc

from api import cheese_pb2, cheese_pb2_grpc, movie_pb2, movie_pb2_grpc
from client.common import (
    DEFAULT_TIMEOUT,
    PORTS,
    ClientError,
    Settings,
    emit,
    health_status,
    message_dict,
)
from client.load import CALLERS, run_load
from client.smoke import run_smoke
from client.watch import WINDOW_KIB, run_watch
from grpckit.client.channel import ClientTls, open_channel
from grpckit.settings import UsageError
from grpckit.telemetry import tracing

EXIT_RPC = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
CHEESES = cheese_pb2.CheeseType.keys()
# Seconds the spans left at exit may take to leave (see start_tracing).
EXPORT_TIMEOUT = 2.0
TIMEOUT_VARIABLES = ("OTEL_EXPORTER_OTLP_TIMEOUT", "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT")

Command = Callable[[Settings, argparse.Namespace], Coroutine[Any, Any, int]]


async def cheese_order(settings: Settings, args: argparse.Namespace) -> int:
    async with open_channel(settings.target_for("cheese"), settings.tls) as channel:
        stub = cheese_pb2_grpc.CheeseServiceStub(channel)
        request = cheese_pb2.CheeseRequest(type=args.type)
        emit(message_dict(await stub.Order(request, timeout=settings.deadline)))
    return 0


async def movie_get(settings: Settings, args: argparse.Namespace) -> int:
    async with open_channel(settings.target_for("movie"), settings.tls) as channel:
        stub = movie_pb2_grpc.MovieStub(channel)
        request = movie_pb2.MovieID(id=args.id)
        emit(message_dict(await stub.GetMovieByID(request, timeout=settings.deadline)))
    return 0


async def movie_title(settings: Settings, args: argparse.Namespace) -> int:
    async with open_channel(settings.target_for("movie"), settings.tls) as channel:
        stub = movie_pb2_grpc.MovieStub(channel)
        request = movie_pb2.MovieTitle(title=args.title)
        emit(message_dict(await stub.GetMovieByTitle(request, timeout=settings.deadline)))
    return 0


async def movie_list(settings: Settings, args: argparse.Namespace) -> int:
    async with open_channel(settings.target_for("movie"), settings.tls) as channel:
        stub = movie_pb2_grpc.MovieStub(channel)
        async for movie in stub.GetListMovies(movie_pb2.Empty(), timeout=settings.deadline):
            emit(message_dict(movie))
    return 0


async def movie_director(settings: Settings, args: argparse.Namespace) -> int:
    async with open_channel(settings.target_for("movie"), settings.tls) as channel:
        stub = movie_pb2_grpc.MovieStub(channel)
        request = movie_pb2.Director(name=args.name)
        async for movie in stub.GetMoviesByDirector(request, timeout=settings.deadline):
            emit(message_dict(movie))
    return 0


async def health(settings: Settings, args: argparse.Namespace) -> int:
    """Exits 0 only for SERVING, so a shell or a compose healthcheck can rely on the code."""
    async with open_channel(
        settings.target_for(args.service), settings.tls, watch_health=False
    ) as channel:
        status = await health_status(channel, args.name, settings.deadline)
    emit({"service": args.name, "status": status})
    return 0 if status == "SERVING" else EXIT_RPC


async def smoke(settings: Settings, args: argparse.Namespace) -> int:
    return await run_smoke(settings, args.wait)


def cheese_type(text: str) -> cheese_pb2.CheeseType.ValueType:
    """A name in any case, or a number, so the server's handling of unknown values is testable."""
    if text.upper() in CHEESES:
        return cheese_pb2.CheeseType.Value(text.upper())
    try:
        number = int(text)
    except ValueError:
        names = ", ".join(name.lower() for name in CHEESES)
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a cheese ({names}) or a number"
        ) from None
    if not -(2**31) <= number < 2**31:
        raise argparse.ArgumentTypeError(f"{number} does not fit an enum (int32)")
    return cheese_pb2.CheeseType.ValueType(number)


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


def count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}")
    return int(text)


def positive_count(text: str) -> int:
    value = count(text)
    if value < 1:
        raise argparse.ArgumentTypeError("expected a whole number >= 1")
    return value


def quality(text: str) -> int:
    value = count(text)
    if value > 100:
        raise argparse.ArgumentTypeError("JPEG quality is 1-100, or 0 for the server default")
    return value


def env_path(name: str, default: str) -> Path:
    return Path(os.environ.get(name) or default)


def add_global_flags(parser: argparse.ArgumentParser) -> None:
    """Each flag defaults to an environment variable: containers set those, people type flags."""
    add = parser.add_argument
    add(
        "--target",
        help="host:port of the server (env GRPC_TARGET; default per service: "
        "CHEESE_TARGET, MOVIE_TARGET, SOCCER_TARGET or localhost:"
        + "/".join(str(port) for port in PORTS.values())
        + ")",
    )
    add(
        "--ca",
        type=Path,
        default=env_path("TLS_CA", "certs/ca.crt"),
        help="CA that signed the server certificate (env TLS_CA; default %(default)s)",
    )
    add(
        "--cert",
        type=Path,
        default=env_path("TLS_CERT", "certs/client.crt"),
        help="client certificate (env TLS_CERT; default %(default)s)",
    )
    add(
        "--key",
        type=Path,
        default=env_path("TLS_KEY", "certs/client.key"),
        help="client private key (env TLS_KEY; default %(default)s)",
    )
    add(
        "--server-name",
        default=os.environ.get("TLS_SERVER_NAME"),
        help="name to check in the server certificate, if not the target's host "
        "(env TLS_SERVER_NAME)",
    )
    add("--insecure", action="store_true", help="plaintext, no TLS: development servers only")
    add(
        "--timeout",
        type=positive_float,
        default=os.environ.get("GRPC_TIMEOUT"),
        help=f"deadline in seconds (env GRPC_TIMEOUT; default {DEFAULT_TIMEOUT:g}, "
        "none for soccer watch)",
    )


def add_commands(commands: Any) -> None:
    def command(parent: Any, name: str, run: Command, text: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = parent.add_parser(name, help=text, description=text)
        parser.set_defaults(run=run)
        return parser

    def group(name: str, text: str) -> Any:
        parser = commands.add_parser(name, help=text, description=text)
        return parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    cheese = group("cheese", "the cheese farm (cheesefarm.CheeseService)")
    order = command(cheese, "order", cheese_order, "order a cheese")
    order.add_argument("type", type=cheese_type, metavar="TYPE", help="brie, emmental, ... or 1")

    movie = group("movie", "the movie catalogue (Movie)")
    command(movie, "get", movie_get, "a movie by id").add_argument("id")
    command(movie, "list", movie_list, "every movie, streamed")
    command(movie, "title", movie_title, "a movie by exact title").add_argument("title")
    command(movie, "director", movie_director, "a director's movies").add_argument("name")

    soccer = group("soccer", "match video (stream.Soccer)")
    watch = command(soccer, "watch", run_watch, "stream a match, checking every frame")
    watch.add_argument("match", help="match id, such as demo")
    watch.add_argument("--encoding", choices=["raw", "jpeg"], default="raw")
    watch.add_argument("--quality", type=quality, default=0, help="JPEG quality 1-100")
    watch.add_argument("--frames", type=count, default=0, help="at most N frames; 0 for all")
    watch.add_argument("--start", type=count, default=0, help="first frame index")
    watch.add_argument("--unpaced", action="store_true", help="as fast as possible")
    watch.add_argument("--save", type=Path, metavar="OUT.mp4", help="write the frames to mp4")
    watch.add_argument(
        "--window",
        type=positive_count,
        default=WINDOW_KIB,
        metavar="KIB",
        help="KiB of frames in flight between server and viewer (default %(default)s): on a "
        "link slower than the stream, the viewer lags live by about this over the link's rate "
        "(and skips frames); a link with a long round trip needs its round trip at the "
        "stream's rate",
    )

    check = command(commands, "health", health, "exit 0 only if the server is SERVING")
    check.add_argument("service", choices=sorted(PORTS), help="which server to ask")
    check.add_argument("--name", default="", help='gRPC service name; default "" (the server)')

    smoke_run = command(
        commands, "smoke", smoke, "call every RPC of every service once, check the results"
    )
    smoke_run.add_argument(
        "--wait",
        type=positive_float,
        default=0.0,
        metavar="SECONDS",
        help="first wait up to SECONDS for each service to have a server ready "
        "(started together with the servers)",
    )

    load = command(commands, "load", run_load, "calls for a while: who served them, which failed")
    load.add_argument("service", choices=sorted(CALLERS), help="which server to load")
    load.add_argument("--seconds", type=positive_float, default=10.0, help="how long")
    load.add_argument(
        "--concurrency", type=positive_count, default=4, help="calls in flight at once"
    )
    load.add_argument("--match", default="demo", help="soccer: the match to view")
    load.add_argument(
        "--every",
        type=positive_float,
        metavar="SECONDS",
        help="also a line per SECONDS: calls and failures in that interval",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m client",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        epilog="Global options go before the command: python -m client --insecure movie list",
    )
    add_global_flags(parser)
    add_commands(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    return parser


def client_tls(args: argparse.Namespace) -> ClientTls | None:
    """Missing files are the usual first-run mistake: name the file and the fix."""
    if args.insecure:
        return None
    for flag, env, path in (
        ("--ca", "TLS_CA", args.ca),
        ("--cert", "TLS_CERT", args.cert),
        ("--key", "TLS_KEY", args.key),
    ):
        problem = "not found" if not path.is_file() else None
        if problem is None and not os.access(path, os.R_OK):
            problem = "not readable"
        if problem:
            raise ClientError(
                f"TLS file {problem}: {path} ({flag} / {env}); run `make certs`, "
                "or pass --insecure for a plaintext server",
                EXIT_USAGE,
            )
    return ClientTls(args.ca, args.cert, args.key, args.server_name or None)


def settings_from(args: argparse.Namespace) -> Settings:
    target = args.target or os.environ.get("GRPC_TARGET") or None
    if args.command == "smoke":
        if args.target:
            raise ClientError("smoke calls three servers: set CHEESE_TARGET, ... not --target", 2)
        target = None
    return Settings(target, client_tls(args), args.timeout)


def start_tracing() -> None:
    """The client's spans start the traces the servers continue, when
    OTEL_EXPORTER_OTLP_ENDPOINT is set (grpckit/telemetry/tracing.py); they leave at exit, when the
    batch processor flushes. A command must not hang for the exporter's 10 s default when
    the collector is away: EXPORT_TIMEOUT, unless OpenTelemetry's variables say otherwise."""
    try:
        traces = tracing.settings()
    except UsageError as error:
        raise ClientError(str(error), EXIT_USAGE) from None
    timeout = None if any(os.environ.get(name) for name in TIMEOUT_VARIABLES) else EXPORT_TIMEOUT
    tracing.install("client", tracing.replica_name(), traces, export_timeout=timeout)


def fail(message: str, code: int) -> int:
    print(f"error: {message}", file=sys.stderr, flush=True)
    return code


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit:  # --help and usage errors: return the code, let the caller exit
        return exit.code if isinstance(exit.code, int) else EXIT_USAGE
    try:
        settings = settings_from(args)
        start_tracing()
        run: Command = args.run
        return asyncio.run(run(settings, args))
    except grpc.aio.AioRpcError as error:
        details = error.details()
        return fail(f"{error.code().name}: {details}" if details else error.code().name, EXIT_RPC)
    except ClientError as error:
        return fail(str(error), error.exit_code)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # A reader such as `head` left early; point stdout at nothing so exit does not complain.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_RPC
