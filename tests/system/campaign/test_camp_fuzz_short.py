"""Fuzz campaign, the short version for the normal suite (the long one is `scripts/fuzz`).

Every target of `camp_fuzz_targets` — each parser, decoder and sans-I/O session of protocols/ —
gets a few thousand generated and mutated inputs (fixed seed, so a failure reproduces with
`scripts/fuzz --seed 20240502 --replay TARGET:INDEX`): only `ProtocolError` comes out, round
trips hold, no input takes a second. Plus checks that the engine itself catches what it must.
"""

from __future__ import annotations

import os
import pkgutil
import random
import signal
import time
from collections.abc import Iterator

import pytest
from camp_fuzz import CHUNK, campaign, report, run_chunk
from camp_fuzz_targets import TARGETS, Target

import protocols
from protocols.errors import ProtocolError

SEED = int(os.environ.get("GATEWAYD_FUZZ_SEED", "20240502"))
#: Inputs per target at weight 1 (sessions weigh 0.6: whole connections per input).
INPUTS = int(os.environ.get("GATEWAYD_FUZZ_INPUTS", "2000"))

#: Crashes found by the campaign and reported, not yet fixed in protocols/ (target, exception).
#: Each still fails its target's test as xfail; remove the entry when the fix lands.
KNOWN_CRASHES: set[tuple[str, str]] = set()


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_target_only_raises_protocol_errors(name: str) -> None:
    count = max(200, int(INPUTS * TARGETS[name].weight))
    stats, findings = run_chunk(name, SEED, 0, count, time_limit=1.0)
    assert stats.inputs == count
    assert stats.accepted > 0, f"{name}: no input was ever accepted: the generator is useless"
    known = [f for f in findings if (f.target, f.error.split(":")[0]) in KNOWN_CRASHES]
    unknown = [f for f in findings if f not in known]
    assert not unknown, "\n\n".join(
        f"{f.kind} x{f.count}: {f.error} at {f.where}\ninput #{f.index}: {f.input[:300]}\n"
        f"minimal: {f.minimal}\n{f.trace}"
        for f in unknown
    )
    if known:
        pytest.xfail(f"known bug, reported: {known[0].error} at {known[0].where}")


def test_every_protocols_module_is_fuzzed() -> None:
    """A new module of protocols/ needs targets in camp_fuzz_targets (docs/campaigns.md)."""
    # Modules without a parser of their own: errors, UUID constants, session requests/events, and
    # the construct boundary and collector base that every parser and session goes through.
    no_parser = {"errors", "codec", "gatt.uuids", "gatt.session", "gatt.collector"}
    no_parser |= {"cgms.uuids", "cgms.events", "glucose.uuids"}
    walked = pkgutil.walk_packages(protocols.__path__, "protocols.")
    modules = {m.name.removeprefix("protocols.") for m in walked if not m.ispkg} - no_parser
    fuzzed = {t.module.removeprefix("protocols.") for t in TARGETS.values()}
    assert modules - fuzzed == set()


def test_the_crash_the_campaign_found_stays_fixed() -> None:
    """`CgmMeasurement.parse(b"\x01")` raised IndexError (Size 1 == len passed the check, then
    the flags were read at data[1]); found by the 10 M-input campaign, fixed in protocols/cgms."""
    from protocols.cgms.measurement import CgmMeasurement

    for record in (b"\x01", b"\x02\x00", b"\x05\x00\x00\x00\x00"):
        with pytest.raises(ProtocolError):
            CgmMeasurement.parse(record)


# -- the engine catches what it must ---------------------------------------------------------


@pytest.fixture
def fake_targets() -> Iterator[dict[str, Target]]:
    added: dict[str, Target] = {}
    yield added
    for name in added:
        TARGETS.pop(name, None)


def _add(added: dict[str, Target], target: Target) -> None:
    added[target.name] = target
    TARGETS[target.name] = target


def _index_error_on_ff(data: bytes) -> None:
    if b"\xff" in data:
        raise IndexError("boom")
    raise ProtocolError("fine")


def _loops_on_7(data: bytes) -> None:
    while data[:1] == b"\x07":
        pass
    raise ProtocolError("fine")


def test_crash_is_found_and_minimised(fake_targets: dict[str, Target]) -> None:
    _add(
        fake_targets,
        Target(
            "fake.crash",
            "fake",
            lambda rng: rng.randbytes(rng.randrange(1, 30)),
            _index_error_on_ff,
        ),
    )
    stats, findings = run_chunk("fake.crash", 1, 0, 500)
    assert stats.crashes > 0
    assert stats.rejected > 0
    (finding,) = findings
    assert finding.kind == "crash"
    assert finding.error.startswith("IndexError")
    assert finding.minimal == "ff"


def test_hang_is_cut_by_the_time_limit(fake_targets: dict[str, Target]) -> None:
    _add(
        fake_targets,
        Target("fake.hang", "fake", lambda rng: bytes([rng.choice((7, 8))]), _loops_on_7),
    )
    outer = signal.getitimer(signal.ITIMER_REAL)[0]  # pytest-timeout's alarm, if any
    began = time.monotonic()
    stats, findings = run_chunk("fake.hang", 1, 0, 6, time_limit=0.2)
    assert stats.hangs >= 1
    assert stats.hangs + stats.rejected == 6
    assert findings[0].kind == "hang"
    assert time.monotonic() - began < 0.2 * stats.hangs + 2
    assert (signal.getitimer(signal.ITIMER_REAL)[0] > 0) == (outer > 0)  # given back


def _stuck_in_c(data: bytes) -> None:
    if data == b"\x07":
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})  # as a C loop would: deaf
        while True:
            time.sleep(0.05)
    raise ProtocolError("fine")


def test_parallel_campaign_counts_and_survives_a_stuck_worker(
    fake_targets: dict[str, Target],
) -> None:
    # Only the fork start method sees targets added at run time (the campaign uses fork).
    _add(
        fake_targets,
        Target("fake.stuck", "fake", lambda rng: bytes([rng.randrange(100)]), _stuck_in_c),
    )
    names = ["fake.stuck", "sfloat.parse_sfloat"]
    result = campaign(
        300, seed=6, workers=2, time_limit=0.2, hard_limit=1.0, names=names, progress=False
    )
    assert result.per_target["sfloat.parse_sfloat"].inputs == 150
    stuck = result.per_target["fake.stuck"]
    assert stuck.inputs == 150  # the killed worker's chunk went on in a fresh one
    expected = sum(1 for i in range(150) if random.Random(f"6:fake.stuck:{i}").randrange(100) == 7)
    assert stuck.hangs == expected == 2
    assert "fake.stuck" in report(result)
    assert CHUNK >= 150  # one chunk per target here
