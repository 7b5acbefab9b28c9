"""Certificate renewal on the running stack (issue 23): the renewer is healthy, and a
renewal forced through it is picked up by every server and by the edge, both ways, without
a restart and without failing a call (the serial each presents changes; Envoy's
ssl_context_update_by_sds counter rises)."""

import asyncio
import time

import pytest

from tests.e2e.test_compose import compose, container_health
from tests.stack_certs import StackLoad, edge_serial, sds_updates, server_probe, started

pytestmark = pytest.mark.e2e

PEERS = ["cheese", "movie", "soccer", "edge"]


def test_the_renewer_is_healthy() -> None:
    assert container_health("renewer") == "healthy"
    assert compose("exec", "-T", "renewer", "renew.sh", "--healthy").returncode == 0


async def test_a_forced_renewal_is_picked_up_by_the_servers_and_the_edge_without_a_failed_call() -> (
    None
):
    before_started = started(PEERS)
    before_counter = sum(sds_updates().values())
    async with server_probe() as probe:
        servers_before = await probe.serials()
        edge_before = await asyncio.to_thread(edge_serial)
        assert not any(s.startswith("error") for s in [*servers_before.values(), edge_before]), (
            servers_before,
            edge_before,
        )
        load = StackLoad(callers=2, limit=20_000)
        try:
            compose("exec", "-T", "-e", "FORCE_RENEW=1", "renewer", "distribute.sh")
            # Servers take the new files on their next new connection; the probe makes one.
            deadline = time.monotonic() + 60
            while True:
                servers_now, edge_now = await probe.serials(), await asyncio.to_thread(edge_serial)
                counter = sum(sds_updates().values())
                changed = all(servers_now[s] != servers_before[s] for s in servers_before)
                edge_renewed = edge_now != edge_before and not edge_now.startswith("error")
                if changed and edge_renewed and counter > before_counter:
                    break
                assert time.monotonic() < deadline, (servers_now, edge_now, counter)
                await load.calls_done(10)
            # The host's channels take the renewed client certificate, and calls go on.
            deadline = time.monotonic() + 30
            while load.renewals() < 1:
                assert time.monotonic() < deadline, (load.renewals(), load.ok)
                await load.calls_done(10)
            await load.calls_done(30)
        finally:
            await load.stop()
    assert load.failed == []
    assert started(PEERS) == before_started
    print(f"renewal: {load.made} calls, {len(load.failed)} failed; sds updates "
          f"{before_counter} -> {counter}; edge {edge_before} -> {edge_now}")  # fmt: skip
