"""Nightscout: uploads every stored reading as an `sgv` entry, exactly once in effect.

The store is the outbox. A cursor per site (the newest `readings` rowid Nightscout confirmed)
lives in the store's `nightscout_cursor` table and moves past a batch only after a 2xx answer
to `POST <url>/api/v1/entries`; after an outage, a 5xx or a restart, upload resumes at the first
unconfirmed reading, with capped, jittered backoff between attempts. A batch the server
confirmed but whose answer was lost is sent again: Nightscout upserts entries on (`sysTime`,
`type`) in API v1, and `identifier` (the reading's deterministic id) in API v3, so the resend
replaces instead of duplicating.

- Auth: `api-secret: <SHA-1 hex of API_SECRET>` (the secret file holds the plain API_SECRET).
- A batch refused as malformed (400, 413, 422) is halved until the one refused entry is found;
  that entry is logged (`nightscout_entry_rejected`) and skipped, so one bad entry cannot stop
  the upload forever. Every other answer (401, 404, 429, 5xx, a redirect) is retried.
- Out-of-range readings: Nightscout shows `sgv` 39 as LOW and 401 as HIGH, so with
  `out_of_range = "send"` (the default) a LOW is uploaded as 39 and a HIGH as 401, and a
  measured value below 39 as 39 (Nightscout reads lower numbers as error codes); a missed LOW on
  a caregiver's screen is the worst outcome. `out_of_range = "skip"` uploads measured values only.
- The first start sends the last `backfill_hours` of history; later starts resume the cursor.
- HTTP runs on asyncio streams (no thread, cancellable); redirects are not followed, so the
  secret never goes to a host it was not configured for. Plain http:// only to loopback unless
  `allow_http = true`.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import json
import ssl
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import structlog

from gatewayd import __version__
from gatewayd.backoff import Backoff
from gatewayd.models import Direction, Reading, isoformat_utc
from gatewayd.ops.config import Config
from gatewayd.options import OptionReader
from gatewayd.services import ServiceContext, ServiceSpec
from gatewayd.store import Store

_DDL = """
CREATE TABLE IF NOT EXISTS nightscout_cursor (
    site TEXT PRIMARY KEY,
    after_rowid INTEGER NOT NULL,
    floor_ms INTEGER NOT NULL
);
"""
#: Nightscout's display codes for below / above the measurable range.
SGV_LOW, SGV_HIGH = 39, 401
#: Numeric trend of each arrow (Dexcom receiver enum, as Nightscout's pebble endpoint uses).
_TREND = {
    Direction.NONE: 0,
    Direction.DOUBLE_UP: 1,
    Direction.SINGLE_UP: 2,
    Direction.FORTY_FIVE_UP: 3,
    Direction.FLAT: 4,
    Direction.FORTY_FIVE_DOWN: 5,
    Direction.SINGLE_DOWN: 6,
    Direction.DOUBLE_DOWN: 7,
    Direction.NOT_COMPUTABLE: 8,
    Direction.RATE_OUT_OF_RANGE: 9,
}
#: Answers meaning "this batch is malformed": retrying it unchanged can never succeed.
_REJECTED = frozenset({400, 413, 422})


@dataclass(frozen=True, slots=True)
class NightscoutOptions:
    """`[nightscout]`."""

    url: str
    api_secret: str = field(repr=False)  # SHA-1 hex
    devices: tuple[str, ...]
    batch_size: int = 100
    timeout: float = 30.0
    backoff_min: float = 1.0
    backoff_max: float = 300.0
    out_of_range: str = "send"
    backfill_hours: float = 24.0
    ca_file: Path | None = None


def parse(config: Config) -> NightscoutOptions | None:
    """Validate `[nightscout]`; None when absent or `enabled = false`."""
    r = config.section("nightscout")
    if r is None:
        return None
    base = config.file.parent if config.file is not None else Path.cwd()
    enabled = r.boolean("enabled", True)
    url = _url(r)
    ca_file = r.optional_path("ca_file", base=base)
    if ca_file is not None and not ca_file.is_file():
        raise r.error("ca_file", f"no such file: {ca_file}")
    low = r.number("backoff_min", 1.0, minimum=0, exclusive_minimum=True)
    high = r.number("backoff_max", 300.0, minimum=0, exclusive_minimum=True)
    if high < low:
        raise r.error("backoff_max", f"must be >= backoff_min ({low}), got {high}")
    options = NightscoutOptions(
        url=url,
        api_secret=_secret(r, base),
        devices=_devices(r, config),
        batch_size=r.integer("batch_size", 100, minimum=1, maximum=1000),
        timeout=r.number("timeout", 30.0, minimum=0, exclusive_minimum=True),
        backoff_min=low,
        backoff_max=high,
        out_of_range=r.choice("out_of_range", ("send", "skip"), "send"),
        backfill_hours=r.number("backfill_hours", 24.0, minimum=0),
        ca_file=ca_file,
    )
    r.finish()
    return options if enabled else None


def _url(r: OptionReader) -> str:
    url = r.string("url")
    allow_http = r.boolean("allow_http", False)
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise r.error("url", f"not a valid URL: {exc}") from None
    if not url.isascii() or parts.scheme not in {"http", "https"} or not parts.hostname:
        raise r.error("url", f"must be http(s)://host[:port][/path], got {url!r}")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise r.error("url", "must carry no credentials, query or fragment; use api_secret_file")
    if parts.scheme == "http" and not allow_http and not _loopback(parts.hostname):
        raise r.error(
            "url",
            "must be https:// (the API secret and health data would cross the network in "
            "clear); set allow_http = true to accept that",
        )
    return url.rstrip("/")


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _secret(r: OptionReader, base: Path) -> str:
    path = r.path("api_secret_file", base=base)
    try:
        secret = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise r.error("api_secret_file", f"cannot read {path}: {exc.strerror}") from None
    if not secret:
        raise r.error("api_secret_file", f"{path} is empty")
    return hashlib.sha1(secret.encode()).hexdigest()  # noqa: S324 - Nightscout's own scheme


def _devices(r: OptionReader, config: Config) -> tuple[str, ...]:
    known = [d.id for d in config.devices]
    raw = r.raw("devices", None)
    if raw is None:
        enabled = tuple(d.id for d in config.devices if d.enabled)
        if len(enabled) > 1:
            raise r.error(
                "devices",
                "is required when the hub has several devices (a Nightscout site shows one "
                f"person): list the ones to upload, of {', '.join(enabled)}",
            )
        return enabled
    if not isinstance(raw, list) or not raw or not all(isinstance(d, str) for d in raw):
        raise r.error("devices", f"must be a non-empty list of device ids, got {raw!r}")
    for device in raw:
        if device not in known:
            raise r.error("devices", f"no [[devices]] table has id {device!r}")
    return tuple(dict.fromkeys(raw))


def entry(reading: Reading, hub: str, out_of_range: str = "send") -> dict[str, Any] | None:
    """The Nightscout `sgv` entry of a reading (None when it is not to be uploaded)."""
    if reading.glucose_mgdl is not None:
        sgv = max(SGV_LOW, round(reading.glucose_mgdl))
    elif out_of_range == "skip":
        return None
    else:
        sgv = SGV_LOW if reading.out_of_range == "low" else SGV_HIGH
    return {
        "type": "sgv",
        "sgv": sgv,
        "date": int(reading.time.timestamp() * 1000),
        "dateString": isoformat_utc(reading.time),
        "direction": str(reading.direction),
        "trend": _TREND[reading.direction],
        "device": f"gatewayd/{hub}/{reading.device}",
        "identifier": reading.id,
    }


def _why(status: int) -> str:
    """An answer that is retried, with what the operator may have to fix."""
    if 300 <= status < 400:
        return f"HTTP {status}: redirected (not followed); set url to the final address"
    if status in {401, 403}:
        return f"HTTP {status}: check api_secret_file (the site's API_SECRET)"
    if status == 404:
        return "HTTP 404: check url (no Nightscout API there)"
    return f"HTTP {status}"


class _Client:
    """One `POST .../api/v1/entries` per call on a fresh connection; returns the status code."""

    def __init__(self, options: NightscoutOptions) -> None:
        parts = urlsplit(options.url)
        self.https = parts.scheme == "https"
        self.host = parts.hostname or ""
        self.port = parts.port or (443 if self.https else 80)
        self.path = f"{parts.path.rstrip('/')}/api/v1/entries"
        self.netloc = parts.netloc
        self.secret = options.api_secret
        self.timeout = options.timeout
        self.tls = (
            ssl.create_default_context(
                cafile=str(options.ca_file) if options.ca_file is not None else None
            )
            if self.https
            else None
        )

    async def post(self, body: bytes) -> int:
        """The answer's status code; OSError, TimeoutError or ValueError when there is none."""
        head = (
            f"POST {self.path} HTTP/1.1\r\nHost: {self.netloc}\r\n"
            f"User-Agent: gatewayd/{__version__}\r\nContent-Type: application/json\r\n"
            f"Accept: application/json\r\napi-secret: {self.secret}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        )
        async with asyncio.timeout(self.timeout):
            reader, writer = await asyncio.open_connection(
                self.host, self.port, ssl=self.tls, server_hostname=self.host if self.tls else None
            )
            try:
                writer.write(head.encode("latin-1") + body)
                await writer.drain()
                status = (await reader.readline()).split(None, 2)
            finally:
                writer.close()
        if len(status) < 2 or not status[0].startswith(b"HTTP/") or not status[1].isdigit():
            raise ValueError("no HTTP answer")
        return int(status[1])


class Nightscout:
    """Uploads the configured devices' readings to one Nightscout site."""

    def __init__(self, options: NightscoutOptions, context: ServiceContext) -> None:
        self.options = options
        self.store: Store = context.store
        self.hub = context.topics.hub
        self.log = structlog.get_logger().bind(component="nightscout", site=options.url)
        self.client = _Client(options)
        #: Entries confirmed, readings skipped (out of range or rejected), failed attempts.
        self.sent = 0
        self.skipped = 0
        self.failures = 0
        self._wake = asyncio.Event()
        self._devices = frozenset(options.devices)
        self._limit = options.batch_size
        context.store.ensure_schema(_DDL)
        self._cursor, self._floor = self._load_cursor()

    def on_reading(self, reading: Reading) -> None:
        """A new reading is stored: upload it soon."""
        if reading.device in self._devices:
            self._wake.set()

    async def run(self) -> None:
        """Upload until cancelled."""
        backoff = Backoff(self.options.backoff_min, self.options.backoff_max)
        self.log.info("nightscout_starting", pending=self.pending())
        while True:
            self._wake.clear()
            rows = self._rows()
            if not rows:
                await self._wake.wait()
                continue
            failure = await self._upload(rows)
            if failure is None:
                backoff.reset()
                continue
            self.failures += 1
            delay = backoff.next()
            self.log.warning(
                "nightscout_unavailable",
                error=failure,
                retry_in_s=round(delay, 2),
                attempt=backoff.attempts,
                pending=self.pending(),
            )
            await asyncio.sleep(delay)

    async def _upload(self, rows: list[tuple[int, Reading]]) -> str | None:
        """Send one batch; None when that made progress, else why it did not."""
        out_of_range = self.options.out_of_range
        made = (entry(reading, self.hub, out_of_range) for _, reading in rows)
        entries = [e for e in made if e is not None]
        status = 200
        if entries:
            body = json.dumps(entries, separators=(",", ":")).encode()
            try:
                status = await self.client.post(body)
            except (OSError, TimeoutError, ValueError) as exc:
                return str(exc) or type(exc).__name__
        if 200 <= status < 300:
            self._advance(rows[-1][0])
            self.sent += len(entries)
            self.skipped += len(rows) - len(entries)
            self._limit = self.options.batch_size
            return None
        if status not in _REJECTED:
            return _why(status)
        if len(rows) > 1:  # halve until the refused entry is alone
            self._limit = max(1, len(rows) // 2)
            self.log.warning("nightscout_batch_rejected", status=status, size=len(rows))
            return None
        self.log.error(
            "nightscout_entry_rejected", status=status, identifier=entries[0]["identifier"]
        )
        self._advance(rows[-1][0])
        self.skipped += 1
        return None

    def pending(self) -> int:
        """Readings not yet confirmed by Nightscout."""
        return self.store.count_after(self._cursor, self.options.devices, self._floor)

    def _load_cursor(self) -> tuple[int, int]:
        floor = int((datetime.now(UTC).timestamp() - self.options.backfill_hours * 3600) * 1000)
        with self.store.transaction() as db:
            db.execute(
                "INSERT OR IGNORE INTO nightscout_cursor VALUES (?, 0, ?)",
                (self.options.url, floor),
            )
            after, floor = db.execute(
                "SELECT after_rowid, floor_ms FROM nightscout_cursor WHERE site = ?",
                (self.options.url,),
            ).fetchone()
        return int(after), int(floor)

    def _rows(self) -> list[tuple[int, Reading]]:
        """The next unconfirmed readings of the uploaded devices (readings held for an
        unsynchronised clock, and all after them, wait until re-dated)."""
        return self.store.readings_after(
            self._cursor, self.options.devices, self._floor, self._limit
        )

    def _advance(self, rowid: int) -> None:
        with self.store.transaction() as db:
            db.execute(
                "UPDATE nightscout_cursor SET after_rowid = ? WHERE site = ?",
                (rowid, self.options.url),
            )
        self._cursor = rowid


def create(options: NightscoutOptions, context: ServiceContext) -> Nightscout:
    """Build the service."""
    return Nightscout(options, context)


SPEC: ServiceSpec[NightscoutOptions] = ServiceSpec("nightscout", parse, create)
