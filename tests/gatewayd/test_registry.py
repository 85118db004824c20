"""gatewayd.registry: driver plugins through the `gatewayd.drivers` entry-point group.

Broken, wrong-type and misnamed plugins are real distributions: a package and a `.dist-info`
folder written to a temporary directory that is put on `sys.path`.
"""

from __future__ import annotations

import importlib
import sys
import textwrap
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gatewayd import registry
from gatewayd.driver import DriverPlugin
from gatewayd.errors import GatewayError, PluginError

MakeDist = Callable[..., str]

_VALID_PLUGIN = """\
from gatewayd.driver import DriverPlugin

plugin = DriverPlugin(
    name={name!r},
    transport="virtual",
    help="A fake driver.\\n\\nMore text.",
    parse_options=lambda reader: None,
    open=lambda context: None,
)
"""


@pytest.fixture
def fake_dist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[MakeDist]:
    """Install throw-away distributions registering drivers; returns the module's name."""
    modules: list[str] = []

    def make(source: str, entries: dict[str, str], dist: str = "fakedist") -> str:
        module = f"fakepkg_{uuid.uuid4().hex}"
        root = tmp_path / uuid.uuid4().hex
        (root / module).mkdir(parents=True)
        (root / module / "__init__.py").write_text(textwrap.dedent(source), encoding="utf-8")
        info = root / f"{dist}-0.1.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n", encoding="utf-8"
        )
        # A value with a colon is a full target; otherwise an attribute of the new module.
        lines = [
            f"{name} = {attr if ':' in attr else f'{module}:{attr}'}"
            for name, attr in entries.items()
        ]
        (info / "entry_points.txt").write_text(
            "[gatewayd.drivers]\n" + "\n".join(lines) + "\n", encoding="utf-8"
        )
        monkeypatch.syspath_prepend(str(root))
        importlib.invalidate_caches()
        modules.append(module)
        return module

    yield make
    for module in modules:
        sys.modules.pop(module, None)
    importlib.invalidate_caches()


def load_error(name: str) -> str:
    with pytest.raises(PluginError) as info:
        registry.load(name)
    assert isinstance(info.value, GatewayError)
    return str(info.value)


# --- the project's own driver -------------------------------------------------------------------


def test_installed_lists_the_simulator() -> None:
    drivers = registry.installed()
    by_name = {d.name: d for d in drivers}
    assert "simulator" in by_name
    sim = by_name["simulator"]
    assert sim.target == "drivers.simulator:plugin"
    assert sim.distribution == "gatewayd"
    assert [d.name for d in drivers] == sorted(d.name for d in drivers)


def test_load_the_simulator() -> None:
    plugin = registry.load("simulator")
    assert isinstance(plugin, DriverPlugin)
    assert plugin.name == "simulator"
    assert plugin.transport == "virtual"
    assert plugin.summary
    assert "interval" in plugin.help


def test_load_unknown_names_installed_drivers() -> None:
    message = load_error("nope")
    assert "'nope'" in message
    assert "not installed" in message
    assert "simulator" in message


# --- third-party distributions ------------------------------------------------------------------


def test_fake_valid_plugin_is_listed_and_loads(fake_dist: MakeDist) -> None:
    module = fake_dist(_VALID_PLUGIN.format(name="fakecgm"), {"fakecgm": "plugin"})
    entry = {d.name: d for d in registry.installed()}["fakecgm"]
    assert entry.target == f"{module}:plugin"
    assert entry.distribution == "fakedist"
    plugin = registry.load("fakecgm")
    assert plugin.name == "fakecgm"
    assert plugin.summary == "A fake driver."
    assert "fakecgm" in load_error("nope")


def test_installed_does_not_import(fake_dist: MakeDist) -> None:
    module = fake_dist("raise RuntimeError('imported!')\n", {"broken": "plugin"})
    assert "broken" in [d.name for d in registry.installed()]
    assert module not in sys.modules


def test_broken_plugin(fake_dist: MakeDist) -> None:
    module = fake_dist("raise RuntimeError('boom at import')\n", {"broken": "plugin"})
    message = load_error("broken")
    assert "'broken'" in message
    assert f"{module}:plugin" in message
    assert "failed to load" in message
    assert "RuntimeError: boom at import" in message


def test_broken_plugin_does_not_stop_others(fake_dist: MakeDist) -> None:
    fake_dist("raise RuntimeError('boom')\n", {"broken": "plugin"})
    assert registry.load("simulator").name == "simulator"


def test_plugin_attribute_missing(fake_dist: MakeDist) -> None:
    fake_dist("x = 1\n", {"noattr": "plugin"})
    message = load_error("noattr")
    assert "failed to load" in message
    assert "AttributeError" in message


def test_plugin_module_missing(fake_dist: MakeDist) -> None:
    fake_dist("", {"ghost": "no_such_module_xyz:plugin"})
    message = load_error("ghost")
    assert "no_such_module_xyz:plugin" in message
    assert "ModuleNotFoundError" in message


def test_plugin_syntax_error(fake_dist: MakeDist) -> None:
    fake_dist("def (:\n", {"syntax": "plugin"})
    assert "SyntaxError" in load_error("syntax")


def test_wrong_type_plugin(fake_dist: MakeDist) -> None:
    module = fake_dist("plugin = 42\n", {"wrongtype": "plugin"})
    message = load_error("wrongtype")
    assert "'wrongtype'" in message
    assert f"{module}:plugin" in message
    assert "is a int, not a DriverPlugin" in message


def test_misnamed_plugin(fake_dist: MakeDist) -> None:
    module = fake_dist(_VALID_PLUGIN.format(name="other"), {"misnamed": "plugin"})
    message = load_error("misnamed")
    assert "'misnamed'" in message
    assert f"{module}:plugin" in message
    assert "calls itself 'other'" in message


def test_driver_registered_twice(fake_dist: MakeDist) -> None:
    module = fake_dist(_VALID_PLUGIN.format(name="simulator"), {"simulator": "plugin"})
    message = load_error("simulator")
    assert "registered more than once" in message
    assert "drivers.simulator:plugin" in message
    assert f"{module}:plugin" in message
