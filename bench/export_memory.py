"""Export footprint: peak memory and time of `gatewayd export` over 90 days of 2 devices.

A store with 90 days of readings every 5 minutes from 2 devices (51,840 readings, the
`outbox_drain` generator) in a temp folder; `gatewayd export --format fhir|csv|pdf` of one
device over the 90 days runs as a subprocess (the venv's Python, `-m gatewayd`), writing to a file.
Measured per run: peak resident memory (VmHWM of /proc/self/status, read by the process as it
ends: `ru_maxrss` would report the forking parent's size, which the child inherits), CPU time
(user + system, from `os.wait4`) and wall time.

Baseline, in the same run: a bare Python process that imports sqlite3 and json, reads the same
device's rows of the store in order and writes them to a file one at a time: the floor of any
streaming export in Python. Every round runs the baseline and both exports (the order rotating);
reported are the medians of the per-round ratios to the baseline, and the absolute medians.

Target: peak RSS <= 64 MiB for the streamed exports (FHIR, CSV); the AGP PDF is reported beside
them (it holds the readings to draw them, and matplotlib alone takes ~110 MiB).
Run: `.venv/bin/python bench/export_memory.py` (or `scripts/bench export_memory`).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from _common import result_header, write_result
from outbox_drain import build_template, make_readings

NAME = "export_memory"
TARGET_PEAK_MIB = 64.0
DAYS = 90
DEVICES = 2
READINGS_PER_DAY = 288
VARIANTS = ("baseline", "fhir", "csv", "pdf")
#: The streamed formats, which the memory target is for; the AGP (pdf) is information: it
#: holds the period's readings, and matplotlib alone takes ~110 MiB.
STREAMED = ("fhir", "csv")

#: The floor: stream the device's stored records to a file with nothing but the stdlib.
BASELINE_CODE = """
import json, sqlite3, sys
db = sqlite3.connect(sys.argv[1])
with open(sys.argv[3], "w") as out:
    for (record,) in db.execute(
        "SELECT record FROM readings WHERE device = ? ORDER BY time_ms, rowid", (sys.argv[2],)
    ):
        out.write(json.dumps(json.loads(record)) + "\\n")
"""
#: Runs the rest of its argv as `python -m MODULE ...` or `python -c CODE ...` would, then
#: writes the process's peak RSS (VmHWM, KiB) to the file named first.
WRAPPER_CODE = """
import runpy, sys
peak_file = sys.argv.pop(1)
try:
    if sys.argv[1] == "-c":
        code = sys.argv.pop(2)
        sys.argv = ["-c", *sys.argv[2:]]
        exec(compile(code, "<baseline>", "exec"), {"__name__": "__main__"})
    else:
        module = sys.argv[2]
        sys.argv = [module, *sys.argv[3:]]
        runpy.run_module(module, run_name="__main__", alter_sys=True)
finally:
    with open("/proc/self/status") as status, open(peak_file, "w") as out:
        out.write(next(line.split()[1] for line in status if line.startswith("VmHWM:")))
"""


@dataclass(frozen=True, slots=True)
class Run:
    """One measured process."""

    variant: str
    peak_mib: float
    cpu_s: float
    wall_s: float
    output_mib: float


def measure(variant: str, folder: Path) -> Run:
    """Run one variant to completion; its peak RSS and CPU time from the kernel."""
    out = folder / f"out.{variant}"
    peak = folder / "peak"
    argv = [sys.executable, "-c", WRAPPER_CODE, str(peak)]
    if variant == "baseline":
        argv += ["-c", BASELINE_CODE, str(folder / "gw.db"), "cgm-01", str(out)]
    else:
        argv += [
            "-m", "gatewayd", "export", "-c", str(folder / "gw.toml"), "-d", "cgm-01",
            "--format", variant, "--from", "2000-01-01", "--output", str(out),
        ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "STATE_DIRECTORY"} | {"TZ": "UTC"}
    started = time.perf_counter()
    process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)  # the CPU time of this child alone
    wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        assert process.stderr is not None
        raise RuntimeError(f"{variant} failed: {process.stderr.read().decode()}")
    return Run(
        variant=variant,
        peak_mib=int(peak.read_text()) / 1024,
        cpu_s=usage.ru_utime + usage.ru_stime,
        wall_s=wall,
        output_mib=out.stat().st_size / 2**20,
    )


def prepare(folder: Path) -> int:
    """The store of 90 days x 2 devices and its config; how many readings of the device."""
    count = DAYS * READINGS_PER_DAY * DEVICES
    build_template(folder / "gw.db", make_readings(count, DEVICES))
    (folder / "gw.toml").write_text(
        '[hub]\nid = "bench-hub"\n[store]\npath = "gw.db"\n'
        '[[devices]]\ndriver = "simulator"\nid = "cgm-01"\n'
        '[[devices]]\ndriver = "simulator"\nid = "cgm-02"\n',
        encoding="utf-8",
    )
    return count // DEVICES


def summarize(runs: list[Run], rounds: int) -> dict[str, Any]:
    """Medians per variant, and of the per-round ratios to the baseline."""
    by = {v: [r for r in runs if r.variant == v] for v in VARIANTS}
    result: dict[str, Any] = {}
    for variant in VARIANTS:
        mine = by[variant]
        entry = {
            "peak_mib": statistics.median(r.peak_mib for r in mine),
            "cpu_s": statistics.median(r.cpu_s for r in mine),
            "wall_s": statistics.median(r.wall_s for r in mine),
            "output_mib": statistics.median(r.output_mib for r in mine),
        }
        if variant != "baseline":
            pairs = list(zip(mine, by["baseline"], strict=True))
            entry["peak_ratio"] = statistics.median(a.peak_mib / b.peak_mib for a, b in pairs)
            entry["cpu_ratio"] = statistics.median(a.cpu_s / b.cpu_s for a, b in pairs)
            if variant in STREAMED:
                entry["within_target"] = entry["peak_mib"] <= TARGET_PEAK_MIB
        result[variant] = entry
    result["rounds"] = rounds
    return result


def main() -> int:
    """Build the store, run the rounds, print and write the result."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gatewayd-bench-export-") as tmp:
        folder = Path(tmp)
        print(f"building the store ({DAYS} days x {DEVICES} devices) ...", file=sys.stderr)
        per_device = prepare(folder)
        runs: list[Run] = []
        for round_ in range(args.rounds):
            shift = round_ % len(VARIANTS)
            order = VARIANTS[shift:] + VARIANTS[:shift]
            for variant in order:
                runs.append(measure(variant, folder))
                print(f"round {round_ + 1}: {runs[-1]}", file=sys.stderr)
    result = {
        **result_header(NAME),
        "readings_exported": per_device,
        "target_peak_mib": TARGET_PEAK_MIB,
        **summarize(runs, args.rounds),
        "runs": [asdict(r) for r in runs],
    }
    lines = [f"export_memory: 90 days of one of 2 devices ({per_device} readings)"]
    for variant in VARIANTS:
        r = result[variant]
        ratio = ""
        if "peak_ratio" in r:
            ratio = f"  x{r['peak_ratio']:.2f} peak, x{r['cpu_ratio']:.2f} CPU"
        lines.append(
            f"  {variant:<8} peak {r['peak_mib']:6.1f} MiB  CPU {r['cpu_s']:5.2f} s  "
            f"wall {r['wall_s']:5.2f} s  output {r['output_mib']:6.1f} MiB{ratio}"
        )
    print("\n".join(lines), flush=True)
    print(f"result: {write_result(NAME, result)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
