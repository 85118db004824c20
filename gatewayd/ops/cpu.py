"""Keep the daemon's threads on one CPU (`[hub] one_cpu`, on by default).

The daemon's threads take turns: the event loop, the store's writer thread and the default
executor run Python under one interpreter lock, so at most one of them runs at a time. Spread
over several CPUs, every hand-off between them (a reading to the writer, its commit back to the
loop, the lock itself) wakes another core; on one CPU the same hand-off is a switch between
threads. Measured with `bench/live_path.py`, side by side: 0.92x the CPU per reading with
`synchronous = "full"` and 0.94x with `"normal"` (docs/operations.md).

The CPU is the one the daemon starts on (among those it may use), so that several daemons on
one machine spread as the kernel placed them. A CPU kept busy by something else then delays the
daemon rather than the daemon moving: set `one_cpu = false` on a machine that runs heavy work
beside the hub.
"""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path


def current_cpu() -> int | None:
    """The CPU the calling thread runs on now (`/proc/thread-self/stat`), None when unknown."""
    try:
        stat = Path("/proc/thread-self/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    # Field 39 of proc(5), "processor"; `fields` starts at field 3 (state).
    return int(fields[36]) if len(fields) > 36 and fields[36].isdigit() else None


def keep_on_one_cpu() -> int | None:
    """Restrict every thread of this process, and every thread started later, to the CPU the
    calling thread runs on now (or, unknown, the first it may use). That CPU, or None when
    there is nothing to restrict (one CPU allowed, or no affinity on this system).

    Raises `OSError` when the system refuses (e.g. a seccomp filter without
    `sched_setaffinity`): the daemon then runs as before.
    """
    if not hasattr(os, "sched_setaffinity"):
        return None
    allowed = os.sched_getaffinity(0)
    if len(allowed) <= 1:
        return None
    now = current_cpu()
    cpu = now if now is not None and now in allowed else min(allowed)
    os.sched_setaffinity(0, {cpu})  # this thread, and the threads it starts from now on
    try:
        threads = [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:
        threads = []
    for tid in threads:  # any thread started before (normally none)
        if tid != threading.get_native_id():
            with contextlib.suppress(ProcessLookupError):  # it ended meanwhile
                os.sched_setaffinity(tid, {cpu})
    return cpu
