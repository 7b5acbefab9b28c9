"""`make rotation-test`: the stack at 2-minute leaves (CERT_LIFETIME=2m, renewed every
minute) under load from the host through the edge for ROTATION_SECONDS (600). Every server
and the edge must present at least three new certificates as the test reads them, no call
may fail, no container may restart, and Envoy's ssl_context_update_by_sds must rise.
Prints the figures as one JSON line."""

import asyncio
import json
import os

import pytest

from tests.stack_certs import StackLoad, edge_serial, sds_updates, server_probe, started

pytestmark = pytest.mark.rotation

SECONDS = float(os.environ.get("ROTATION_SECONDS", "600"))
PEERS = ["cheese", "movie", "soccer", "edge"]


async def test_ten_minutes_of_two_minute_leaves_fail_no_call_and_restart_nothing() -> None:
    loop = asyncio.get_running_loop()
    before_started = started([*PEERS, "renewer"])
    before_counter = sds_updates()
    seen: dict[str, list[str]] = {peer: [] for peer in PEERS}
    probe_errors: list[str] = []
    samples = 0
    load = StackLoad(callers=2, limit=5_000_000)
    try:
        async with server_probe() as probe:
            end = loop.time() + SECONDS
            while loop.time() < end:
                sample = {**await probe.serials(), "edge": await asyncio.to_thread(edge_serial)}
                samples += 1
                for peer, serial in sample.items():
                    if serial.startswith("error"):
                        probe_errors.append(f"{peer}: {serial}")
                    elif not seen[peer] or seen[peer][-1] != serial:
                        seen[peer].append(serial)
                # Paced by the load itself: the next look after a hundred more calls.
                await load.calls_done(100)
    finally:
        await load.stop()
    after_counter = sds_updates()
    updates_before, updates_after = sum(before_counter.values()), sum(after_counter.values())
    figures = {
        "seconds": SECONDS,
        "calls_made": load.made,
        "calls_ok": load.ok,
        "calls_failed": len(load.failed),
        "frames_watched": load.frames,
        "first_failures": load.failed[:5],
        "samples": samples,
        "rotations_seen": {peer: len(serials) - 1 for peer, serials in seen.items()},
        "host_channel_renewals": load.renewals(),
        "sds_updates_before": updates_before,
        "sds_updates_after": updates_after,
        "sds_updates_by_name": {
            name: [before_counter.get(name, 0), value] for name, value in after_counter.items()
        },
        "probe_errors": probe_errors[:5],
        "restarts": started([*PEERS, "renewer"]) != before_started,
    }
    print("rotation-test figures:", json.dumps(figures))
    assert load.failed == []
    assert probe_errors == []
    assert all(len(serials) - 1 >= 3 for serials in seen.values()), seen
    assert updates_after > updates_before + 3
    assert started([*PEERS, "renewer"]) == before_started
