"""The Nightscout bridge against a small real HTTP server standing in for Nightscout.

The stand-in checks the `api-secret` header, upserts like Nightscout (on `identifier`, else
(`date`, `type`)), and can answer 500, lose its answer after storing, refuse a batch, or be down.
"""

from __future__ import annotations

import hashlib
import json
import ssl
import threading
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from certs import TestPKI, make_pki
from gatewayd.errors import ConfigError
from gatewayd.integrations import nightscout
from mosquitto import free_port

pytestmark = pytest.mark.timeout(30)

SECRET = "correct-horse-battery"  # a test site's secret


def sha1(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()  # noqa: S324 - Nightscout's scheme


class FakeNightscout:
    """`POST /api/v1/entries` with Nightscout's auth and upsert, plus injectable faults."""

    def __init__(self, pki: TestPKI | None = None) -> None:
        self.pki = pki
        self.port = free_port()
        self.api_secret = sha1(SECRET)
        self.entries: dict[Any, dict[str, Any]] = {}
        self.posts: list[list[dict[str, Any]]] = []  # every batch that reached the handler
        self.lost: list[list[dict[str, Any]]] = []  # batches stored whose answer was lost
        self.answers: Counter[int] = Counter()
        self.fail_next = 0
        self.lose_next = 0
        self.refuse: Callable[[dict[str, Any]], bool] = lambda _: False
        self.lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    def start(self) -> None:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with fake.lock:
                    status = fake.handle(self.path, self.headers.get("api-secret"), body)
                if status is None:
                    self.close_connection = True  # stored, but the answer never leaves
                    return
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        if self.pki is not None:
            tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            tls.load_cert_chain(self.pki.server_cert, self.pki.server_key)
            self._server.socket = tls.wrap_socket(self._server.socket, server_side=True)
        server = self._server
        threading.Thread(
            target=lambda: server.serve_forever(poll_interval=0.01), daemon=True
        ).start()

    def stop(self) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()

    def handle(self, path: str, secret: str | None, body: bytes) -> int | None:
        status = self._status(path, secret, body)
        if status is not None:
            self.answers[status] += 1
        return status

    def _status(self, path: str, secret: str | None, body: bytes) -> int | None:
        if path != "/ns/api/v1/entries":
            return 404
        if secret != self.api_secret:
            return 401
        if self.fail_next:
            self.fail_next -= 1
            return 500
        docs = json.loads(body)
        self.posts.append(docs)
        if any(self.refuse(d) for d in docs):
            return 400
        for doc in docs:
            self.entries[doc.get("identifier") or (doc["date"], doc["type"])] = doc
        if self.lose_next:
            self.lose_next -= 1
            self.lost.append(docs)
            return None
        return 200

    def stored(self) -> int:
        with self.lock:
            return len(self.entries)


@pytest.fixture
def site(tmp_path: Path) -> Any:
    fake = FakeNightscout()
    fake.start()
    yield fake
    fake.stop()


def ns_table(rig: Any, fake: FakeNightscout, **extra: Any) -> dict[str, Any]:
    secret = rig.folder / "ns-secret"
    secret.write_text(SECRET + "\n")
    return {
        "url": f"http://127.0.0.1:{fake.port}/ns/",
        "api_secret_file": str(secret),
        "backoff_min": 0.02,
        "backoff_max": 0.1,
        "timeout": 5,
        **extra,
    }


async def test_every_reading_reaches_nightscout_once_across_outages(rig: Any, site: Any) -> None:
    config = rig.config(nightscout=ns_table(rig, site, batch_size=3))
    fed = [rig.reading("cgm-a", seq, 100.0 + seq) for seq in range(1, 11)]

    site.fail_next = 2  # 500s first
    async with rig.running(rig.daemon(config, nightscout.SPEC)) as daemon:
        bridge = daemon.services[0]
        rig.feed("cgm-a", *fed[:4])
        await rig.wait_until(lambda: site.stored() == 4, what="4 entries after 500s")
        assert site.answers[500] == 2
        assert bridge.failures >= 2

        site.lose_next = 1  # stored, then the answer is lost: the bridge must resend
        rig.feed("cgm-a", *fed[4:6])
        await rig.wait_until(lambda: site.stored() == 6 and bridge.pending() == 0)
        assert len(site.lost) == 1

        site.stop()  # down: connection refused
        failures = bridge.failures
        rig.feed("cgm-a", *fed[6:9])
        await rig.wait_until(
            lambda: bridge.failures > failures and bridge.pending() == 3,
            what="a refused attempt, the three waiting",
        )
        site.start()
        # Stored by the site is not yet confirmed to the bridge: a stop in between would resend
        # that batch (at least once, by design), which is not what this restart checks.
        await rig.wait_until(
            lambda: site.stored() == 9 and bridge.pending() == 0,
            what="9 entries after the outage, confirmed",
        )

    # A restart resumes after the last confirmed reading: nothing is sent twice.
    async with rig.running(rig.daemon(config, nightscout.SPEC)):
        rig.feed("cgm-a", fed[9])
        await rig.wait_until(lambda: site.stored() == 10, what="the 10th entry")

    assert set(site.entries) == {r.id for r in fed}
    assert len({(e["date"], e["type"]) for e in site.entries.values()}) == 10
    posted = Counter(d["identifier"] for batch in site.posts for d in batch)
    resent = {i for i, n in posted.items() if n > 1}
    assert resent == {d["identifier"] for d in site.lost[0]}  # only the unconfirmed batch
    assert max(len(batch) for batch in site.posts) <= 3
    first = site.entries[fed[0].id]
    assert first == {
        "type": "sgv",
        "sgv": 101,
        "date": int(fed[0].time.timestamp() * 1000),
        "dateString": fed[0].time.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "direction": "Flat",
        "trend": 4,
        "device": f"gatewayd/{rig.hub}/cgm-a",
        "identifier": fed[0].id,
    }


async def test_a_refused_entry_is_isolated_and_skipped(rig: Any, site: Any) -> None:
    site.refuse = lambda doc: doc["sgv"] == 250
    config = rig.config(nightscout=ns_table(rig, site, batch_size=8))
    fed = [rig.reading("cgm-a", s, 250.0 if s == 4 else 100.0 + s) for s in range(1, 8)]
    async with rig.running(rig.daemon(config, nightscout.SPEC)) as daemon:
        bridge = daemon.services[0]
        site.stop()  # all seven stored before the first batch goes out
        rig.feed("cgm-a", *fed)
        await rig.wait_until(lambda: bridge.pending() == len(fed), what="all stored")
        site.start()
        await rig.wait_until(lambda: bridge.pending() == 0 and bridge.skipped == 1)
    assert set(site.entries) == {r.id for i, r in enumerate(fed) if i != 3}
    refused = [batch for batch in site.posts if any(d["sgv"] == 250 for d in batch)]
    assert len(refused[0]) > 1  # the whole batch, then halves, then the entry alone
    assert [d["sgv"] for d in refused[-1]] == [250]
    assert site.answers[400] == len(refused)


async def test_a_wrong_secret_is_retried_and_loses_nothing(rig: Any, site: Any) -> None:
    site.api_secret = sha1("another secret")
    config = rig.config(nightscout=ns_table(rig, site))
    fed = [rig.reading("cgm-a", seq) for seq in range(1, 4)]
    async with rig.running(rig.daemon(config, nightscout.SPEC)) as daemon:
        bridge = daemon.services[0]
        rig.feed("cgm-a", *fed)
        await rig.wait_until(lambda: site.answers[401] >= 2, what="two 401s")
        assert site.stored() == 0
        assert bridge.pending() == 3
        site.api_secret = sha1(SECRET)
        await rig.wait_until(lambda: site.stored() == 3, what="all after the fix")


@pytest.mark.parametrize(
    ("mode", "expected", "skipped"),
    [("send", [39, 401, 39, 120], 0), ("skip", [39, 120], 2)],
)
async def test_out_of_range_readings(
    rig: Any, site: Any, mode: str, expected: list[int], skipped: int
) -> None:
    config = rig.config(nightscout=ns_table(rig, site, out_of_range=mode))
    fed = [
        rig.reading("cgm-a", 1, None, out_of_range="low"),
        rig.reading("cgm-a", 2, None, out_of_range="high"),
        rig.reading("cgm-a", 3, 30.0),  # measured, below what Nightscout shows as a number
        rig.reading("cgm-a", 4, 120.0),
    ]
    async with rig.running(rig.daemon(config, nightscout.SPEC)) as daemon:
        bridge = daemon.services[0]
        rig.feed("cgm-a", *fed)
        await rig.wait_until(lambda: bridge.pending() == 0 and bridge.sent == len(expected))
    assert [d["sgv"] for d in sorted(site.entries.values(), key=lambda d: d["date"])] == expected
    assert bridge.skipped == skipped


async def test_first_start_backfills_only_the_configured_hours(rig: Any, site: Any) -> None:
    config = rig.config(nightscout=ns_table(rig, site, backfill_hours=2))
    old = rig.reading("cgm-a", 1, minutes_ago=180)
    recent = rig.reading("cgm-a", 2, minutes_ago=60)
    async with rig.running(rig.daemon(config)) as daemon:  # stored before the bridge existed
        rig.feed("cgm-a", old, recent)
        await rig.wait_until(lambda: daemon.supervisor.devices[0].stored == 2)
    async with rig.running(rig.daemon(config, nightscout.SPEC)) as daemon:
        bridge = daemon.services[0]
        await rig.wait_until(lambda: site.stored() == 1 and bridge.pending() == 0)
    assert set(site.entries) == {recent.id}


async def test_https_verifies_the_site_against_its_ca(rig: Any, tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    site = FakeNightscout(pki)
    site.start()
    try:
        url = f"https://localhost:{site.port}/ns"
        unknown_ca = rig.config(nightscout=ns_table(rig, site, url=url))
        async with rig.running(rig.daemon(unknown_ca, nightscout.SPEC)) as daemon:
            rig.feed("cgm-a", rig.reading("cgm-a", 1))
            await rig.wait_until(lambda: daemon.services[0].failures >= 2, what="TLS refused")
        assert site.stored() == 0
        trusted = rig.config(nightscout=ns_table(rig, site, url=url, ca_file=str(pki.ca_cert)))
        async with rig.running(rig.daemon(trusted, nightscout.SPEC)):
            await rig.wait_until(lambda: site.stored() == 1, what="upload over TLS")
    finally:
        site.stop()


@pytest.mark.parametrize(
    ("change", "key", "fragment"),
    [
        ({"url": "ftp://ns.example.org"}, "url", "http(s)://"),
        ({"url": "http://ns.example.org"}, "url", "https://"),
        ({"url": "https://me:pw@ns.example.org"}, "url", "credentials"),
        ({"url": "https://ns.example.org/?token=abc"}, "url", "query"),
        ({"api_secret_file": "missing"}, "api_secret_file", "cannot read"),
        ({"devices": ["cgm-z"]}, "devices", "cgm-z"),
        ({"out_of_range": "clamp"}, "out_of_range", "send, skip"),
        ({"batch_size": 0}, "batch_size", ">= 1"),
        ({"retries": 3}, "retries", "unknown key"),
    ],
)
def test_bad_config_fails_at_start(
    rig: Any, site: Any, change: dict[str, Any], key: str, fragment: str
) -> None:
    table = {**ns_table(rig, site), **change}
    with pytest.raises(ConfigError) as info:
        nightscout.parse(rig.config(nightscout=table))
    assert info.value.key == f"nightscout.{key}"
    assert fragment in info.value.reason


def test_config_is_checked_and_the_secret_hashed(rig: Any, site: Any) -> None:
    table = ns_table(rig, site, url="https://ns.example.org/")
    options = nightscout.parse(rig.config(nightscout=table))
    assert options is not None
    assert options.url == "https://ns.example.org"
    assert options.api_secret == sha1(SECRET)
    assert SECRET not in repr(options)
    assert options.api_secret not in repr(options)
    assert options.devices == ("cgm-a",)
    assert nightscout.parse(rig.config(nightscout={**table, "enabled": False})) is None
    with pytest.raises(ConfigError) as info:  # one Nightscout site shows one person
        nightscout.parse(rig.config(("cgm-a", "cgm-b"), nightscout=table))
    assert info.value.key == "nightscout.devices"
    two = nightscout.parse(
        rig.config(("cgm-a", "cgm-b"), nightscout={**table, "devices": ["cgm-b"]})
    )
    assert two is not None
    assert two.devices == ("cgm-b",)
    (rig.folder / "ns-secret").write_text("\n")
    with pytest.raises(ConfigError, match="is empty"):
        nightscout.parse(rig.config(nightscout=table))
