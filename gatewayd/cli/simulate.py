"""`gatewayd simulate --device NAME`: a driver's emulated device, standalone (see emulators)."""

from __future__ import annotations

import argparse
from pathlib import Path

from gatewayd.emulators import run_simulate


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`gatewayd simulate`'s options."""
    parser.add_argument("--device", required=True, help="e.g. dexcom-receiver, cgms, glucose")
    parser.add_argument("--hci", help="BLE emulators: tcp-server:HOST:PORT to serve HCI on")
    parser.add_argument(
        "--pty-link", "--link", type=Path, help="serial emulators: the symlink to the pty"
    )
    parser.add_argument("--duration", type=float, help="stop after SECONDS (default: Ctrl-C)")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="a device option"
    )


def main(args: argparse.Namespace) -> int:
    """Serve the emulated device until stopped."""
    return run_simulate(
        args.device,
        hci=args.hci,
        pty_link=args.pty_link,
        duration=args.duration,
        settings=args.set,
    )
