"""What the benchmark scripts share: where and how a result lands (`bench/results/<name>.json`).

Not a benchmark itself (`scripts/bench` skips files starting with `_`); the scripts import it as
a sibling module (`from _common import write_result`), like `_fleet_common`.
"""

from __future__ import annotations

import json
import os
import platform
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

#: Where every benchmark writes its JSON result (gitignored).
RESULTS = Path(__file__).resolve().parent / "results"


def result_header(name: str, *packages: str, **machine: Any) -> dict[str, Any]:
    """The keys every result starts with: `bench` (its name), `when` (UTC, to the second) and
    `machine`: Python, CPUs, the versions of `packages` ("paho-mqtt" as "paho_mqtt"), `machine`.
    """
    return {
        "bench": name,
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            **{package.replace("-", "_"): version(package) for package in packages},
            **machine,
        },
    }


def write_result(name: str, result: dict[str, Any]) -> Path:
    """Write `result` to `bench/results/<name>.json` (indented, newline-terminated); its path."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    return path
