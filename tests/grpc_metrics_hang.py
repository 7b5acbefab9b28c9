"""A process that hangs at once if gRPC's metrics plugin deadlocks (grpckit/telemetry/metrics.py):
an echo server with the plugin on, and calls to it from the same process, each held by a
reference cycle so that only a collection frees it. The interpreter is told to switch
threads as often as it can, so the export thread loses the GIL wherever it may.

`python -m tests.grpc_metrics_hang PKI CALLS` prints "calls N" and exits 0, or, stuck,
dumps every thread's stack and exits 1 after HANG_SECONDS.
"""

import asyncio
import faulthandler
import sys
from pathlib import Path
from typing import Any

from grpckit.client.channel import open_channel
from grpckit.lifecycle.server import running
from grpckit.telemetry import metrics
from tests import echo
from tests.conftest import client_tls, server_settings
from tests.echo import Echo

HANG_SECONDS = 60
BATCH = 50


async def held(call: Any, text: str) -> str:
    """`call(text)`, its call object in a reference cycle until it is collected."""
    cycle: list[Any] = [call(text, timeout=10)]
    cycle.append(cycle)
    answer: str = await cycle[0]
    return answer


async def calls(pki: Path, count: int) -> int:
    settings = server_settings(pki, "cheese", policy=echo.POLICY)
    made = 0
    async with running(settings, [Echo()]) as server:
        while made < count:
            channel = open_channel(f"localhost:{server.port}", client_tls(pki))
            call = echo.echo(channel)
            answers = await asyncio.gather(*(held(call, str(n)) for n in range(BATCH)))
            assert answers == [str(n) for n in range(BATCH)]
            await channel.close(None)
            made += BATCH
    return made


def main() -> None:
    pki, count = Path(sys.argv[1]), int(sys.argv[2])
    faulthandler.dump_traceback_later(HANG_SECONDS, exit=True)
    sys.setswitchinterval(1e-6)
    metrics.install("hang", "test", grpc_plugin=True)
    print("calls", asyncio.run(calls(pki, count)), flush=True)


if __name__ == "__main__":
    main()
