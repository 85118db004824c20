"""The `gatewayd` command: `run`, `drivers`, `demo`, `report`, `export`, `doctor`, `status`,
`simulate`, `--version`.

Errors a person can fix (a bad config, a missing driver) print one line on stderr and exit 2,
never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path

from gatewayd import __version__
from gatewayd.errors import ConfigError, GatewayError, PluginError, UsageError
from gatewayd.models import UNITS

#: Exit status for errors in what the user gave us (config, drivers); 1 is for runtime failures.
EXIT_USAGE = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gatewayd",
        description="Gateway daemon: glucose monitors over BLE and USB serial to MQTT.",
    )
    parser.add_argument("--version", action="version", version=f"gatewayd {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run the gateway with a config file")
    run.add_argument("--config", "-c", type=Path, required=True, help="the TOML config file")

    commands.add_parser("drivers", help="list installed driver plugins with their help")

    doctor = commands.add_parser(
        "doctor", help="check config, store, broker, radio, serial, clock, disk: one line each"
    )
    doctor.add_argument("--config", "-c", type=Path, required=True, help="the TOML config file")
    doctor.add_argument("--format", choices=("text", "json"), default="text")
    doctor.add_argument(
        "--timeout", type=float, default=5.0, help="seconds per network step (default 5)"
    )
    doctor.add_argument(
        "--user", help="check file permissions for this user (default: gatewayd when run as root)"
    )

    status = commands.add_parser(
        "status", help="per device: last reading and its age, last 24 h, outbox (from the store)"
    )
    status.add_argument("--config", "-c", type=Path, required=True, help="the TOML config file")
    status.add_argument("--format", choices=("text", "json"), default="text")
    status.add_argument(
        "--broker", action="store_true", help="also the daemon's retained statuses from the broker"
    )
    status.add_argument("--timeout", type=float, default=5.0, help="broker timeout, seconds")

    demo = commands.add_parser(
        "demo", help="simulated CGMs -> the gateway -> an embedded local broker, shown live"
    )
    demo.add_argument("--devices", type=int, default=2, help="simulated CGMs, 1-50 (default 2)")
    demo.add_argument(
        "--speed",
        type=float,
        default=60.0,
        help="simulated time factor while replaying the past day (default 60)",
    )
    demo.add_argument(
        "--port",
        type=int,
        default=1883,
        help="broker port on 127.0.0.1 (default 1883; the next free one if taken)",
    )
    demo.add_argument(
        "--duration", type=float, default=None, help="stop after SECONDS (default: until Ctrl-C)"
    )

    simulate = commands.add_parser(
        "simulate", help="run an emulated device (gatewayd.simulate lists them) for a gateway"
    )
    simulate.add_argument("--device", required=True, help="e.g. dexcom-receiver, cgms, glucose")
    simulate.add_argument("--hci", help="BLE emulators: tcp-server:HOST:PORT to serve HCI on")
    simulate.add_argument(
        "--pty-link", "--link", type=Path, help="serial emulators: the symlink to the pty"
    )
    simulate.add_argument("--duration", type=float, help="stop after SECONDS (default: Ctrl-C)")
    simulate.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="a device option"
    )

    report = commands.add_parser("report", help="a device's glucose summary, from the store")
    report.add_argument("--config", "-c", type=Path, required=True, help="the TOML config file")
    report.add_argument("--device", "-d", required=True, help="the device id")
    report.add_argument("--days", type=int, help="one window of N days instead of 24h and 14d")
    report.add_argument("--format", choices=("text", "json"), default="text")
    report.add_argument("--at", help="end of the windows, ISO-8601 (default now)")

    export = commands.add_parser("export", help="readings for a clinician: FHIR, CSV, AGP PDF/PNG")
    export.add_argument("--config", "-c", type=Path, required=True, help="the TOML config file")
    export.add_argument("--device", "-d", required=True, help="the device id")
    export.add_argument("--format", choices=("fhir", "csv", "pdf", "png"), required=True)
    export.add_argument("--from", dest="start", help="date or date-time (default --to - 14 days)")
    export.add_argument("--to", dest="end", help="date (inclusive) or date-time (default now)")
    export.add_argument("--output", "-o", type=Path, help="file (default stdout; pdf/png need it)")
    export.add_argument("--tz", help="IANA time zone for dates and the AGP (default local)")
    export.add_argument("--paper", choices=("a4", "letter"), default="a4", help="PDF page size")
    export.add_argument("--include-serial", action="store_true", help="CSV: the sensor serial")
    export.add_argument("--unit", choices=UNITS, help="AGP: glucose unit (default [hub] unit)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:  # noqa: PLR0911, PLR0912 - one exit per outcome
    """Entry point of the `gatewayd` command; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "run":
            return _run(args.config)
        if args.command == "drivers":
            return _drivers()
        if args.command == "doctor":
            from gatewayd.doctor.command import run_doctor

            return run_doctor(args.config, fmt=args.format, timeout=args.timeout, user=args.user)
        if args.command == "status":
            from gatewayd.statuscmd import run_status

            return run_status(
                args.config, fmt=args.format, broker=args.broker, timeout=args.timeout
            )
        if args.command == "report":
            from gatewayd.summaries.report import run_report

            return run_report(args.config, args.device, days=args.days, fmt=args.format, at=args.at)
        if args.command == "export":
            from gatewayd.export.command import run_export

            return run_export(
                args.config,
                args.device,
                fmt=args.format,
                start=args.start,
                end=args.end,
                output=args.output,
                tz=args.tz,
                paper=args.paper,
                include_serial=args.include_serial,
                unit=args.unit,
            )
        if args.command == "demo":
            from gatewayd.demo import run_demo

            return asyncio.run(
                run_demo(
                    devices=args.devices,
                    speed=args.speed,
                    port=args.port,
                    duration=args.duration,
                )
            )
        if args.command == "simulate":
            from gatewayd.simulate import run_simulate

            return run_simulate(
                args.device,
                hci=args.hci,
                pty_link=args.pty_link,
                duration=args.duration,
                settings=args.set,
            )
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
    return EXIT_USAGE


def _run(config_path: Path) -> int:
    from gatewayd import config, logs, privacy
    from gatewayd.daemon import Daemon, plan

    cfg = config.load(config_path)
    logs.configure(
        cfg.log.level, cfg.log.format, privacy=cfg.log.privacy, secrets=[cfg.mqtt.password]
    )
    validated = plan(cfg)
    for _, options in validated.services:  # e.g. Nightscout's API secret: never in a log line
        privacy.register_secrets_of(options)

    async def main() -> None:
        await Daemon(validated).run()

    asyncio.run(main())
    return 0


def _drivers() -> int:
    from gatewayd import registry

    installed = registry.installed()
    if not installed:
        print("no drivers installed")
        return 1
    for entry in installed:
        try:
            plugin = registry.load(entry.name)
        except PluginError as exc:
            print(f"{entry.name}: BROKEN: {exc}\n")
            continue
        print(f"{plugin.name} ({plugin.transport}) — {plugin.summary}")
        print(f"  from {entry.target} [{entry.distribution or 'unknown distribution'}]")
        body = plugin.help.strip().splitlines()[1:]
        for line in body:
            print(f"  {line}" if line else "")
        print()
    return 0
