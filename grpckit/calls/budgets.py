"""Budgets: how many calls and streams a server serves at once, in all and per client.

A call over a budget is refused at once with RESOURCE_EXHAUSTED, and the message names the
limit and the setting that raises it: it is never queued, because a queue is memory no
budget bounds, and a caller that must wait is better told to back off or go elsewhere.

Unary calls and streams have separate budgets: a stream holds its share for its whole life
(minutes, for a viewer), so a flood of streams must not take the room of short calls. Each
client identity (its certificate's principal, the name the authorization policy matches,
grpckit/calls/authz.py) gets at most a part of each budget, so one greedy certificate cannot
starve the others. Health and reflection are outside every budget: a server busy with a
flood must still say it is alive.

A call is admitted after it has been decoded and before its handler runs, so a refused call
has done no work; what it took is given back however it ends (done, error, cancelled,
deadline).
"""

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import grpc

from grpckit.config import ServerSettings

# Generic only in grpc-stubs, so the alias must stay a string at run time.
Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"


@dataclass
class Limit:
    """A count of something scarce and the most there may be: taking past it fails at once."""

    what: str
    limit: int
    setting: str
    in_use: int = 0

    def take(self) -> bool:
        if self.in_use >= self.limit:
            return False
        self.in_use += 1
        return True

    def give_back(self) -> None:
        self.in_use -= 1

    def refusal(self) -> str:
        return f"{self.what}: {self.in_use} of {self.limit} in use ({self.setting})"


@dataclass
class PerClient:
    """The same limit for every client identity, counted apart. An identity is forgotten at
    zero, so many distinct certificates do not make it grow."""

    what: str
    limit: int
    setting: str
    in_use: dict[str, int] = field(default_factory=dict)

    def take(self, identity: str) -> bool:
        count = self.in_use.get(identity, 0)
        if count >= self.limit:
            return False
        self.in_use[identity] = count + 1
        return True

    def give_back(self, identity: str) -> None:
        count = self.in_use[identity] - 1
        if count:
            self.in_use[identity] = count
        else:
            del self.in_use[identity]

    def refusal(self, identity: str) -> str:
        count = self.in_use.get(identity, 0)
        used = f"{count} of {self.limit} in use ({self.setting})"
        return f"{self.what} of client {identity!r}: {used}"


@dataclass
class StartRate:
    """How often one client identity may start something costly: a token bucket each, of
    `burst` starts refilled at `per_second`. A count at once bounds what is held; this bounds
    the work of starting it again and again (a decoder opened, read once and let go, over
    and over, costs a core with never more than two open). An identity whose bucket is full
    is forgotten, so many distinct certificates do not make it grow."""

    what: str
    per_second: float
    burst: int
    setting: str
    clock: Callable[[], float] = time.monotonic
    # identity -> (tokens, when they were counted)
    _buckets: dict[str, tuple[float, float]] = field(default_factory=dict)

    def _tokens(self, identity: str, now: float) -> float:
        tokens, at = self._buckets.get(identity, (self.burst, now))
        return min(float(self.burst), tokens + (now - at) * self.per_second)

    def allows(self, identity: str) -> bool:
        return self._tokens(identity, self.clock()) >= 1

    def take(self, identity: str) -> bool:
        now = self.clock()
        tokens = self._tokens(identity, now)
        if tokens < 1:
            return False
        self._buckets[identity] = (tokens - 1, now)
        if len(self._buckets) > _FORGET_PAST:
            full = [i for i in self._buckets if self._tokens(i, now) >= self.burst]
            for forgotten in full:
                del self._buckets[forgotten]
        return True

    def refusal(self, identity: str) -> str:
        wait = (1 - self._tokens(identity, self.clock())) / self.per_second
        return (
            f"{self.what} of client {identity!r}: more than {self.per_second:g} started a "
            f"second ({self.setting}); the next in {math.ceil(max(wait, 0) * 1000)} ms"
        )


# Buckets kept before the full ones are swept: a sweep costs one pass, this rarely.
_FORGET_PAST = 1024


class Budget:
    """One kind of thing (calls, streams, decoders): a limit for the server and one per
    client, and optionally how often each client may start one."""

    def __init__(
        self, total: Limit, per_client: PerClient, starts: StartRate | None = None
    ) -> None:
        self.total = total
        self.per_client = per_client
        self.starts = starts

    @classmethod
    def of(
        cls, what: str, limit: int, setting: str, per_client: int, starts: StartRate | None = None
    ) -> "Budget":
        """Settings named `setting` and `setting`_PER_CLIENT."""
        return cls(
            Limit(what, limit, setting),
            PerClient(what, per_client, f"{setting}_PER_CLIENT"),
            starts,
        )

    def refusal(self, identity: str) -> str | None:
        """Why `take` would refuse `identity` now, without taking; None when it would not."""
        if self.per_client.in_use.get(identity, 0) >= self.per_client.limit:
            return self.per_client.refusal(identity)
        if self.total.in_use >= self.total.limit:
            return self.total.refusal()
        if self.starts is not None and not self.starts.allows(identity):
            return self.starts.refusal(identity)
        return None

    def take(self, identity: str) -> str | None:
        """None when admitted (give it back later); otherwise why not, for the caller."""
        if not self.per_client.take(identity):
            return self.per_client.refusal(identity)
        if not self.total.take():
            self.per_client.give_back(identity)
            return self.total.refusal()
        if self.starts is not None and not self.starts.take(identity):
            self.give_back(identity)
            return self.starts.refusal(identity)
        return None

    def give_back(self, identity: str) -> None:
        self.total.give_back()
        self.per_client.give_back(identity)


class CallBudgets:
    """The server's budgets of unary calls and of streams, applied to the services' handlers."""

    def __init__(self, settings: ServerSettings) -> None:
        self.calls = Budget.of(
            "unary calls", settings.max_calls, "MAX_CALLS", settings.max_calls_per_client
        )
        self.streams = Budget.of(
            "streams", settings.max_streams, "MAX_STREAMS", settings.max_streams_per_client
        )

    def of(self, handler: Handler) -> Budget:
        """The budget a call of `handler` takes from: streams for any streaming method."""
        streaming = handler.request_streaming or handler.response_streaming
        return self.streams if streaming else self.calls
