"""A real Home Assistant for tests: its own Python 3.13 venv, a minimal config, onboarding and
the MQTT integration through the REST API, and the entities read back over the same API.

Home Assistant 2025.4.4 is the newest release for Python 3.13.0 (later ones need 3.14), so it
runs from a venv of its own, built once by `prepare` (about 2 minutes and 1 GB) and reused while
its marker file names the same release. Home Assistant installs the requirements of what it
loads at start-up; `prepare` installs them beforehand (those of its default integrations, http,
api and mqtt, with their dependencies, under its own constraints) so that a run needs no
network and starts in under a minute.

    python -m home_assistant_harness VENV   # build (or check) the venv, as CI does
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mosquitto import Mosquitto, free_port

VERSION = "2025.4.4"
PYTHON = (3, 13)
#: The integrations a run configures (besides those Home Assistant always loads).
INTEGRATIONS = ("http", "api", "mqtt")
_MARKER = "gatewayd-homeassistant"
_USER, _PASSWORD = "gatewayd", "gatewayd-test-password"

#: Run in the venv: Home Assistant's constraints file, then the requirements of every
#: integration it sets up at start.
_REQUIREMENTS = """
import json, sys
from pathlib import Path
import homeassistant.bootstrap as bootstrap
import homeassistant.components as components
root = Path(components.__file__).parent
todo = list(sys.argv[1:])
for name, value in vars(bootstrap).items():
    if name.endswith("_INTEGRATIONS") and isinstance(value, (set, frozenset)):
        todo += [domain for domain in value if isinstance(domain, str)]
seen, requirements = set(), set()
while todo:
    domain = todo.pop()
    manifest = root / domain / "manifest.json"
    if domain in seen or not manifest.exists():
        continue
    seen.add(domain)
    data = json.loads(manifest.read_text())
    requirements.update(data.get("requirements", []))
    todo += data.get("dependencies", [])
print(root.parent / "package_constraints.txt")  # Home Assistant's own pins, first
print("\\n".join(sorted(requirements)))
"""


def find_python() -> Path | None:
    """A Python 3.13: $GATEWAYD_HA_PYTHON, python3.13 on PATH, or one of pyenv's versions."""
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    candidates = [os.environ.get("GATEWAYD_HA_PYTHON"), shutil.which("python3.13")]
    candidates += sorted(glob.glob(str(pyenv / "versions" / "3.13*" / "bin" / "python3")))
    for candidate in candidates:
        if candidate and _version(Path(candidate)) == PYTHON:
            return Path(candidate)
    return None


