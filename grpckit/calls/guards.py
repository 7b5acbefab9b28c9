"""What a call to one method must pass before its handler runs, and give back after it:
authorization (grpckit/calls/authz.py), then budgets (grpckit/calls/budgets.py).

One `Guard` per method, used inline by the runtime's one wrapper per call
(grpckit/calls/interceptors.py), not as a coroutine wrapped around the handler per guard: each
layer was a coroutine created, awaited and unwound per call, and each guard read the
caller's certificate itself. `admit` is given the caller, read once per call
(grpckit/calls/callers.py), for both, and is synchronous: an admitted call awaits nothing more than
its handler.

The caller is read from the call, never remembered per connection: the only cheap key for a
connection is its peer address, which a later connection (through a proxy, many clients
share one address) can reuse with another certificate, and `peer_identities` names the
subject alternative names without saying which are URIs and which DNS names, nor the
subject, all of which A43 principals are matched against.
"""

from typing import Any

import grpc
from grpc.aio import ServicerContext

from grpckit.calls.authz import Authorization, Peer
from grpckit.calls.budgets import Budget
from grpckit.telemetry import metrics

Context = ServicerContext[Any, Any]
Refusal = tuple[grpc.StatusCode, str]


class Guard:
    """Authorization before budgets, so a call the policy refuses spends no budget."""

    __slots__ = ("_authorization", "_budget", "_denied", "_exhausted", "_method")

    def __init__(
        self, method: str, authorization: Authorization | None, budget: Budget | None
    ) -> None:
        self._method = method
        # Read at each call, not kept here: a reload replaces the policy.
        self._authorization = authorization
        self._budget = budget
        # grpckit_refusals_total's labels; grpc_method named as gRPC's own metrics name it.
        name = method.lstrip("/")
        self._denied = {"reason": "authz", "grpc_method": name}
        self._exhausted = {"reason": "budget", "grpc_method": name}

    def admit(self, context: Context, peer: Peer) -> tuple[str | None, Refusal | None]:
        """(the identity to `give_back` with, or None when nothing was taken; None) when the
        call from `peer` may go on, (None, the code and message to end it with) when it may
        not."""
        if self._authorization is not None:
            denied = self._authorization.refusal(self._method, peer, context)
            if denied is not None:
                metrics.refusals.add(1, self._denied)
                return None, (grpc.StatusCode.PERMISSION_DENIED, denied)
        if self._budget is None:
            return None, None
        identity = peer.name
        refused = self._budget.take(identity)
        if refused is not None:
            metrics.refusals.add(1, self._exhausted)
            return None, (grpc.StatusCode.RESOURCE_EXHAUSTED, refused)
        return identity, None

    def give_back(self, identity: str) -> None:
        """What `admit` took for `identity`; called however the call ends."""
        if self._budget is not None:
            self._budget.give_back(identity)
