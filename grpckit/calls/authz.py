"""Authorization: which client identities may call which methods, by a policy in the JSON
format of gRPC's SDK authorization (gRFC A43), so the same file works with gRPC's C++, Go
and Java servers and with proxies that read it.

grpcio has A43's engine in its core (the grpc-server-authz filter) but no Python API hands
it a policy, so this module evaluates the same format, with the same semantics:

- deny rules first: a call that matches one is refused; then allow rules: a call that
  matches one is allowed; anything else is refused (default deny).
- a rule matches when its source and its request both match; an absent part matches all.
- `source.principals` (any of them) is matched, on a TLS connection with a client
  certificate, against the certificate's URI SANs, then its DNS SANs, then its subject
  (`CN=client`); without TLS nothing matches, and without a certificate only "" does.
- `request.paths` (any of them) against the method, `/package.Service/Method`;
  `request.headers` (all of them) each against the call's metadata, values of a repeated
  key joined with ",".
- a pattern is exact ("abc"), a prefix ("abc*"), a suffix ("*abc"), or "*": any value
  that is not empty.

Where implementations of A43 differ, a policy is refused here rather than read one way:
unknown fields (a newer policy version must not be half-read into an allow), an empty
`allow_rules`, two rules with one name (C-core keeps only the last), a "*" inside a pattern
or at both ends (C-core reads "*a*" as a suffix, Go as a prefix), duplicate JSON keys.

Evaluation is cheap: the rules that can apply to a method are picked once per method, and
the decision for a certificate is remembered per method unless the rules read headers.
"""

import asyncio
import functools
import json
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from grpc.aio import ServicerContext

log = logging.getLogger("grpckit.authz")

Context = ServicerContext[Any, Any]
Match = Callable[[str], bool]

# The C-core and Go translators refuse these keys: they are not the caller's to set.
_UNSUPPORTED_HEADERS = frozenset(
    {"host", "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
     "trailer", "transfer-encoding", "upgrade"}
)  # fmt: skip
# A bound on remembered decisions: certificates are few, but a CA could sign many.
_REMEMBERED = 1024


class PolicyError(ValueError):
    """A policy that is not valid A43 JSON, or that implementations would read differently."""


@dataclass(frozen=True)
class Peer:
    """What a policy can know of the caller: its connection's certificate, or the one a
    trusted proxy verified and forwarded (grpckit/calls/callers.py), then named in `via`."""

    tls: bool
    uris: tuple[str, ...] = ()
    dns: tuple[str, ...] = ()
    subject: str = ""
    via: str = ""

    @functools.cached_property  # every budgeted call asks; peer_of hands out one Peer
    def name(self) -> str:
        """The name refusals give: the first name a principal is matched against."""
        for name in (*self.uris, *self.dns, self.subject):
            if name:
                return name
        return "(no client certificate)" if self.tls else "(plaintext, no identity)"


def peer_of(context: Context) -> Peer:
    """The caller, from its connection's certificate. `auth_context` is the only exact source
    (`peer_identities` lists the SANs without saying which are URIs, and not the subject),
    so it is read every call; the Peer built from its raw values is remembered, which saves
    decoding and building it anew (about 4 us of the guards' cost a call)."""
    # Lists in grpcio (cygrpc builds them); the stubs say only Iterable.
    auth = cast("Mapping[str, list[bytes]]", context.auth_context())
    get = auth.get
    uris, dns, subject = get("peer_uri"), get("peer_dns"), get("x509_subject")
    key = (
        get("transport_security_type") == _SSL,
        tuple(uris) if uris else (),
        tuple(dns) if dns else (),
        subject[0] if subject else b"",
    )
    peer = _peers.get(key)
    if peer is None:
        if len(_peers) >= _REMEMBERED:
            _peers.clear()
        peer = _peers[key] = Peer(
            tls=key[0],
            uris=_texts(key[1]),
            dns=_texts(key[2]),
            subject=key[3].decode(errors="replace"),
        )
    return peer


_SSL = [b"ssl"]
# Peers by the raw values they were made of (see peer_of).
_peers: dict[tuple[bool, tuple[bytes, ...], tuple[bytes, ...], bytes], Peer] = {}


def _texts(values: tuple[bytes, ...]) -> tuple[str, ...]:
    return tuple(value.decode(errors="replace") for value in values)


