"""Client channels with the project's settings: mutual TLS, message limits, retries, and a
client span per call when tracing is on (grpckit/telemetry/trace_client.py).

A channel's credentials are fixed when it is made, and certificates here live a day (a few
minutes in tests): a client that holds a channel for longer would show an expired
certificate on its next connection. `RenewingChannel` looks at the files at most once a
second and, when they changed and hold a matching pair, opens a channel with the new
credentials for the calls that follow; calls already under way finish on the old one.

gRPC's DNS resolver looks a name up again only when a connection fails or closes, so a
client that knows one replica does not learn of a second started beside it (a rolling
upgrade) until the first closes, and when that one says NOT_SERVING first, as a draining
server does, the client has nowhere to send its calls meanwhile. So the same look, once a
second, also resolves the target's name (as Envoy does for its DNS clusters) and, when it
names an address the channel did not know, opens a new channel for the calls that follow,
which resolves afresh and connects to every replica.
"""

import asyncio
import contextlib
import ipaddress
import logging
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import grpc

from grpckit.telemetry import trace_client
from grpckit.transport.options import CHANNEL_OPTIONS, ChannelOptions
from grpckit.transport.tls import TlsFilesError, channel_credentials, files_stamp

log = logging.getLogger("grpckit.channel")


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
    look_up: "Callable[[], Iterable[str]] | None" = None,
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

    `look_up` gives the target's addresses now; by default the system's resolver is asked
    for a DNS target's host, and a target that is an address is not looked up.
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

    def secure(credentials: grpc.ChannelCredentials) -> grpc.aio.Channel:
        return grpc.aio.secure_channel(
            target, credentials, options=options, interceptors=interceptors
        )

    return RenewingChannel(tls, secure, look_up or system_look_up(target))


def system_look_up(target: str) -> "Callable[[], frozenset[str]] | None":
    """The system resolver's answer for the host gRPC's DNS resolver looks up for `target`;
    None for a target with nothing to look up again (an address, a unix socket, a DNS server
    of its own, which the system resolver does not ask)."""
    if target.startswith("dns:"):
        rest = target[len("dns:") :]
        if rest.startswith("//"):
            authority, _, rest = rest[2:].partition("/")
            if authority:
                return None
    elif "://" in target or target.startswith(("unix:", "unix-abstract:", "ipv4:", "ipv6:")):
        return None
    else:
        rest = target
    host, _, port = rest.rpartition(":")
    host = host.strip("[]")
    try:
        ipaddress.ip_address(host)
        return None
    except ValueError:
        pass
    if not host or not port.isdigit():
        return None

    def look_up() -> frozenset[str]:
        found = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
        return frozenset(str(address[4][0]) for address in found)

    return look_up


# How often a RenewingChannel looks at its files (three stats).
CHECK_SECONDS = 1.0
# Retired channels kept open for calls still on them; the oldest is closed past this many.
# A renewal comes at half a lifetime, but an added address retires a channel too: a rollout
# of three replicas retires three in a minute, and a long stream on the oldest then gets
# RETIRED_GRACE to finish before it is cut (a viewer resumes from its next frame).
KEEP_RETIRED = 2
# What a retired channel's calls get to finish when it is closed.
RETIRED_GRACE = 30.0


