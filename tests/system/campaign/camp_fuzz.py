"""Fuzz campaign engine: every target of `camp_fuzz_targets`, counted, timed, hang-guarded.

Input `i` of target `t` in a run with seed `s` is made by `random.Random(f"{s}:{t}:{i}")`, so any
finding is reproducible from (seed, target, index) alone: ``--replay TARGET:INDEX --seed S``.

Outcomes per input: *accepted* (parsed / handled), *rejected* (an exception the target documents:
`ProtocolError` and subclasses), *crash* (any other exception), *property* (a broken round trip
or event contract: `PropertyFailed`), *hang* (over `time_limit` seconds: SIGALRM inside the
worker; a worker stuck in C code is killed by the parent's watchdog after `hard_limit`). Crashes
of byte inputs are minimised (delta debugging on the bytes, same exception and place).

Run as a program (what `scripts/fuzz` does): ``python tests/system/campaign/camp_fuzz.py --help``.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import multiprocessing as mp
import os
import queue
import random
import signal
import sys
import time
import traceback
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from camp_fuzz_targets import TARGETS, PropertyFailed, Target

#: Inputs per task handed to a worker.
CHUNK = 2000


class Hang(BaseException):
    """One input ran past the time limit (a BaseException: target code cannot swallow it)."""


@dataclass
class Finding:
    """One distinct failure (target, kind, exception, place) and its first input."""

    target: str
    kind: str  # crash | property | hang
    error: str
    where: str
    index: int
    count: int = 1
    input: str = ""
    minimal: str = ""
    trace: str = ""


@dataclass
class Stats:
    """Counts of one target (or a sum)."""

    inputs: int = 0
    accepted: int = 0
    rejected: int = 0
    crashes: int = 0
    properties: int = 0
    hangs: int = 0
    seconds: float = 0.0
    slowest: float = 0.0
    slowest_index: int = -1

    def add(self, other: Stats) -> None:
        for name in ("inputs", "accepted", "rejected", "crashes", "properties", "hangs"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.seconds += other.seconds
        if other.slowest > self.slowest:
            self.slowest, self.slowest_index = other.slowest, other.slowest_index


def make_input(target: Target, seed: int, index: int) -> Any:
    return target.generate(random.Random(f"{seed}:{target.name}:{index}"))


def show(target: Target, value: Any) -> str:
    if target.binary:
        return bytes(value).hex()
    text = repr(value)
    return text if len(text) <= 4000 else text[:4000] + "..."


def _where(exc: BaseException) -> str:
    """The innermost frame in protocols/ (else the innermost at all) as file:line."""
    frames = traceback.extract_tb(exc.__traceback__)
    inside = [f for f in frames if "/protocols/" in f.filename] or frames
    if not inside:
        return "?"
    frame = inside[-1]
    return f"{Path(frame.filename).name}:{frame.lineno} ({frame.name})"


def _classify(target: Target, value: Any) -> tuple[str, BaseException | None]:
    """Run one input: ("accepted" | "rejected" | "crash" | "property", the exception)."""
    try:
        target.run(value)
    except PropertyFailed as exc:
        return "property", exc
    except target.allowed as exc:
        return "rejected", exc
    except Exception as exc:
        return "crash", exc
    return "accepted", None


def _signature(kind: str, exc: BaseException | None) -> tuple[str, str, str]:
    if exc is None:
        return kind, "", ""
    return kind, type(exc).__name__, _where(exc)


def minimise(target: Target, data: bytes, signature: tuple[str, str, str]) -> bytes:
    """Delta debugging on bytes: the shortest input found that fails the same way."""

    def same(candidate: bytes) -> bool:
        kind, exc = _classify(target, candidate)
        return _signature(kind, exc) == signature

    best, step = bytes(data), max(1, len(data) // 2)
    budget = 2000
    while step >= 1 and budget > 0:
        i, shrunk = 0, False
        while i < len(best) and budget > 0:
            budget -= 1
            candidate = best[:i] + best[i + step :]
            if same(candidate):
                best, shrunk = candidate, True
            else:
                i += step
        if not shrunk:
            step //= 2
    for i in range(len(best)):  # then simplest bytes: zero where possible
        if best[i] and budget > 0:
            budget -= 1
            candidate = best[:i] + b"\0" + best[i + 1 :]
            if same(candidate):
                best = candidate
    return best


def run_chunk(
    name: str,
    seed: int,
    start: int,
    count: int,
    *,
    time_limit: float = 1.0,
    heartbeat: Any = None,
    slot: int = 0,
) -> tuple[Stats, list[Finding]]:
    """Inputs start..start+count of one target; in-process (the short suite) or in a worker."""
    target = TARGETS[name]
    stats = Stats()
    findings: dict[tuple[str, str, str], Finding] = {}
    armed = [False]

    def alarm(signum: int, frame: Any) -> None:
        if armed[0]:
            raise Hang(f"over {time_limit}s")

    previous = signal.signal(signal.SIGALRM, alarm)
    # Someone else's alarm (pytest-timeout's): given back, less the time spent, at the end.
    outer, outer_from = signal.getitimer(signal.ITIMER_REAL)[0], time.monotonic()
    clock = time.perf_counter
    try:
        for index in range(start, start + count):
            value = make_input(target, seed, index)
            if heartbeat is not None:
                heartbeat[3 * slot], heartbeat[3 * slot + 1] = float(index), time.monotonic()
            began = clock()
            armed[0] = True
            signal.setitimer(signal.ITIMER_REAL, time_limit)
            try:
                kind, exc = _classify(target, value)
                armed[0] = False
            except Hang as hang:
                kind, exc = "hang", hang
            finally:
                armed[0] = False
                signal.setitimer(signal.ITIMER_REAL, 0)
            spent = clock() - began
            stats.inputs += 1
            stats.seconds += spent
            if spent > stats.slowest:
                stats.slowest, stats.slowest_index = spent, index
            if kind == "accepted":
                stats.accepted += 1
            elif kind == "rejected":
                stats.rejected += 1
            else:
                counter = {"crash": "crashes", "property": "properties", "hang": "hangs"}[kind]
                setattr(stats, counter, getattr(stats, counter) + 1)
                key = _signature(kind, exc)
                if key in findings:
                    findings[key].count += 1
                    continue
                finding = Finding(name, kind, f"{type(exc).__name__}: {exc}"[:500], key[2], index)
                finding.input = show(target, value)
                finding.trace = "".join(traceback.format_exception(exc)[-6:])[-3000:]
                if target.binary and kind != "hang":
                    finding.minimal = minimise(target, bytes(value), key).hex()
                findings[key] = finding
    finally:
        signal.signal(signal.SIGALRM, previous)
        if outer:
            left = outer - (time.monotonic() - outer_from)
            signal.setitimer(signal.ITIMER_REAL, max(left, 0.001))
        if heartbeat is not None:
            heartbeat[3 * slot + 1] = 0.0
    return stats, list(findings.values())


# -- parallel campaign -----------------------------------------------------------------------


def _worker(
    slot: int, tasks: Any, results: Any, heartbeat: Any, seed: int, time_limit: float
) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    while True:
        task = tasks.get()
        if task is None:
            return
        task_id, name, start, count = task
        heartbeat[3 * slot + 2] = float(task_id)
        stats, findings = run_chunk(
            name, seed, start, count, time_limit=time_limit, heartbeat=heartbeat, slot=slot
        )
        results.put((task_id, name, asdict(stats), [asdict(f) for f in findings]))


def plan(total: int, names: list[str]) -> dict[str, int]:
    """Inputs per target: `total` split by weight."""
    weights = {n: TARGETS[n].weight for n in names}
    scale = total / sum(weights.values())
    return {n: max(1, round(w * scale)) for n, w in weights.items()}


@dataclass
class Campaign:
    seed: int
    workers: int
    time_limit: float
    wall_seconds: float = 0.0
    per_target: dict[str, Stats] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)

    def per_module(self) -> dict[str, Stats]:
        out: dict[str, Stats] = defaultdict(Stats)
        for name, stats in self.per_target.items():
            out[TARGETS[name].module].add(stats)
        return dict(sorted(out.items()))

    def total(self) -> Stats:
        total = Stats()
        for stats in self.per_target.values():
            total.add(stats)
        return total


def campaign(
    total: int,
    *,
    seed: int,
    workers: int = 2,
    time_limit: float = 1.0,
    hard_limit: float = 30.0,
    names: list[str] | None = None,
    progress: bool = True,
) -> Campaign:
    """Run `total` inputs over `names` (all targets) in `workers` processes."""
    names = names or sorted(TARGETS)
    result = Campaign(seed, workers, time_limit)
    result.per_target = {n: Stats() for n in names}
    ctx = mp.get_context("fork")
    tasks, results = ctx.Queue(), ctx.Queue()
    heartbeat = ctx.RawArray("d", 3 * workers)
    pending: dict[int, tuple[str, int, int]] = {}
    for name, count in plan(total, names).items():
        for start in range(0, count, CHUNK):
            task_id = len(pending)
            pending[task_id] = (name, start, min(CHUNK, count - start))
    # Interleave targets so progress lines and a time-boxed run cover every module.
    order = sorted(pending, key=lambda t: (pending[t][1], pending[t][0]))
    for task_id in order:
        tasks.put((task_id, *pending[task_id]))
    procs: list[Any] = [None] * workers

    def spawn(slot: int) -> None:
        heartbeat[3 * slot + 1] = 0.0
        heartbeat[3 * slot + 2] = -1.0
        proc = ctx.Process(
            target=_worker, args=(slot, tasks, results, heartbeat, seed, time_limit), daemon=True
        )
        proc.start()
        procs[slot] = proc

    began = time.monotonic()
    for slot in range(workers):
        spawn(slot)
    last_report = began
    done = 0
    try:
        while pending:
            try:
                task_id, name, stats, findings = results.get(timeout=0.5)
            except queue.Empty:
                task_id = None
            if task_id is not None:
                pending.pop(task_id, None)
                result.per_target[name].add(Stats(**stats))
                result.findings += [Finding(**f) for f in findings]
                done += stats["inputs"]
            now = time.monotonic()
            for slot in range(workers):  # the watchdog: a worker stuck past hard_limit
                started = heartbeat[3 * slot + 1]
                if started and now - started > hard_limit:
                    stuck_task = int(heartbeat[3 * slot + 2])
                    index = int(heartbeat[3 * slot])
                    procs[slot].kill()
                    procs[slot].join()
                    name, start, count = pending.pop(stuck_task)
                    target = TARGETS[name]
                    hang = Finding(name, "hang", f"worker stuck over {hard_limit}s", "?", index)
                    hang.input = show(target, make_input(target, seed, index))
                    result.findings.append(hang)
                    result.per_target[name].hangs += 1
                    result.per_target[name].inputs += 1
                    # The chunk's other inputs (their counts died with the worker): run again.
                    for first, size in (
                        (start, index - start),
                        (index + 1, start + count - index - 1),
                    ):
                        if size > 0:
                            new_id = max(pending, default=stuck_task) + 10**6
                            pending[new_id] = (name, first, size)
                            tasks.put((new_id, name, first, size))
                    spawn(slot)
            if progress and now - last_report > 10:
                last_report = now
                rate = done / (now - began)
                print(f"  ... {done:>9} inputs, {rate:,.0f}/s", flush=True)
    finally:
        for _ in procs:
            tasks.put(None)
        for proc in procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
    result.wall_seconds = time.monotonic() - began
    return result


# -- report ----------------------------------------------------------------------------------


def table(rows: dict[str, Stats], wall: float | None = None) -> str:
    head = (
        f"{'':46} {'inputs':>9} {'accepted':>9} {'rejected':>9} {'crash':>5} {'prop':>5} "
        f"{'hang':>5} {'inputs/s':>9} {'slowest':>9}"
    )
    lines = [head]
    for name, s in rows.items():
        rate = s.inputs / s.seconds if s.seconds else 0.0
        lines.append(
            f"{name:46} {s.inputs:>9} {s.accepted:>9} {s.rejected:>9} {s.crashes:>5} "
            f"{s.properties:>5} {s.hangs:>5} {rate:>9,.0f} {s.slowest * 1000:>7.1f}ms"
        )
    return "\n".join(lines)


def report(result: Campaign) -> str:
    total = result.total()
    out = [
        f"seed {result.seed}, {result.workers} workers, time limit {result.time_limit}s/input",
        "",
        "per module:",
        table(result.per_module()),
        "",
        "per target:",
        table(dict(sorted(result.per_target.items()))),
        "",
        f"TOTAL {total.inputs} inputs in {result.wall_seconds:.0f}s wall "
        f"({total.inputs / max(result.wall_seconds, 1e-9):,.0f}/s with {result.workers} workers; "
        f"{total.inputs / max(total.seconds, 1e-9):,.0f}/s per core in the targets): "
        f"{total.accepted} accepted, {total.rejected} rejected, {total.crashes} crashes, "
        f"{total.properties} property failures, {total.hangs} hangs; slowest input "
        f"{total.slowest * 1000:.1f} ms",
    ]
    merged: dict[tuple[str, str, str, str], Finding] = {}
    for f in result.findings:
        key = (f.target, f.kind, f.error.split(":")[0], f.where)
        if key in merged:
            merged[key].count += f.count
        else:
            merged[key] = f
    for f in sorted(merged.values(), key=lambda f: (f.kind, f.target)):
        out += [
            "",
            f"{f.kind.upper()} {f.target} x{f.count}: {f.error}",
            f"  at {f.where}; input #{f.index} (replay: --seed {result.seed} --replay "
            f"'{f.target}:{f.index}')",
            f"  input:   {f.input[:400]}",
        ]
        if f.minimal:
            out.append(f"  minimal: {f.minimal}")
    return "\n".join(out)


def replay(spec: str, seed: int) -> int:
    name, _, index = spec.rpartition(":")
    target = TARGETS[name]
    value = make_input(target, seed, int(index))
    print(f"target {name}, input #{index} of seed {seed}:\n  {show(target, value)}")
    try:
        result = target.run(value)
    except target.allowed as exc:
        print(f"rejected: {type(exc).__name__}: {exc}")
        return 0
    if isinstance(result, list):  # a session script's log
        print("\n".join(f"  {line}" for line in result))
    print(f"accepted: {result!r}"[:2000])
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--inputs", type=int, default=1_200_000, help="total inputs")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--seed", type=int, help="run seed (default: random, printed)")
    parser.add_argument("--time-limit", type=float, default=1.0, help="s per input = a hang")
    parser.add_argument("--hard-limit", type=float, default=30.0, help="s before killing a worker")
    parser.add_argument("--targets", default="*", help="glob over target names")
    parser.add_argument("--list", action="store_true", help="list the targets and exit")
    parser.add_argument("--replay", help="TARGET:INDEX: run one input (with its --seed), traced")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    if args.list:
        for name, target in sorted(TARGETS.items()):
            print(f"{target.module:36} {name}")
        return 0
    seed = random.randrange(2**31) if args.seed is None else args.seed
    if args.replay:
        return replay(args.replay, seed)
    names = [n for n in sorted(TARGETS) if fnmatch.fnmatch(n, args.targets)]
    print(f"fuzzing {len(names)} targets, {args.inputs} inputs, seed {seed}", flush=True)
    result = campaign(
        args.inputs,
        seed=seed,
        workers=args.workers,
        time_limit=args.time_limit,
        hard_limit=args.hard_limit,
        names=names,
    )
    print(report(result), flush=True)
    if args.json:
        total = result.total()
        Path(args.json).write_text(
            json.dumps(
                {
                    "seed": seed,
                    "wall_seconds": round(result.wall_seconds, 1),
                    "total": asdict(total),
                    "modules": {m: asdict(s) for m, s in result.per_module().items()},
                    "targets": {t: asdict(s) for t, s in result.per_target.items()},
                    "findings": [asdict(f) for f in result.findings],
                },
                indent=2,
            )
            + "\n"
        )
    total = result.total()
    failed = total.crashes + total.properties + total.hangs
    print("RESULT:", "FAIL" if failed else "PASS", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
