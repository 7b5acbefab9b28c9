"""The access log writes its lines as JSON text of its own (grpckit/calls/access_log.py): they must
be exactly what the JSON formatter makes of the same fields, whatever the values hold."""

import json
from typing import Any, cast

import grpc
import pytest

from grpckit.calls import access_log
from grpckit.calls.access_log import Entry
from grpckit.calls.authz import Peer
from grpckit.telemetry.logs import JsonFormatter


class _Call:
    def __init__(self, peer: str) -> None:
        self._peer = peer

    def peer(self) -> str:
        return self._peer


@pytest.mark.parametrize("replica", [None, "movie-2"])
@pytest.mark.parametrize(
    ("peer", "caller", "trace_id"),
    [
        ("ipv4:127.0.0.1:50123", Peer(tls=True, dns=("client",)), None),
        ("ipv6:[::1]:4", Peer(tls=True, subject='CN=a "quoted",O=\\ü\n'), "ab" * 16),
        ("unix:/tmp/s", Peer(tls=False), None),
        ("ipv4:10.0.0.1:1", Peer(tls=True, uris=("spiffe://x/é",), via="edge"), "0" * 32),
    ],
)
def test_an_access_line_is_what_the_formatter_writes(
    replica: str | None, peer: str, caller: Peer, trace_id: str | None
) -> None:
    formatter = JsonFormatter(replica)
    entry = Entry(cast(Any, _Call(peer)), caller)
    code = grpc.StatusCode.PERMISSION_DENIED
    created = 1765432109.8765
    line = access_log._line(formatter, "/pkg.Svc/Méthod", entry, code, 12.345, trace_id, created)
    parsed = json.loads(line)
    fields: dict[str, Any] = {
        "method": "/pkg.Svc/Méthod",
        "peer": peer,
        "client": entry.client,
        "code": "PERMISSION_DENIED",
        "duration_ms": 12.345,
    }
    if entry.via:
        fields["via"] = entry.via
    if trace_id is not None:
        fields["trace_id"] = trace_id
    assert parsed["time"] == "2025-12-11T05:48:29.876+00:00"
    assert line == formatter.line(created, "INFO", "grpckit.access", parsed["pid"], "call", fields)
