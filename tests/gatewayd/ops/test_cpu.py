"""`[hub] one_cpu`: the daemon's threads, started before or after, end up on one CPU; a refusal
is logged and changes nothing else. The affinity checks run in child processes: pinning the
test runner itself would slow every later test."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from gatewayd.cli import run
from gatewayd.ops import cpu
from mosquitto import Mosquitto
from polling import wait_until

from integration_support import DaemonProcess, write_config

ALLOWED = os.sched_getaffinity(0)
needs_two_cpus = pytest.mark.skipif(len(ALLOWED) < 2, reason="needs at least two usable CPUs")

CHILD = r"""
import json, os, sys, threading
from gatewayd.ops import cpu

if sys.argv[1] == "one":
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
seen, go, ask = {}, threading.Event(), threading.Event()

def report(name, wait):
    if wait:
        ask.wait()
    seen[name] = sorted(os.sched_getaffinity(0))
    go.set()

before = threading.Thread(target=report, args=("before", True))
before.start()
chosen = cpu.keep_on_one_cpu()
ask.set()
before.join()
after = threading.Thread(target=report, args=("after", False))
after.start()
after.join()
seen["main"] = sorted(os.sched_getaffinity(0))
print(json.dumps({"chosen": chosen, "seen": seen}))
"""


def child(mode: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, mode], capture_output=True, text=True, check=True, timeout=30
    )
    result: dict[str, object] = json.loads(done.stdout)
    return result


@needs_two_cpus
def test_every_thread_started_before_or_after_shares_the_chosen_cpu() -> None:
    result = child("all")
    chosen = result["chosen"]
    assert isinstance(chosen, int)
    assert chosen in ALLOWED
    assert result["seen"] == {"before": [chosen], "after": [chosen], "main": [chosen]}


def test_a_process_allowed_one_cpu_is_left_alone() -> None:
    result = child("one")
    assert result["chosen"] is None
    one = [min(ALLOWED)]
    assert result["seen"] == {"before": one, "after": one, "main": one}


def test_the_current_cpu_is_one_this_process_may_use() -> None:
    assert cpu.current_cpu() in ALLOWED


def test_a_refusal_is_logged_and_nothing_else_happens(monkeypatch: pytest.MonkeyPatch) -> None:
    # A seccomp filter without sched_setaffinity (systemd's `~@resources`) cannot be installed
    # by an unprivileged test here: the refusal it causes is raised in its place.
    def refuse() -> int | None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(cpu, "keep_on_one_cpu", refuse)
    with capture_logs() as logs:
        run._keep_on_one_cpu()
    assert logs == [
        {"event": "one_cpu_refused", "reason": "Operation not permitted", "log_level": "warning"}
    ]


def thread_cpus(pid: int) -> dict[str, str]:
    """Each thread's id and its allowed CPUs (`Cpus_allowed_list`)."""
    found = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        for line in (task / "status").read_text().splitlines():
            if line.startswith("Cpus_allowed_list:"):
                found[task.name] = line.split(":", 1)[1].strip()
    return found


@needs_two_cpus
@pytest.mark.parametrize("one_cpu", [True, False])
async def test_gatewayd_run_keeps_its_threads_on_one_cpu_unless_told_not_to(
    broker: Mosquitto, tmp_path: Path, one_cpu: bool
) -> None:
    config = write_config(tmp_path, broker, {"sim-c": "interval = 0.2"})
    if not one_cpu:
        text = config.read_text()
        config.write_text(text.replace("[hub]\n", "[hub]\none_cpu = false\n", 1))
    daemon = DaemonProcess(config, tmp_path / "log")
    daemon.start()
    assert daemon.process is not None
    pid = daemon.process.pid
    try:
        # A stored reading: the store's writer thread has started (on the first commit).
        await wait_until(lambda: len(daemon.stored()) >= 1, 15, "a stored reading")
        threads = thread_cpus(pid)
    finally:
        assert daemon.terminate() == 0
    cpus = set(threads.values())
    assert len(threads) >= 2
    log = daemon.log_path.read_text()
    if one_cpu:
        (only,) = cpus
        assert only.isdigit(), threads
        assert int(only) in ALLOWED
        assert '"event": "threads_on_one_cpu"' in log
        assert f'"cpu": {only}' in log
    else:
        assert all("-" in c or "," in c for c in cpus), threads  # several CPUs each
        assert "threads_on_one_cpu" not in log