def _version(python: Path) -> tuple[int, int] | None:
    try:
        out = subprocess.run(
            [python, "-c", "import sys; print(*sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return None
    return (int(out[0]), int(out[1])) if len(out) == 2 else None


def prepare(venv: Path, python: Path) -> Path:
    """The venv's Python, with Home Assistant and its start-up requirements installed (once;
    concurrent callers wait for the first)."""
    venv.mkdir(parents=True, exist_ok=True)
    marker = venv / _MARKER
    with (venv.parent / f"{venv.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.exists() and marker.read_text() == VERSION:
            return venv / "bin" / "python"
        subprocess.run([python, "-m", "venv", "--clear", venv], check=True)
        ha_python = venv / "bin" / "python"
        pip: list[str | Path] = [ha_python, "-m", "pip", "install", "-q"]
        subprocess.run(
            [*pip, "--disable-pip-version-check", f"homeassistant=={VERSION}"], check=True
        )
        constraints, *requirements = subprocess.run(
            [ha_python, "-c", _REQUIREMENTS, *INTEGRATIONS],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.splitlines()
        subprocess.run([*pip, "-c", constraints, *requirements], check=True)
        marker.write_text(VERSION)
    return venv / "bin" / "python"


class HomeAssistantError(RuntimeError):
    """Home Assistant did not start, or refused a request (with its log's tail)."""


@dataclass
class HomeAssistant:
    """One Home Assistant process with its own config folder, on a free loopback port."""

    python: Path
    folder: Path
    port: int = field(default_factory=free_port)
    token: str | None = None
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.folder / "home-assistant.log"

    def start(self, timeout: float = 240.0) -> None:
        """Start it with http, api and mqtt (no broker yet) and wait for its API."""
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "configuration.yaml").write_text(
            "homeassistant:\n  name: gatewayd test\n  time_zone: UTC\n"
            "  unit_system: metric\n  country: CH\n  latitude: 0\n  longitude: 0\n"
            f"http:\n  server_host: 127.0.0.1\n  server_port: {self.port}\n"
            "api:\nmqtt:\nlogger:\n  default: warning\n"
        )
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [self.python, "-m", "homeassistant", "--config", self.folder, "--skip-pip"],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self._wait(lambda: self._request("GET", "/api/onboarding", auth=False), timeout)

    def stop(self) -> None:
        """Stop it (SIGTERM, then SIGKILL after 30 s)."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def onboard(self) -> None:
        """Create the owner account through onboarding and keep an access token."""
        client = f"{self.url}/"
        user = self._request(
            "POST",
            "/api/onboarding/users",
            {"client_id": client, "name": "gatewayd", "username": _USER,
             "password": _PASSWORD, "language": "en"},
            auth=False,
        )  # fmt: skip
        form = {"grant_type": "authorization_code", "code": user["auth_code"], "client_id": client}
        self.token = self._request("POST", "/auth/token", form=form, auth=False)["access_token"]

    def add_mqtt(self, broker: Mosquitto) -> None:
        """The MQTT integration's config flow, pointed at `broker` (plain port, password)."""
        flow = self._request("POST", "/api/config/config_entries/flow", {"handler": "mqtt"})
        answer = {
            "broker": "127.0.0.1",
            "port": broker.port,
            "username": broker.username,
            "password": broker.password,
        }
        done = self._request("POST", f"/api/config/config_entries/flow/{flow['flow_id']}", answer)
        if done.get("type") != "create_entry":
            raise HomeAssistantError(f"the MQTT config flow did not finish: {done}")

    def states(self) -> dict[str, dict[str, Any]]:
        """Every entity's state object, by entity id."""
        return {s["entity_id"]: s for s in self._request("GET", "/api/states")}

    def template(self, text: str) -> str:
        """Render a template in Home Assistant (devices, registries, states)."""
        result = self._request("POST", "/api/template", {"template": text}, text=True)
        return str(result)

    def wait(self, condition: Any, what: str, timeout: float = 60.0) -> Any:
        """Poll `condition(self)` until it returns something truthy; return that."""
        return self._wait(lambda: condition(self), timeout, what)

    def _wait(self, probe: Any, timeout: float, what: str = "Home Assistant's API") -> Any:
        deadline = time.monotonic() + timeout
        last: object = None
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise HomeAssistantError(f"Home Assistant exited: {self.tail()}")
            with contextlib.suppress(OSError, HomeAssistantError):
                last = probe()
                if last:
                    return last
            time.sleep(0.5)
        raise HomeAssistantError(f"not met in {timeout} s: {what} (last: {last}); {self.tail()}")

    def tail(self, lines: int = 30) -> str:
        """The end of Home Assistant's log."""
        if not self.log.exists():
            return "(no log)"
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def _request(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        form: dict[str, str] | None = None,
        auth: bool = True,
        text: bool = False,
    ) -> Any:
        headers = {"Authorization": f"Bearer {self.token}"} if auth else {}
        data = None
        if body is not None:
            data, headers["Content-Type"] = json.dumps(body).encode(), "application/json"
        elif form is not None:
            data = urllib.parse.urlencode(form).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        request = urllib.request.Request(self.url + path, data, headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                raw = response.read().decode()
        except urllib.error.HTTPError as exc:
            raise HomeAssistantError(f"{method} {path}: {exc.code} {exc.read()!r}") from exc
        return raw if text else json.loads(raw)


@contextlib.contextmanager
def running(python: Path, folder: Path, broker: Mosquitto) -> Iterator[HomeAssistant]:
    """A started, onboarded Home Assistant with its MQTT integration on `broker`."""
    ha = HomeAssistant(python, folder)
    try:
        ha.start()
        ha.onboard()
        ha.add_mqtt(broker)
        yield ha
    finally:
        ha.stop()


def main(argv: list[str]) -> int:
    """`python -m home_assistant_harness VENV`: build the venv (CI's install step)."""
    python = find_python()
    if python is None:
        print(
            "gatewayd: no Python 3.13 here: Home Assistant's test will be skipped", file=sys.stderr
        )
        return 0
    print(f"gatewayd: Home Assistant {VERSION} in {prepare(Path(argv[0]), python)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
