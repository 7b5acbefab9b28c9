"""Client channels with the project's settings: mutual TLS, message limits, retries, and a
client span per call when tracing is on (grpckit/trace_client.py)."""

from dataclasses import dataclass
from pathlib import Path

import grpc

from grpckit import trace_client
from grpckit.options import CHANNEL_OPTIONS, ChannelOptions
from grpckit.tls import channel_credentials


@dataclass(frozen=True)
class ClientTls:
    ca: Path
    # Without a certificate and key the servers refuse the handshake; tests use that.
    cert: Path | None = None
    key: Path | None = None
    # Name to check the server certificate against when it differs from the target's host.
    server_name: str | None = None


def open_channel(
    target: str,
    tls: ClientTls | None,
    *,
    watch_health: bool = True,
    receive_window: int | None = None,
) -> grpc.aio.Channel:
    """An aio channel to `target`; `tls=None` is plaintext, for development only.

    It sends calls only to servers that report SERVING. Tools that ask about health
    themselves (probes, `client health`) pass `watch_health=False`, or a NOT_SERVING
    server would look unreachable to them instead of answering NOT_SERVING.

    Whether its calls are traced is decided here, once: with tracing off the channel has no
    interceptor at all.

    `receive_window` fixes each stream's HTTP/2 flow-control window, in bytes, instead of
    letting gRPC grow it to the link's bandwidth-delay product (BDP probing). A real-time
    viewer sets it: a window grown on a slow link holds seconds of frames between the server
    and the viewer (grown by its own queueing delay), where the server cannot skip them.
    """
    options: ChannelOptions = list(CHANNEL_OPTIONS)
    if not watch_health:
        options.append(("grpc.inhibit_health_checking", 1))
    if receive_window is not None:
        options.append(("grpc.http2.bdp_probe", 0))
        options.append(("grpc.http2.lookahead_bytes", receive_window))
    interceptors = trace_client.interceptors()
    if tls is None:
        return grpc.aio.insecure_channel(target, options=options, interceptors=interceptors)
    if tls.server_name:
        options.append(("grpc.ssl_target_name_override", tls.server_name))
    return grpc.aio.secure_channel(
        target,
        channel_credentials(tls.ca, tls.cert, tls.key),
        options=options,
        interceptors=interceptors,
    )
