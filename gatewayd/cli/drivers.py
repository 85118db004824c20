"""`gatewayd drivers`: the installed driver plugins, each with where it comes from and its help."""

from __future__ import annotations

import argparse

from gatewayd import registry
from gatewayd.errors import PluginError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`gatewayd drivers` takes no options."""


def main(args: argparse.Namespace) -> int:
    """Print every installed plugin; a broken one is listed as BROKEN with the reason."""
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
