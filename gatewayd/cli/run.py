"""`gatewayd run --config FILE`: the daemon itself, under systemd or in a terminal."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from gatewayd.daemon import Daemon, plan
from gatewayd.ops import config, logs, privacy


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`gatewayd run`'s options."""
    parser.add_argument("--config", "-c", type=Path, required=True, help="the TOML config file")


def main(args: argparse.Namespace) -> int:
    """Load and check the config, configure the logs, then run until stopped."""
    cfg = config.load(args.config)
    logs.configure(
        cfg.log.level, cfg.log.format, privacy=cfg.log.privacy, secrets=[cfg.mqtt.password]
    )
    validated = plan(cfg)
    for _, options in validated.services:  # e.g. Nightscout's API secret: never in a log line
        privacy.register_secrets_of(options)

    async def run() -> None:
        await Daemon(validated).run()

    asyncio.run(run())
    return 0
