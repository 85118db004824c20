"""The `gatewayd` command: one module per subcommand, dispatched by the table `COMMANDS`.

    run  drivers  doctor  status  demo  simulate  scan  report  export  (and --version)

Each module in this package is one command: `add_arguments(parser)` declares its options and
`main(args) -> int` runs it. Only the chosen command's module is imported, so `gatewayd run`
does not load the exporters or the demo. Errors a person can fix (a bad config, a missing
driver) print one line on stderr and exit 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import cast

from gatewayd import __version__
from gatewayd.errors import ConfigError, GatewayError, PluginError, UsageError

#: Exit status for errors in what the user gave us (config, drivers); 1 is for runtime failures.
EXIT_USAGE = 2


@dataclass(frozen=True, slots=True)
class Command:
    """One subcommand: its name (also its module's, in this package) and its one-line help."""

    name: str
    help: str


COMMANDS: tuple[Command, ...] = (
    Command("run", "run the gateway with a config file"),
    Command("drivers", "list installed driver plugins with their help"),
    Command("doctor", "check config, store, broker, radio, serial, clock, disk: one line each"),
    Command("status", "per device: last reading and its age, last 24 h, outbox (from the store)"),
    Command("demo", "simulated CGMs -> the gateway -> an embedded local broker, shown live"),
    Command("simulate", "run a driver's emulated device (cgms, glucose, ...) for a gateway"),
    Command("scan", "nearby BLE devices and USB serial ports a driver can read, with their config"),
    Command("report", "a device's glucose summary, from the store"),
    Command("export", "readings for a clinician: FHIR, CSV, AGP PDF/PNG"),
)


def _load(command: Command) -> tuple[Callable[[argparse.ArgumentParser], None], Callable[..., int]]:
    module = importlib.import_module(f"{__name__}.{command.name}")
    add_arguments = cast(Callable[[argparse.ArgumentParser], None], module.add_arguments)
    return add_arguments, cast(Callable[..., int], module.main)


def _parser(
    argv: Sequence[str],
) -> tuple[argparse.ArgumentParser, dict[str, Callable[..., int]]]:
    """The parser; only the command named in `argv` (if any) gets its module loaded."""
    parser = argparse.ArgumentParser(
        prog="gatewayd",
        description="Gateway daemon: glucose monitors over BLE and USB serial to MQTT.",
    )
    parser.add_argument("--version", action="version", version=f"gatewayd {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    chosen = next((arg for arg in argv if not arg.startswith("-")), None)
    runners: dict[str, Callable[..., int]] = {}
    for command in COMMANDS:
        sub = commands.add_parser(command.name, help=command.help)
        if command.name == chosen:
            add_arguments, runners[command.name] = _load(command)
            add_arguments(sub)
    return parser, runners


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `gatewayd` command; returns the exit status."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    parser, runners = _parser(arguments)
    args = parser.parse_args(arguments)
    try:
        return runners[args.command](args)
    except ConfigError as exc:
        print(f"gatewayd: config error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except PluginError as exc:
        print(f"gatewayd: driver error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except UsageError as exc:
        print(f"gatewayd: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except GatewayError as exc:
        print(f"gatewayd: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
