"""Can gatewayd install on every platform we promise? Checked from the package index's metadata.

A hub is a Raspberry Pi on 64-bit (aarch64) or 32-bit (armv7l) Raspberry Pi OS, or any x86_64
Linux. This resolves what `pip install gatewayd` (no extras, or the extras named) installs here,
then asks the index, for every resolved release, which files it has: a wheel that fits the
target (CPython 3.11, glibc 2.36 as in Debian / Raspberry Pi OS bookworm), else a source
package (pip compiles it: needs build-essential python3-dev libffi-dev), else nothing — then the
install cannot work there at all, and this exits 1. `--wheels-only ARCH` also fails when a
release would have to be compiled on ARCH.

    .venv/bin/python scripts/platforms.py                     # default install, all targets
    .venv/bin/python scripts/platforms.py --extra reports     # with an extra

Run by CI (`.ci/run`) so that a dependency bump cannot silently break the Pi again. Needs the
package index (PyPI's JSON simple API, PEP 691) and `packaging`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from packaging.tags import Tag, compatible_tags, cpython_tags
from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    canonicalize_name,
    parse_sdist_filename,
    parse_wheel_filename,
)
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
INDEX = os.environ.get("GATEWAYD_INDEX", "https://pypi.org/simple")
#: The targets: machine name -> glibc (major, minor) of the oldest OS we promise there.
TARGETS = {"x86_64": (2, 36), "aarch64": (2, 36), "armv7l": (2, 36)}
PYTHON = (3, 11)


@dataclass(frozen=True)
class Verdict:
    """How one release installs on one target: "wheel", "source" or "missing"."""

    name: str
    version: str
    how: str
    file: str | None = None


def target_tags(machine: str, glibc: tuple[int, int], python: tuple[int, int]) -> set[Tag]:
    """Every wheel tag pip accepts on `machine` with that glibc and CPython version."""
    platforms = [f"manylinux_{glibc[0]}_{minor}_{machine}" for minor in range(glibc[1], 16, -1)]
    platforms += [f"manylinux2014_{machine}", f"linux_{machine}"]
    if machine == "x86_64":
        platforms += ["manylinux2010_x86_64", "manylinux1_x86_64"]
    interpreter = f"cp{python[0]}{python[1]}"
    tags = set(cpython_tags(python, abis=[interpreter, "abi3", "none"], platforms=platforms))
    tags |= set(compatible_tags(python, interpreter=interpreter, platforms=platforms))
    return tags


def classify(name: str, version: str, files: Iterable[str], tags: set[Tag]) -> Verdict:
    """The best way `name==version` installs, given the index's file names and target tags."""
    wanted, source = Version(version), None
    for filename in files:
        if filename.endswith(".whl"):
            try:
                _, wheel_version, _, wheel_tags = parse_wheel_filename(filename)
            except InvalidWheelFilename:
                continue
            if wheel_version == wanted and wheel_tags & tags:
                return Verdict(name, version, "wheel", filename)
        else:
            try:
                _, sdist_version = parse_sdist_filename(filename)
            except InvalidSdistFilename:
                continue
            if sdist_version == wanted:
                source = filename
    if source is not None:
        return Verdict(name, version, "source", source)
    return Verdict(name, version, "missing")


def resolve(extras: Sequence[str]) -> list[tuple[str, str]]:
    """(name, version) of everything `pip install .[extras]` installs, gatewayd itself left out."""
    spec = f".[{','.join(extras)}]" if extras else "."
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        subprocess.run(  # noqa: S603 - our own interpreter, fixed arguments
            [sys.executable, "-m", "pip", "install", "--quiet", "--dry-run", "--ignore-installed",
             "--disable-pip-version-check", "--report", str(report), spec],
            cwd=ROOT,
            check=True,
        )  # fmt: skip
        installed = json.loads(report.read_text())["install"]
    found = [(i["metadata"]["name"], i["metadata"]["version"]) for i in installed]
    return sorted((n, v) for n, v in found if canonicalize_name(n) != "gatewayd")


def index_files(name: str) -> list[str]:
    """The file names the index holds for project `name` (all releases)."""
    request = urllib.request.Request(  # noqa: S310 - an https index URL
        f"{INDEX.rstrip('/')}/{canonicalize_name(name)}/",
        headers={"Accept": "application/vnd.pypi.simple.v1+json"},
    )
    with urllib.request.urlopen(request, timeout=60) as answer:  # noqa: S310
        return [f["filename"] for f in json.load(answer)["files"] if not f.get("yanked")]


def main(argv: Sequence[str] | None = None) -> int:
    """Print one line per release and target; 1 when something cannot install."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--extra", action="append", default=[], help="an extra to include")
    parser.add_argument(
        "--wheels-only",
        action="append",
        default=["aarch64", "x86_64"],
        help="targets where nothing may need compiling (default: aarch64, x86_64)",
    )
    args = parser.parse_args(argv)
    releases = resolve(args.extra)
    files = {name: index_files(name) for name, _ in releases}
    failures = 0
    for machine, glibc in TARGETS.items():
        tags = target_tags(machine, glibc, PYTHON)
        verdicts = [classify(n, v, files[n], tags) for n, v in releases]
        compiled = [v for v in verdicts if v.how == "source"]
        missing = [v for v in verdicts if v.how == "missing"]
        bad = missing + (compiled if machine in args.wheels_only else [])
        print(
            f"{machine}: {len(verdicts)} releases, {len(verdicts) - len(compiled) - len(missing)}"
            f" wheels, {len(compiled)} compiled from source, {len(missing)} not installable"
        )
        for verdict in compiled + missing:
            mark = "FAIL" if verdict in bad else "note"
            print(f"  {mark} {verdict.name}=={verdict.version}: {verdict.how}")
        failures += len(bad)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
