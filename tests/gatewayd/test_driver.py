"""The public driver API's shared policies: damaged records and the device clock's offset."""

from __future__ import annotations

import structlog
from structlog.testing import capture_logs

from gatewayd.driver import DAMAGED_RETRIES, DeviceContext, DeviceFindings, DeviceMatch


def context(findings: DeviceFindings | None = None) -> DeviceContext[None]:
    return DeviceContext(
        device_id="cgm-1",
        driver="test",
        options=None,
        resume=None,
        log=structlog.get_logger(),
        findings=findings if findings is not None else DeviceFindings(),
    )


def test_a_damaged_record_is_asked_for_again_a_bounded_number_of_times() -> None:
    changes: list[int] = []
    findings = DeviceFindings()
    findings.changed = lambda: changes.append(findings.unreadable)
    ctx = context(findings)
    with capture_logs() as logs:
        answers = [
            ctx.record_damaged(("s1", 40), b"\x0c\x01", position="offset 40", reason="bad crc")
            for _ in range(DAMAGED_RETRIES + 3)
        ]
    assert answers == [True] * DAMAGED_RETRIES + [False, False, False]
    assert findings.unreadable == 1
    assert changes == [1]  # republished once, when it was passed over
    unreadable = [e for e in logs if e["event"] == "record_unreadable"]
    assert len(unreadable) == 1
    assert unreadable[0]["hex"] == "0c01"
    assert unreadable[0]["position"] == "offset 40"
    assert unreadable[0]["reason"] == "bad crc"
    assert unreadable[0]["log_level"] == "error"
    # every damaged arrival is also a dropped packet
    assert sum(ctx.dropped.values()) == DAMAGED_RETRIES + 3


def test_findings_outlive_the_connection() -> None:
    findings = DeviceFindings()
    first = context(findings)
    for _ in range(DAMAGED_RETRIES):
        assert first.record_damaged(7, b"x", position="page 7", reason="bad crc")
    second = context(findings)  # the next connection of the same device
    assert not second.record_damaged(7, b"x", position="page 7", reason="bad crc")
    assert findings.unreadable == 1


def test_an_intact_copy_resets_the_attempts() -> None:
    ctx = context()
    assert ctx.record_damaged("k", b"x", position="p", reason="r")
    ctx.record_recovered("k")
    for _ in range(DAMAGED_RETRIES):
        assert ctx.record_damaged("k", b"x", position="p", reason="r")
    assert ctx.findings.unreadable == 0


def test_clock_offset_is_republished_only_when_it_moves_a_second() -> None:
    changes: list[float | None] = []
    findings = DeviceFindings()
    findings.changed = lambda: changes.append(findings.clock_offset_s)
    ctx = context(findings)
    ctx.set_clock_offset(3600.04)
    ctx.set_clock_offset(3600.5)
    ctx.set_clock_offset(3602.0)
    ctx.set_clock_offset(None)
    assert changes == [3600.0, 3602.0, None]
    assert findings.clock_offset_s is None


def test_device_match_recognises_service_uuids_names_and_usb_ids() -> None:
    cgms = "0000181f-0000-1000-8000-00805f9b34fb"
    match = DeviceMatch(
        ble_service_uuids=("181F",),
        ble_name_pattern=r"Dexcom[0-9A-Z]{2}",
        ble_name_prefixes=("meter+",),
        usb_vid_pid=((0x22A3, 0x0047),),
    )
    assert match.matches_ble(None, [cgms.upper()])
    assert match.matches_ble("Dexcom8G", [])
    assert not match.matches_ble("Dexcom8G-phone", [])  # the pattern is the whole name
    assert match.matches_ble("meter+06543210", [])
    assert not match.matches_ble("Heart Rate", ["0000180d-0000-1000-8000-00805f9b34fb"])
    assert match.matches_usb(0x22A3, 0x0047)
    assert not match.matches_usb(0x22A3, 0x0048)
    assert not match.matches_usb(None, None)
    assert not DeviceMatch().matches_ble("anything", [cgms])
