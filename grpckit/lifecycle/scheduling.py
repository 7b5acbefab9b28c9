"""gRPC's own threads yield the CPU to the event loop (GRPC_THREAD_POLICY, grpckit/config.py).

grpc.aio does a call's I/O in gRPC's threads (the event engine's, which read, decrypt and
write) and hands every completion to the event loop through its poller thread, which wakes
for each one: about six times a unary call. Linux lets a woken thread of the normal policy
preempt the one running, so on a CPU that the loop shares with them each completion costs
two context switches: cheese `Order` at c=50 on one CPU, the loop was preempted six times a
call and the kernel's share of the server's CPU was about half.

Under SCHED_BATCH those threads keep their fair share of the CPU but do not preempt when
they wake: they run when the loop waits, and then hand over many completions at once.
grpc.aio alone (bench/floor_servers.py) then answered about a third more calls per CPU-second
at c=50 and a tenth more at c=1 (docs/performance.md has the figures and their command). The
loop's own thread keeps the normal policy, so it still preempts other processes' threads
when a call arrives, and threads that the runtime or a service starts (the log writer,
decoders) keep theirs. Lowering a thread's own policy needs no privilege.

gRPC starts threads as it needs them, so they are looked for again every few seconds.
"""

import asyncio
import logging
import os
import threading
from pathlib import Path

from grpckit.config import GrpcThreadPolicy

log = logging.getLogger("grpckit.scheduling")

# The names gRPC 1.85's core gives the threads that carry calls (as /proc shows them, cut
# to 15 characters): the event engine's workers, the pool's lifeguard that starts more of
# them (threads inherit their creator's policy), and the timer thread.
GRPC_THREADS = frozenset({"event_engine", "lifeguard", "grpc_global_tim"})
# grpc.aio's poller is a Python thread, named by threading after its target.
_POLLER = "(_poll_wrapper)"
RESCAN_SECONDS = 2.0

_POLICIES = {GrpcThreadPolicy.BATCH: os.SCHED_BATCH, GrpcThreadPolicy.NORMAL: os.SCHED_OTHER}


def grpc_threads(loop_thread: int) -> set[int]:
    """The ids of this process's gRPC threads, the loop's own thread excepted."""
    pollers = {
        thread.native_id
        for thread in threading.enumerate()
        if thread.name.endswith(_POLLER) and thread.native_id is not None
    }
    found = set()
    for task in Path("/proc/self/task").iterdir():
        tid = int(task.name)
        if tid == loop_thread:
            continue
        try:
            name = (task / "comm").read_text().rstrip("\n")
        except OSError:  # the thread ended meanwhile
            continue
        if name in GRPC_THREADS or tid in pollers:
            found.add(tid)
    return found


def apply(policy: GrpcThreadPolicy, loop_thread: int) -> None:
    """`policy` on every gRPC thread that does not have it yet. Each scan asks every thread
    afresh: a thread id gRPC reuses for a new thread then gets the policy too."""
    wanted = _POLICIES[policy]
    for tid in grpc_threads(loop_thread):
        try:
            if os.sched_getscheduler(tid) != wanted:
                os.sched_setscheduler(tid, wanted, os.sched_param(0))
        except ProcessLookupError:  # the thread ended meanwhile
            continue


async def keep(policy: GrpcThreadPolicy) -> None:
    """`policy` on gRPC's threads, now and on those it starts later, for as long as the
    server runs (on the event loop, whose thread is the one left alone)."""
    loop_thread = threading.get_native_id()
    while True:
        try:
            apply(policy, loop_thread)
        except PermissionError as error:  # a seccomp profile that forbids it
            log.warning("cannot set gRPC's threads' policy", extra={"error": str(error)})
            return
        await asyncio.sleep(RESCAN_SECONDS)
