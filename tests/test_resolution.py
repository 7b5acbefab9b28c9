"""A client reaches replicas that replaced every one it knew, within a call's deadline.

On Kubernetes a rollout of a one-replica Deployment (or the last old pod of several going)
leaves a client with no address that still serves: it learns the new pods' addresses only
by resolving the Service's name again. A DNS server of the test's own stands in for the
cluster's, and two loopback addresses for the old and the new pod.
"""

import asyncio
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from api import cheese_pb2, cheese_pb2_grpc
from cheese.server import Cheese, CheeseSettings
from client.common import served_by
from grpckit.client.channel import ClientTls, RenewingChannel, open_channel
from grpckit.lifecycle.server import Server, running
from tests.conftest import free_port, server_settings
from tests.dns_server import serving_names

OLD, NEW = "127.0.0.2", "127.0.0.3"
# Well under the 30 s gRPC's resolver would otherwise wait between two resolutions.
DEADLINE = 5.0


async def order(stub: cheese_pb2_grpc.CheeseServiceStub) -> str:
    # The stubs type the call as its response; it is an aio call.
    call: Any = stub.Order(cheese_pb2.CheeseRequest(type=cheese_pb2.BRIE), timeout=DEADLINE)
    await call
    return served_by(await call.trailing_metadata())


async def test_a_client_reaches_the_new_replica_once_the_old_one_is_gone(pki: Path) -> None:
    port = free_port()
    settings = replace(server_settings(pki, "cheese"), port=port)
    tls = ClientTls(pki / "ca.crt", pki / "client.crt", pki / "client.key", "localhost")
    async with serving_names(addresses=[OLD]) as names:
        old = Server(replace(settings, host=OLD, replica="old"), [Cheese(CheeseSettings(0.0))])
        await old.start()
        async with open_channel(names.target("cheese", port), tls) as channel:
            stub = cheese_pb2_grpc.CheeseServiceStub(channel)
            assert await order(stub) == "old"
            async with running(replace(settings, host=NEW, replica="new"),
                               [Cheese(CheeseSettings(0.0))]):  # fmt: skip
                names.addresses = [NEW]
                await old.stop()
                assert await order(stub) == "new"


async def test_a_client_finds_a_replica_started_beside_the_one_it_knows_before_that_one_drains(
    pki: Path,
) -> None:
    """A rolling upgrade of one replica: the new one starts beside the old, then the old says
    NOT_SERVING and drains. gRPC alone would learn of the new one only when the old one's
    connection closes, after the drain, and calls meanwhile would wait; the channel looks
    the name up again each second and moves its calls to a channel that knows both."""
    port = free_port()
    settings = replace(server_settings(pki, "cheese"), port=port)
    tls = ClientTls(pki / "ca.crt", pki / "client.crt", pki / "client.key", "localhost")
    async with serving_names(addresses=[OLD]) as names:
        old = Server(
            replace(settings, host=OLD, replica="old", drain=3.0), [Cheese(CheeseSettings(0.0))]
        )
        await old.start()
        channel = open_channel(names.target("cheese", port), tls, look_up=lambda: names.addresses)
        async with channel:
            stub = cheese_pb2_grpc.CheeseServiceStub(channel)
            assert await order(stub) == "old"
            async with running(replace(settings, host=NEW, replica="new"),
                               [Cheese(CheeseSettings(0.0))]):  # fmt: skip
                names.addresses = [OLD, NEW]
                seen: set[str] = set()
                deadline = time.monotonic() + DEADLINE
                while "new" not in seen:
                    assert time.monotonic() < deadline, seen
                    seen.add(await order(stub))
                # The old one drains (NOT_SERVING, then serving on for its drain): every call
                # goes to the new one at once, none waits for the old one's connection to end.
                stopping = asyncio.ensure_future(old.stop())
                answers = []
                for _ in range(50):
                    started = time.monotonic()
                    answers.append(await order(stub))
                    assert time.monotonic() - started < 1.0, answers
                await stopping
            assert isinstance(channel, RenewingChannel) and channel.new_addresses == 1
            assert answers[-10:] == ["new"] * 10
