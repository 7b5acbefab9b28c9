"""N worker processes on one port, for when one Python process is the limit.

Each worker is a whole server of its own (event loop, gRPC server, health, caches); the
kernel spreads new connections over them through SO_REUSEPORT, which gRPC sets on Linux.
They are forked before any gRPC object exists, since gRPC's core does not survive a fork.

Trade-offs: connections, not calls, are balanced, so one busy client stays on one worker;
each worker holds its own copy of the data and its own caches (the movie catalogue, soccer's
decoders: viewers of one match on two workers cost two decoders); memory grows with N.
"""

import logging
import os
import signal
import sys
from collections.abc import Callable

from grpckit.telemetry import logs

log = logging.getLogger("grpckit.workers")


def run_workers(count: int, worker: Callable[[], int]) -> int:
    """Run `worker` in `count` forked processes; SIGTERM and SIGINT are passed on to them.

    When one worker exits, the others are stopped too and its exit code is returned, so an
    orchestrator restarts the whole set rather than keep a degraded one.
    """
    children: set[int] = set()

    def forward(signum: int, _frame: object) -> None:
        for pid in children:
            os.kill(pid, signum)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, forward)
    for _ in range(count):
        pid = os.fork()
        if pid == 0:
            for signum in (signal.SIGTERM, signal.SIGINT):
                signal.signal(signum, signal.SIG_DFL)
            code = 1
            try:
                code = worker()
            except BaseException:
                # os._exit below skips Python's own report: without this line, a worker's
                # failure would leave no trace.
                log.critical("worker failed", exc_info=True)
            finally:
                logs.flush()
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        children.add(pid)
    log.info("workers started", extra={"workers": sorted(children)})
    result = 0
    while children:
        pid, status = os.wait()
        children.discard(pid)
        code = os.waitstatus_to_exitcode(status)
        if code != 0 and result == 0:
            result = code if code > 0 else 128 - code
        if children and (code != 0 or result != 0):
            log.error("worker exited; stopping the others", extra={"pid": pid, "code": code})
            forward(signal.SIGTERM, None)
    return result
