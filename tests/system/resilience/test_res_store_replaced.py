"""The store file deleted under the running daemon (issue 10.4): noticed by its identity
(st_dev/st_ino, checked at most once a second on the live path, and at stop), logged at error
level, and written back from the still-open database, so history, outbox and resume point
survive the next restart."""

from __future__ import annotations

from pathlib import Path

import pytest
from res_support import make_plan, new_hub, reading_at, started
from structlog.testing import capture_logs

from gatewayd.daemon import Daemon
from mosquitto import Mosquitto
from polling import wait_until
from scripted_driver import scripts
from subscriber import Subscriber

pytestmark = pytest.mark.timeout(40)


def remove_store_files(path: Path) -> None:
    """`rm gatewayd.db*` while the daemon runs."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


async def test_store_deleted_under_the_daemon_keeps_history_and_resume_point(
    broker: Mosquitto, tmp_path: Path
) -> None:
    hub = new_hub()
    path = tmp_path / "gatewayd.db"
    plan = make_plan(path, broker, hub, {"cgm-1": "SN-DEL"})
    feed = scripts(plan)["cgm-1"]
    with capture_logs() as logs:
        daemon = Daemon(plan)
        device = daemon.supervisor.devices[0]
        async with Subscriber(broker, [f"gatewayd/{hub}/+/reading"]) as sub, started(daemon):
            for seq in range(10):
                if seq == 5:
                    remove_store_files(path)
                feed.put(reading_at(seq))
                await wait_until(lambda n=seq + 1: device.received == n, 5, f"reading {seq}")
            messages = await sub.wait_for(lambda m: len(m) >= 10)
            await wait_until(lambda: daemon.store.outbox_depth() == 0, 5, "outbox drained")
    assert sorted({m.json()["seq"] for m in messages}) == list(range(10))
    (event,) = [e for e in logs if e["event"] == "store_file_replaced"]
    assert (event["found"], event["log_level"]) == ("deleted", "error")

    restarted = Daemon(plan)  # as after a restart: the file on disk is all there is
    try:
        assert restarted.store.count() == 10
        resume = restarted.store.resume_point("cgm-1")
        assert resume is not None
        assert (resume.serial, resume.seq) == ("SN-DEL", 9)  # the sensor backfills from here
        assert restarted.store.outbox_depth() == 0
    finally:
        restarted.store.close()
