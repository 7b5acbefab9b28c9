"""gRPC's threads under the policy GRPC_THREAD_POLICY names, the event loop's and everyone
else's left alone (grpckit/lifecycle/scheduling.py)."""

import asyncio
import os
import threading
from dataclasses import replace
from pathlib import Path

from api import cheese_pb2, cheese_pb2_grpc
from cheese.server import Cheese, CheeseSettings
from grpckit.config import GrpcThreadPolicy
from grpckit.lifecycle import scheduling
from grpckit.lifecycle.server import running
from tests.conftest import Connect, client_tls, eventually, server_settings


def policies() -> dict[int, int]:
    """Each gRPC thread's scheduling policy, by id."""
    return {
        tid: os.sched_getscheduler(tid)
        for tid in scheduling.grpc_threads(threading.get_native_id())
    }


async def test_grpc_threads_take_the_policy_set_and_nobody_else_does(
    pki: Path, connect: Connect
) -> None:
    stop = threading.Event()
    bystander = threading.Thread(target=stop.wait)
    bystander.start()
    try:
        for policy, expected in (
            (GrpcThreadPolicy.BATCH, os.SCHED_BATCH),
            (GrpcThreadPolicy.NORMAL, os.SCHED_OTHER),
        ):
            settings = replace(server_settings(pki, "cheese"), grpc_thread_policy=policy)
            async with running(settings, [Cheese(CheeseSettings(0.0))]) as server:
                stub = cheese_pb2_grpc.CheeseServiceStub(connect(server.port, client_tls(pki)))
                await stub.Order(cheese_pb2.CheeseRequest(), timeout=5)

                async def taken(expected: int = expected) -> None:
                    found = policies()
                    # The event engine's workers and grpc.aio's poller, at least.
                    assert len(found) >= 2, found
                    assert set(found.values()) == {expected}, found

                await eventually(taken)
            assert os.sched_getscheduler(threading.get_native_id()) == os.SCHED_OTHER
            assert bystander.native_id is not None
            assert os.sched_getscheduler(bystander.native_id) == os.SCHED_OTHER
    finally:
        stop.set()
        await asyncio.to_thread(bystander.join)
