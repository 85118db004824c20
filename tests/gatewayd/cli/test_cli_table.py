"""The command table: one module per subcommand, loaded only when chosen."""

from __future__ import annotations

import argparse
import importlib
import json
import subprocess
import sys

import pytest

from gatewayd import cli


@pytest.mark.parametrize("command", cli.COMMANDS, ids=lambda c: c.name)
def test_every_command_is_a_module_with_options_and_a_main(command: cli.Command) -> None:
    module = importlib.import_module(f"gatewayd.cli.{command.name}")
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    assert callable(module.main)
    assert command.help


def test_the_table_lists_every_command_module() -> None:
    from importlib.resources import files

    modules = {
        entry.name.removesuffix(".py")
        for entry in files("gatewayd.cli").iterdir()
        if entry.name.endswith(".py") and entry.name != "__init__.py"
    }
    assert modules == {command.name for command in cli.COMMANDS}


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        cli.main(["--help"])
    assert stop.value.code == 0
    out = capsys.readouterr().out
    for command in cli.COMMANDS:
        assert command.name in out


def test_run_does_not_load_the_other_commands() -> None:
    """`gatewayd run` starts without importing the exporters, the demo or the doctor."""
    code = (
        "import json, sys\n"
        "from gatewayd import cli\n"
        "cli._parser(['run', '--config', 'x.toml'])\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('gatewayd.'))))\n"
    )
    loaded = json.loads(
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout
    )
    assert "gatewayd.cli.run" in loaded
    for other in ("demo", "doctor", "export", "report", "status", "simulate", "scan"):
        assert f"gatewayd.cli.{other}" not in loaded
    assert not any(m.startswith("gatewayd.integrations.export") for m in loaded)
