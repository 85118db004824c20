"""`gatewayd run --config FILE`: the daemon itself, under systemd or in a terminal."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

import structlog

from gatewayd.daemon import Daemon, plan
from gatewayd.ops import config, cpu, logs, privacy


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
        daemon = Daemon(validated)  # a store it cannot open fails here, before any log line
        if cfg.hub.one_cpu:  # before the daemon's threads start (and any started, moved too)
            _keep_on_one_cpu()
        await daemon.run()

    asyncio.run(run())
    return 0


def _keep_on_one_cpu() -> None:
    log = structlog.get_logger()
    try:
        chosen = cpu.keep_on_one_cpu()
    except OSError as exc:
        log.warning("one_cpu_refused", reason=exc.strerror or str(exc))
    else:
        if chosen is not None:
            log.info("threads_on_one_cpu", cpu=chosen)
