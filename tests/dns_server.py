"""A DNS server of a test's own on loopback, whose answers the test changes, for clients
whose target is `dns://127.0.0.1:PORT/NAME:PORT` (gRPC's resolver then asks it, not the
host's). Names end in `.test.`; each answers `addresses` (A records), or SERVFAIL while
`failing` is set, as a cluster's DNS does for a Service with no ready pod yet."""

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import cast

import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset

DOMAIN = "test."


@dataclass
class Names(asyncio.DatagramProtocol):
    addresses: list[str] = field(default_factory=lambda: ["127.0.0.1"])
    failing: bool = False
    # Every name asked for.
    asked: set[str] = field(default_factory=set)
    transport: asyncio.DatagramTransport | None = None
    port: int = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A datagram endpoint's transport (not a DatagramTransport subclass on every Python).
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        query = dns.message.from_wire(data)
        answer = dns.message.make_response(query)
        question = query.question[0]
        name = question.name.to_text()
        self.asked.add(name)
        if self.failing:
            answer.set_rcode(dns.rcode.SERVFAIL)
        elif question.rdtype == dns.rdatatype.A and name.endswith(DOMAIN):
            # TTL 0: nothing between the client and this server keeps an old answer.
            answer.answer.append(dns.rrset.from_text(name, 0, "IN", "A", *self.addresses))
        assert self.transport is not None
        self.transport.sendto(answer.to_wire(), addr)

    def target(self, name: str, port: int) -> str:
        return f"dns://127.0.0.1:{self.port}/{name}.{DOMAIN[:-1]}:{port}"


@asynccontextmanager
async def serving_names(**settings: object) -> AsyncIterator[Names]:
    loop = asyncio.get_running_loop()
    transport, names = await loop.create_datagram_endpoint(
        lambda: Names(**settings),  # type: ignore[arg-type]
        local_addr=("127.0.0.1", 0),
    )
    names.port = transport.get_extra_info("sockname")[1]
    try:
        yield names
    finally:
        transport.close()
