"""Who a call is from: the certificate of its connection, or, when that connection is the
edge's, the client certificate the edge verified and forwarded in Envoy's
`x-forwarded-client-cert` (XFCC) header.

The header is honoured only from the identity named by FORWARDED_CLIENT_CERT_FROM: from any
other peer it is ignored, and the call is the peer's own, so a client cannot claim another
identity by sending the header itself. The edge sets the header on every call it forwards
(`forward_client_cert_details: SANITIZE_SET`, deploy/edge/envoy.yaml): whatever a client
sent under that name is replaced by what the edge verified. The edge's own calls, its
health checks, carry no header and are the edge's.

The caller is read once per call, by the runtime's wrapper (grpckit/calls/interceptors.py), for
the authorization policy, the budgets and the access log alike; handlers that charge work to
a client (soccer's decoders) ask `current()`.
"""

from contextvars import ContextVar
from typing import Any

from grpc.aio import ServicerContext

from grpckit.calls.authz import Peer, peer_of

Context = ServicerContext[Any, Any]

XFCC = "x-forwarded-client-cert"
# A bound on remembered headers: one per client certificate seen through the edge.
_REMEMBERED = 1024

_current: ContextVar[Peer] = ContextVar("caller")


def current() -> Peer:
    """The caller of the call this task serves (set before its handler runs)."""
    return _current.get()


class Callers:
    def __init__(self, proxy: str | None) -> None:
        """`proxy`: the identity whose XFCC header names the caller; None trusts nobody's."""
        self._proxy = proxy
        self._forwarded: dict[str, Peer] = {}

    def of(self, context: Context) -> Peer:
        """The caller, which `current()` then returns for the rest of the call."""
        peer = peer_of(context)
        if self._proxy is not None and peer.tls and peer.name == self._proxy:
            header = _header(context)
            if header is not None:
                peer = self._parsed(header, peer.name)
        _current.set(peer)
        return peer

    def _parsed(self, header: str, proxy: str) -> Peer:
        peer = self._forwarded.get(header)
        if peer is None:
            if len(self._forwarded) >= _REMEMBERED:
                self._forwarded.clear()
            peer = self._forwarded[header] = forwarded_peer(header, proxy)
        return peer


def _header(context: Context) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == XFCC:
            return value if isinstance(value, str) else value.decode("latin-1")
    return None


def forwarded_peer(header: str, proxy: str) -> Peer:
    """The client the nearest proxy verified: the header's last element (each proxy appends
    one). A header without a usable element names no identity: the policy then allows
    nothing, rather than the proxy's own rights."""
    elements = _split(header, ",")
    fields: dict[str, list[str]] = {}
    for pair in _split(elements[-1], ";") if elements else ():
        key, equals, value = pair.partition("=")
        if equals:
            fields.setdefault(key.strip().lower(), []).append(_unquoted(value.strip()))
    subject = next(iter(fields.get("subject", ())), "")
    uris = tuple(uri for uri in fields.get("uri", ()) if uri)
    dns = tuple(name for name in fields.get("dns", ()) if name)
    if not (subject or uris or dns):
        return Peer(tls=True, via=proxy)
    return Peer(tls=True, uris=uris, dns=dns, subject=subject, via=proxy)


def _split(text: str, separator: str) -> list[str]:
    """`text` split on `separator` outside double quotes (Envoy quotes values that hold
    `,`, `;` or `=`, and escapes `"` inside them with a backslash)."""
    parts, start, quoted, escaped = [], 0, False, False
    for index, char in enumerate(text):
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == separator and not quoted:
            parts.append(text[start:index])
            start = index + 1
    parts.append(text[start:])
    return [part for part in parts if part.strip()]


def _unquoted(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1]
        return value.replace('\\"', '"').replace("\\\\", "\\")
    return value