class RenewingChannel(grpc.aio.Channel):
    """A channel that presents the client certificate currently in `tls`'s files.

    Each call goes to the newest channel; a multicallable made once (a stub) follows it.
    """

    def __init__(
        self,
        tls: ClientTls,
        secure: Callable[[grpc.ChannelCredentials], grpc.aio.Channel],
        look_up: "Callable[[], Iterable[str]] | None" = None,
    ) -> None:
        self._tls = tls
        self._paths = [p for p in (tls.ca, tls.cert, tls.key) if p is not None]
        self._secure = secure
        self._stamp = files_stamp(*self._paths)
        self._credentials = channel_credentials(tls.ca, tls.cert, tls.key)
        self._channel = secure(self._credentials)
        self._checked = time.monotonic()
        self._retired: list[grpc.aio.Channel] = []
        self._closing: set[asyncio.Task[None]] = set()
        self.renewals = 0
        self._look_up = look_up
        self._looking: asyncio.Future[frozenset[str]] | None = None
        # What the last look found: the first, started now, is what the new channel finds.
        self._addresses: frozenset[str] | None = None
        self.new_addresses = 0
        with contextlib.suppress(RuntimeError):  # made outside an event loop: at the first call
            self._look_again()

    def current(self) -> grpc.aio.Channel:
        """The channel for a call starting now, renewed first if the files changed."""
        now = time.monotonic()
        if now - self._checked >= CHECK_SECONDS:
            self._checked = now
            self._renew_if_changed()
            self._look_again()
        return self._channel

    def _look_again(self) -> None:
        """Resolve the target off the event loop; `_found` compares the answer."""
        if self._look_up is None or self._looking is not None:
            return
        look_up = self._look_up
        self._looking = asyncio.get_running_loop().run_in_executor(
            None, lambda: frozenset(look_up())
        )
        self._looking.add_done_callback(self._found)

    def _found(self, looking: "asyncio.Future[frozenset[str]]") -> None:
        self._looking = None
        if looking.cancelled() or looking.exception() is not None:
            return  # the name does not resolve now: gRPC's own resolver copes with that
        found = looking.result()
        known, self._addresses = self._addresses, found
        if known is not None and not found <= known:
            self.new_addresses += 1
            log.info(
                "new addresses for the target, opening a channel that knows them",
                extra={"added": sorted(found - known)},
            )
            self._replace(self._credentials)

    def _renew_if_changed(self) -> None:
        tls = self._tls
        try:
            stamp = files_stamp(*self._paths)
            if stamp == self._stamp:
                return
            credentials = channel_credentials(tls.ca, tls.cert, tls.key)
        except (OSError, TlsFilesError) as error:
            # Mid-renewal (a key new beside the old certificate): look again in a second.
            log.warning(
                "client TLS files unreadable or not a pair, keeping the current ones",
                extra={"error": str(error)},
            )
            return
        self._stamp = stamp
        self._replace(credentials)
        self.renewals += 1
        log.info("client TLS certificates reloaded", extra={"cert": str(tls.cert)})

    def _replace(self, credentials: grpc.ChannelCredentials) -> None:
        """A new channel for the calls that follow; the old one is kept for the calls on it."""
        self._credentials = credentials
        self._retired.append(self._channel)
        self._channel = self._secure(credentials)
        while len(self._retired) > KEEP_RETIRED:
            task = asyncio.get_running_loop().create_task(self._retired.pop(0).close(RETIRED_GRACE))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def close(self, grace: float | None = None) -> None:
        if self._looking is not None:
            self._looking.cancel()
        channels = [self._channel, *self._retired]
        self._retired.clear()
        await asyncio.gather(*(channel.close(grace) for channel in channels), *self._closing)

    async def __aenter__(self) -> "RenewingChannel":
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        await self.close(None)

    def get_state(self, try_to_connect: bool = False) -> grpc.ChannelConnectivity:
        return self.current().get_state(try_to_connect)

    async def wait_for_state_change(self, last_observed_state: grpc.ChannelConnectivity) -> None:
        await self.current().wait_for_state_change(last_observed_state)

    async def channel_ready(self) -> None:
        await self.current().channel_ready()

    def unary_unary(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return _Following(self, "unary_unary", method, args, kwargs)

    def unary_stream(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return _Following(self, "unary_stream", method, args, kwargs)

    def stream_unary(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return _Following(self, "stream_unary", method, args, kwargs)

    def stream_stream(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return _Following(self, "stream_stream", method, args, kwargs)


class _Following:
    """A multicallable on whichever channel is current when each call starts."""

    def __init__(
        self,
        owner: RenewingChannel,
        kind: str,
        method: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> None:
        self._owner, self._kind, self._method = owner, kind, method
        self._args, self._kwargs = args, kwargs
        self._channel: grpc.aio.Channel | None = None
        self._callable: Any = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        channel = self._owner.current()
        if channel is not self._channel:
            make = getattr(channel, self._kind)
            self._callable = make(self._method, *self._args, **self._kwargs)
            self._channel = channel
        return self._callable(*args, **kwargs)
