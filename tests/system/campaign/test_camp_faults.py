"""Fault campaign, the affordable part (the long one is `scripts/soak`; docs/campaigns.md).

100 x `kill -9` of a real `gatewayd run` at random moments, and a simulated hour without broker,
against a real mosquitto and a persistent-session subscriber: nothing that reached the store is
lost, duplicates on the wire are the same reading again, sessions have no holes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from camp_faults import hour_outage, kill_campaign

#: Override for a bigger run in the suite, e.g. GATEWAYD_CAMP_KILLS=300 (the soak does 1000).
KILLS = int(os.environ.get("GATEWAYD_CAMP_KILLS", "100"))


def _show(title: str, summary: dict[str, object]) -> None:
    # Visible with `pytest -s` / `-rP`: the figures docs/campaigns.md quotes.
    print(f"{title}: {json.dumps(summary, sort_keys=True)}")


@pytest.mark.timeout(60 + KILLS)
async def test_kill_9_at_random_moments_loses_nothing(tmp_path: Path) -> None:
    report = await kill_campaign(tmp_path, kills=KILLS, min_gap=0.1, max_gap=0.6)
    _show("kill campaign", report.summary())
    assert report.problems() == [], f"seed {report.seed}: {report.problems()}"
    assert report.kills == KILLS
    # Every restart picked up: the sensors' memory filled what was missed while it was down.
    assert report.wire.backfilled > 0
    assert report.recovery_max_s is not None


@pytest.mark.timeout(90)
async def test_broker_down_for_a_simulated_hour_replays_everything(tmp_path: Path) -> None:
    report = await hour_outage(tmp_path, speed=1800, interval=300, hours=1.0)
    _show("hour outage", report.summary())
    assert report.problems() == [], f"seed {report.seed}: {report.problems()}"
    assert min(report.stored_during_outage.values()) >= 12
    assert report.outage_simulated_s >= 3600