def _pattern(value: object, where: str) -> Match:
    if not isinstance(value, str):
        raise PolicyError(f"{where}: is not a string")
    if value == "*":
        return bool
    if "*" in value[1:-1] or (len(value) > 1 and value[0] == value[-1] == "*"):
        raise PolicyError(f"{where}: {value!r}: '*' only as the whole pattern, first or last")
    if value.startswith("*"):
        suffix = value[1:]
        return lambda text: text.endswith(suffix)
    if value.endswith("*"):
        prefix = value[:-1]
        return lambda text: text.startswith(prefix)
    return value.__eq__


def _any_of(matches: Sequence[Match]) -> Match:
    return lambda text: any(match(text) for match in matches)


def _object(value: object, where: str, fields: Iterable[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise PolicyError(f"{where}: is not an object")
    for key in value:
        if key not in fields:
            raise PolicyError(f'{where}: unknown field "{key}" (not in gRFC A43)')
    return value


def _list(value: object, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise PolicyError(f"{where}: is not an array")
    return value


@dataclass(frozen=True)
class Rule:
    name: str
    principals: Match | None  # None: any caller
    paths: Match | None  # None: any method
    headers: tuple[tuple[str, Match], ...]  # all must match

    def may_apply_to(self, method: str) -> bool:
        return self.paths is None or self.paths(method)

    def matches(self, peer: Peer, context: Context) -> bool:
        if self.principals is not None and not _principal_matches(self.principals, peer):
            return False
        return not self.headers or _headers_match(self.headers, context)


def _principal_matches(match: Match, peer: Peer) -> bool:
    if not peer.tls:
        return False
    if not peer.subject:
        return match("")
    return (
        any(match(name) for name in peer.uris)
        or any(match(name) for name in peer.dns)
        or match(peer.subject)
    )


def _headers_match(headers: tuple[tuple[str, Match], ...], context: Context) -> bool:
    values: dict[str, list[str]] = {}
    for key, value in context.invocation_metadata() or ():
        text = value if isinstance(value, str) else value.decode("latin-1")
        values.setdefault(key, []).append(text)
    for key, match in headers:
        found = values.get(key)
        if found is None or not match(",".join(found)):
            return False
    return True


def _rule(value: object, where: str) -> Rule:
    fields = _object(value, where, ("name", "source", "request"))
    name = fields.get("name")
    if not isinstance(name, str) or not name:
        raise PolicyError(f'{where}: "name" is not present')
    where = f"{where} ({name})"
    principals = paths = None
    headers: list[tuple[str, Match]] = []
    if "source" in fields:
        source = _object(fields["source"], f"{where} source", ("principals",))
        items = _list(source.get("principals", []), f"{where} principals")
        if items:
            principals = _any_of(
                [_pattern(p, f"{where} principals {i}") for i, p in enumerate(items)]
            )
    if "request" in fields:
        request = _object(fields["request"], f"{where} request", ("paths", "headers"))
        items = _list(request.get("paths", []), f"{where} paths")
        if items:
            paths = _any_of([_pattern(p, f"{where} paths {i}") for i, p in enumerate(items)])
        for i, header in enumerate(_list(request.get("headers", []), f"{where} headers")):
            headers.append(_header(header, f"{where} headers {i}"))
    return Rule(name, principals, paths, tuple(headers))


def _header(value: object, where: str) -> tuple[str, Match]:
    header = _object(value, where, ("key", "values"))
    key = header.get("key")
    if not isinstance(key, str) or not key:
        raise PolicyError(f'{where}: "key" is not present')
    key = key.lower()
    if key.startswith((":", "grpc-")) or key in _UNSUPPORTED_HEADERS:
        raise PolicyError(f'{where}: unsupported "key" {key}')
    values = _list(header.get("values", []), f"{where} values")
    if not values:
        raise PolicyError(f'{where}: "values" is not present')
    return key, _any_of([_pattern(v, f"{where} values {i}") for i, v in enumerate(values)])


def _rules(value: object, where: str) -> tuple[Rule, ...]:
    rules = tuple(_rule(item, f"{where} {i}") for i, item in enumerate(_list(value, where)))
    names = [rule.name for rule in rules]
    for name in names:
        if names.count(name) > 1:
            raise PolicyError(f'{where}: two rules are named "{name}"')
    return rules


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [key for key, _ in pairs]
    for key in keys:
        if keys.count(key) > 1:
            raise PolicyError(f'the key "{key}" appears twice in one object')
    return dict(pairs)


class _MethodRules:
    """The rules that can apply to one method, and decisions already made for it."""

    __slots__ = ("allow", "deny", "known", "reads_headers")

    def __init__(self, policy: "Policy", method: str) -> None:
        self.deny = [rule for rule in policy.deny if rule.may_apply_to(method)]
        self.allow = [rule for rule in policy.allow if rule.may_apply_to(method)]
        self.reads_headers = any(rule.headers for rule in (*self.deny, *self.allow))
        self.known: dict[Peer, bool] = {}

    def allows(self, peer: Peer, context: Context) -> bool:
        if any(rule.matches(peer, context) for rule in self.deny):
            return False
        return any(rule.matches(peer, context) for rule in self.allow)


class Policy:
    def __init__(self, name: str, deny: Sequence[Rule], allow: Sequence[Rule]) -> None:
        self.name = name
        self.deny = tuple(deny)
        self.allow = tuple(allow)
        self._methods: dict[str, _MethodRules] = {}

    @classmethod
    def parse(cls, text: str | bytes) -> "Policy":
        """PolicyError, naming the field, for anything but a valid A43 policy."""
        try:
            document = json.loads(text, object_pairs_hook=_no_duplicate_keys)
        except ValueError as error:  # PolicyError included
            raise PolicyError(str(error)) from None
        top = _object(document, "policy", ("name", "deny_rules", "allow_rules"))
        name = top.get("name")
        if not isinstance(name, str) or not name:
            raise PolicyError('"name" is not present')
        if "allow_rules" not in top:
            raise PolicyError('"allow_rules" is not present')
        allow = _rules(top["allow_rules"], "allow_rules")
        if not allow:
            raise PolicyError('"allow_rules" is empty: nothing could be called')
        return cls(name, _rules(top.get("deny_rules", []), "deny_rules"), allow)

    @classmethod
    def load(cls, path: Path) -> "Policy":
        """OSError when the file cannot be read, PolicyError when it is not a policy."""
        return cls.parse(path.read_bytes())

    def allows(self, method: str, peer: Peer, context: Context) -> bool:
        rules = self._methods.get(method)
        if rules is None:
            rules = self._methods[method] = _MethodRules(self, method)
        if rules.reads_headers:
            return rules.allows(peer, context)
        decision = rules.known.get(peer)
        if decision is None:
            if len(rules.known) >= _REMEMBERED:
                rules.known.clear()
            decision = rules.known[peer] = rules.allows(peer, context)
        return decision


class Authorization:
    """The policy of a server, from a file: read at start-up, then again whenever the file
    changes (checked every `RELOAD_SECONDS`), as A43's file watcher does. A new file that is
    not a valid policy is logged and the last good policy keeps deciding."""

    def __init__(self, path: Path) -> None:
        """OSError or PolicyError when the file is not a readable, valid policy."""
        self.path = path
        self._stamp = _stamp(path)
        self.policy = Policy.load(path)

    def reload(self) -> None:
        try:
            stamp = _stamp(self.path)
            if stamp == self._stamp:
                return
            self._stamp = stamp
            self.policy = Policy.load(self.path)
        except (OSError, PolicyError) as error:
            log.error(
                "authorization policy not reloaded, the last good one stays",
                extra={"policy": str(self.path), "error": str(error)},
            )
            return
        log.info("authorization policy reloaded", extra={"policy": str(self.path)})

    async def watch(self) -> None:
        while True:
            await asyncio.sleep(RELOAD_SECONDS)
            self.reload()

    def refusal(self, method: str, peer: Peer, context: Context) -> str | None:
        """Why `peer` may not make this call (for PERMISSION_DENIED), or None when the
        policy allows it. The runtime asks before every handler (grpckit/calls/guards.py)."""
        if self.policy.allows(method, peer, context):
            return None
        return f"identity {peer.name} may not call {method}"


# How often a policy file is checked for changes: a stat, so cheap; a changed policy
# applies within this long, to calls that start after it.
RELOAD_SECONDS = 5.0


def _stamp(path: Path) -> tuple[int, int, int]:
    status = path.stat()
    return status.st_mtime_ns, status.st_size, status.st_ino
