"""The broker link: drains the store's outbox to MQTT with QoS 1, in order, losing nothing.

One long-lived loop owns the connection and reconnects with capped, jittered backoff
(`[mqtt] backoff_min` … `backoff_max`). With several broker URLs (the nodes of a cluster) every
attempt goes to the next one in turn, so a stopped node costs one failed attempt, not an outage;
the LWT and the birth go to whichever node was reached. The link's state, with the time of the
next attempt, is left beside the store for `gatewayd status` (gatewayd.mqtt.broker_state). While
connected it publishes the hub's retained `online` birth (the LWT says `offline`), every device's
retained status and state, then the outbox: oldest row first, at most `inflight` messages
awaiting PUBACK at once. A row leaves the outbox only after its PUBACK; after a reconnect or a
restart, publishing resumes from the oldest row still there, so integrators may see a duplicate
(same `id`) but never a gap the hub had.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import socket
import ssl
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import aiomqtt
import structlog

from gatewayd.backoff import Backoff
from gatewayd.device_status import DeviceStatus
from gatewayd.errors import BrokerRefused, PublishError
from gatewayd.mqtt.broker_state import BrokerLink, BrokerState, state_path, write_state
from gatewayd.mqtt.client import Client
from gatewayd.mqtt.tls import client_context
from gatewayd.mqtt.topics import Topics
from gatewayd.ops.config import MqttConfig
from gatewayd.store import PendingRow, Store, StoreFull
from gatewayd.store.codec import reading_payload_json

#: Rows read from the store per query while draining (bounded memory during a long replay).
_BATCH = 500
#: Acknowledged rows are removed from the outbox in one transaction per this many.
_MARK_EVERY = 200
#: Seconds an unacknowledged publish may wait before the link is declared dead.
_PUBLISH_TIMEOUT = 10.0


#: aiomqtt warns on every publish beyond ten pending; our window bounds that on purpose.
_AIOMQTT_LOG = logging.getLogger("gatewayd.aiomqtt")
_AIOMQTT_LOG.setLevel(logging.ERROR)


def _json(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


def tls_context(cfg: MqttConfig) -> ssl.SSLContext | None:
    """The TLS context of the broker link (None for mqtt://), read from the files again on each
    call (`gatewayd.mqtt.tls`); raises `TlsFileError`. `gatewayd doctor` connects with it too."""
    return client_context(cfg.ca_file, cfg.cert_file, cfg.key_file) if cfg.tls else None


class Publisher:
    """Publishes what the store holds; call `notify()` after adding rows."""

    def __init__(
        self,
        config: MqttConfig,
        hub_id: str,
        store: Store,
        *,
        backoff: Backoff | None = None,
        log: structlog.typing.FilteringBoundLogger | None = None,
    ) -> None:
        self.config = config
        self.hub = hub_id
        self.topics = Topics(config.topic_root, hub_id)
        self.store = store
        store.on_commit = self.notify
        self.log = log or structlog.get_logger().bind(component="publisher")
        self.connected = asyncio.Event()
        self.delivered = 0
        #: Readings acknowledged by the broker, per device (since start; for metrics).
        self.published: Counter[str] = Counter()
        self.reconnects = 0
        self._backoff = backoff or Backoff(config.backoff_min, config.backoff_max)
        #: Index into `config.brokers` of the broker of the current / next attempt.
        self.broker_index = 0
        self._state_file = state_path(store.path)
        self._unavailable_since: datetime | None = None
        self._wake = asyncio.Event()
        self._stopping = False
        self._acked: list[int] = []
        self._statuses: dict[str, DeviceStatus] = {}
        self._dirty_status: set[str] = set()
        self._state_sent: dict[str, int] = {}  # device -> rowid of the reading sent as state
        #: Per device, the newest reading (by measured time) acknowledged in this session.
        self._newest: dict[str, PendingRow] = {}
        self._dirty_state: set[str] = set()
        #: Per device, when its retained state was last handed to the broker (monotonic).
        self._state_at: dict[str, float] = {}
        #: Devices whose state changed within `state_interval` of the last one sent, and when
        #: the first of them is due (monotonic).
        self._deferred: set[str] = set()
        self._deferred_due = math.inf
        self._state_timer: asyncio.TimerHandle | None = None
        #: Readings and states awaiting their PUBACK; set when there are none, and when one
        #: more may be sent.
        self._in_flight = 0
        self._drained = asyncio.Event()
        self._room = asyncio.Event()
        #: When the window last moved (a PUBACK, or the first message into an empty window),
        #: monotonic: `_watch_acks` ends a session whose window stands still too long.
        self._moved_at = 0.0
        self._subscriptions: dict[str, Callable[[str, bytes], None]] = {}
        #: Messages acknowledged by the broker that a full disk kept us from deleting.
        self._sent_messages: set[int] = set()
        self._acks_held = False
        #: Acknowledgements handed to the store's writer thread, not yet committed.
        self._writing: set[asyncio.Future[None]] = set()
        #: Acknowledged messages a full disk kept the writer from deleting.
        self._undeleted: set[int] = set()

    # -- inputs from the rest of the daemon ------------------------------------------------

    def notify(self) -> None:
        """New rows are in the outbox."""
        self._wake.set()

    def set_status(self, status: DeviceStatus) -> None:
        """Record a device's link state; published (retained) as soon as the link allows."""
        self._statuses[status.device] = status
        self._dirty_status.add(status.device)
        self._wake.set()

    def subscribe(self, topic_filter: str, handler: Callable[[str, bytes], None]) -> None:
        """Call `handler(topic, payload)` for every message on `topic_filter` (QoS 1),
        re-subscribed after every reconnect. Handlers must be quick and must not raise."""
        self._subscriptions[topic_filter] = handler

    def stop(self) -> None:
        """Ask `run()` to flush what it can, say `offline`, and return."""
        self._stopping = True
        self._wake.set()

    # -- the connection loop -----------------------------------------------------------------

    async def run(self) -> None:
        """Stay connected and drain the outbox until `stop()`; never raises on broker faults."""
        try:
            await self._run()
            if self._writing:  # the last acknowledgements on disk before saying we are done
                self._writing.add(self.store.mark_delivered_soon([], lazy=False))
                await asyncio.wait(self._writing)
        finally:
            self._leave_state(BrokerLink.STOPPED, self.url)

    @property
    def url(self) -> str:
        """The URL of the broker in use, or of the next attempt."""
        return self.config.brokers[self.broker_index].url

    async def _run(self) -> None:
        while not self._stopping:
            try:
                async with self._client() as client:
                    self.connected.set()
                    self._backoff.reset()
                    self._unavailable_since = None
                    self._leave_state(BrokerLink.CONNECTED, self.url)
                    self.log.info("broker_connected", url=self.url)
                    try:
                        await self._session(client)
                    except asyncio.CancelledError:
                        await self._say_offline_now(client)
                        raise
                    return
            except* (aiomqtt.MqttError, PublishError) as group:
                # A TLS file replaced by garbage (a botched rotation) is a broker link that
                # cannot come up, a refused publish one that cannot deliver: readings keep
                # landing in the store while we retry.
                error = self._lost(group.exceptions[0])
            finally:
                self.connected.clear()
                self._flush_acks(lazy=False)
            if self._stopping:
                return
            self.broker_index = (self.broker_index + 1) % len(self.config.brokers)
            delay = self._backoff.next()
            self._leave_state(BrokerLink.UNAVAILABLE, self.url, reason=error, in_s=delay)
            self.log.info(
                "broker_retry", in_s=round(delay, 2), attempt=self._backoff.attempts, url=self.url
            )
            try:
                async with asyncio.timeout(delay):
                    await self._wait_for_stop()
            except TimeoutError:
                pass

    def _leave_state(
        self, state: BrokerLink, url: str, *, reason: str | None = None, in_s: float | None = None
    ) -> None:
        """Write the link's state for `gatewayd status`."""
        now = datetime.now(UTC)
        if state is BrokerLink.UNAVAILABLE and self._unavailable_since is None:
            self._unavailable_since = now
        since = self._unavailable_since if state is BrokerLink.UNAVAILABLE else now
        write_state(
            self._state_file,
            BrokerState(
                state=state,
                url=url,
                since=since or now,
                updated=now,
                reason=reason,
                next_attempt=None if in_s is None else now + timedelta(seconds=in_s),
            ),
        )

    async def _say_offline_now(self, client: aiomqtt.Client) -> None:
        """Cut short: the clean DISCONNECT that follows drops the LWT, so leave `offline`
        retained ourselves (QoS 0: written before the DISCONNECT, no acknowledgement awaited)."""
        with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
            async with asyncio.timeout(1.0):
                await client.publish(self.topics.hub_status, b"offline", qos=0, retain=True)

    def _lost(self, exc: BaseException) -> str:
        """Log why the link failed; returns the reason."""
        self.reconnects += 1
        error = str(exc) or repr(exc)
        self.log.warning(
            "broker_unavailable", url=self.url, error=error, outbox=self.store.outbox_depth()
        )
        return error

    async def _wait_for_stop(self) -> None:
        while not self._stopping:
            self._wake.clear()
            await self._wake.wait()

    def _client(self) -> Client:
        cfg = self.config
        tls = tls_context(cfg)
        broker = cfg.brokers[self.broker_index]
        return Client(
            broker.host,
            broker.port,
            username=cfg.username,
            password=cfg.password,
            identifier=cfg.client_id,
            protocol=(
                aiomqtt.ProtocolVersion.V5 if cfg.protocol == "5" else aiomqtt.ProtocolVersion.V311
            ),
            will=aiomqtt.Will(self.topics.hub_status, b"offline", qos=1, retain=True),
            keepalive=cfg.keepalive,
            timeout=_PUBLISH_TIMEOUT,
            logger=_AIOMQTT_LOG,
            tls_context=tls,
            max_inflight_messages=cfg.inflight,
            max_queued_outgoing_messages=0,
            # A reading and its retained state go out back to back: without this the second
            # waits for the broker's delayed ACK of the first (Nagle, up to 40 ms on Linux).
            socket_options=((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),),
        )

    async def _session(self, client: Client) -> None:
        """One connected session: birth, retained state, then drain until stopped.

        A dead link fails the watcher at once, which cancels whatever awaits a PUBACK that will
        never come (the birth of a node that died just after accepting us, a window of readings):
        aiomqtt would otherwise let each wait out the client timeout (10 s).
        """
        async with asyncio.TaskGroup() as tasks:
            watcher = tasks.create_task(self._watch_link(client))
            self._in_flight = 0
            stall = tasks.create_task(self._watch_acks())
            await client.publish(self.topics.hub_status, b"online", qos=1, retain=True)
            for topic_filter in self._subscriptions:
                await client.subscribe(topic_filter, qos=1)
            self._dirty_status.update(self._statuses)
            self._dirty_state.update(self._statuses)
            self._state_sent.clear()
            self._state_at.clear()
            self._dirty_state |= self._deferred
            self._deferred.clear()
            self._deferred_due = math.inf
            self._newest.clear()
            await self._drain(client)
            # Stopping: a clean disconnect does not fire the LWT, so say it ourselves.
            await self._publish_statuses(client)
            await client.publish(self.topics.hub_status, b"offline", qos=1, retain=True)
            self.log.info("broker_disconnecting", outbox=self.store.outbox_depth())
            watcher.cancel()
            stall.cancel()

    async def _drain(self, client: Client) -> None:
        """Publish until stopped: statuses, messages, the outbox in order within the window."""
        last = 0  # rowid of the last row handed to the broker in this session
        while True:
            self._wake.clear()
            await self._publish_statuses(client)
            # Alerts and the like go first: they must not wait behind a long replay.
            await self._publish_messages(client)
            rows = self.store.pending(_BATCH, after=last)
            if not rows:
                await self._idle(client)
                await self._publish_messages(client)
                self._publish_states(client)
                if self._stopping:
                    if self.store.pending(1, after=last):
                        continue  # committed while the window emptied: it goes out too
                    await self._idle(client)
                    return
                if not self._wake.is_set():
                    await self._wake.wait()
                continue
            for row in rows:
                while self._in_flight >= self.config.inflight:
                    self._room.clear()
                    await self._acks_for(client, self._room)
                self._send(client, row)
                last = row.rowid

    async def _watch_link(self, client: aiomqtt.Client) -> None:
        """Dispatch subscribed messages; raises `MqttError` as soon as the connection drops."""
        async for message in client.messages:
            payload = message.payload if isinstance(message.payload, bytes) else b""
            for topic_filter, handler in self._subscriptions.items():
                if message.topic.matches(topic_filter):
                    try:
                        handler(str(message.topic), payload)
                    except Exception:
                        self.log.exception("subscription_handler_failed", topic=str(message.topic))

    async def _publish_messages(self, client: Client) -> None:
        """Queued alerts, summaries and discovery configs, oldest first, each until PUBACK.

        An acknowledged message is deleted by the store's writer thread; until that commit (or,
        on a full disk, until it has room: gatewayd.store.full_disk) it is not sent again.
        """
        self._forget_sent_messages()
        while messages := [
            m
            for m in self.store.pending_messages(_BATCH + len(self._sent_messages))
            if m.rowid not in self._sent_messages
        ]:
            for message in messages:
                await client.publish(message.topic, message.payload, qos=1, retain=message.retain)
                if client.refused:
                    raise BrokerRefused(f"broker refused a publish: {client.refused[0]}")
                self._sent_messages.add(message.rowid)
                self._delete_message(message.rowid)

    def _delete_message(self, rowid: int) -> None:
        future = self.store.delete_message_soon(rowid)
        self._writing.add(future)
        future.add_done_callback(partial(self._message_deleted, rowid))

    def _message_deleted(self, rowid: int, future: asyncio.Future[None]) -> None:
        self._writing.discard(future)
        if not future.cancelled() and isinstance(future.exception(), StoreFull):
            self._undeleted.add(rowid)  # sent again to the writer by `_forget_sent_messages`
            return
        self._sent_messages.discard(rowid)

    def _forget_sent_messages(self) -> None:
        undeleted, self._undeleted = self._undeleted, set()
        for rowid in sorted(undeleted):
            self._delete_message(rowid)

    async def _idle(self, client: Client) -> None:
        """Wait for the in-flight window to empty, then persist the acknowledgements."""
        if self._in_flight:
            self._drained.clear()
            await self._acks_for(client, self._drained)
        self._flush_acks()

    async def _acks_for(self, client: Client, event: asyncio.Event) -> None:
        """Wait for PUBACKs until `event`; a refusal (`BrokerRefused`) ends the session, and so
        does a window that stands still (`_watch_acks`): the rows stay in the outbox."""
        await event.wait()
        if client.refused:  # keep the rows, reconnect and retry
            raise BrokerRefused(f"broker refused a publish: {client.refused[0]}")

    async def _watch_acks(self) -> None:
        """Raise `PublishError` (ending the session) when messages wait for their PUBACK and
        none came for `_PUBLISH_TIMEOUT` s, however long the window has been taking to empty.
        One timer for the session, re-armed at most once per `_PUBLISH_TIMEOUT` while PUBACKs
        come. (A timeout around each wait cost a timer per reading, cancelled but left in the
        event loop's heap until due: about 1,000 of them at 100 readings/s, for every other
        timer to sort past; 2-5 % of the live path's CPU.)"""
        while True:
            left = _PUBLISH_TIMEOUT
            if self._in_flight:
                left = self._moved_at + _PUBLISH_TIMEOUT - time.monotonic()
                if left <= 0:
                    raise PublishError(f"no PUBACK from the broker within {_PUBLISH_TIMEOUT:g} s")
            await asyncio.sleep(left)

    def _send(self, client: Client, row: PendingRow, *, state: bool = False) -> None:
        """Publish a stored row as its `reading` (or as the device's retained `state`)."""
        payload = reading_payload_json(
            row.record, row.serial, self.hub, include_serial=self.config.include_serial
        )
        topic = (self.topics.state if state else self.topics.reading)(row.device)
        client.publish_now(topic, payload, retain=state, acked=partial(self._on_ack, row, state))
        if not self._in_flight:
            self._moved_at = time.monotonic()
        self._in_flight += 1

    def _on_ack(self, row: PendingRow, state: bool, ok: bool) -> None:
        """A PUBACK of a reading or a state (`ok`: not refused, see `_acks_for`)."""
        self._in_flight -= 1
        self._moved_at = time.monotonic()
        self._room.set()
        if not self._in_flight:
            self._drained.set()
        if not ok:
            return
        if state:
            self._state_sent[row.device] = row.rowid
            return
        self._acked.append(row.rowid)
        newest = self._newest.get(row.device)
        if newest is None or (row.time_ms, row.rowid) > (newest.time_ms, newest.rowid):
            if newest is not None:  # else the store tells the newest (`_publish_states`)
                self._newest[row.device] = row
            self._dirty_state.add(row.device)
        self.delivered += 1
        self.published[row.device] += 1
        if len(self._acked) >= _MARK_EVERY:
            self._flush_acks()

    def _flush_acks(self, *, lazy: bool = True) -> None:
        """Hand the acknowledged rows to the store's writer thread: deleted from the outbox
        with the next commit of readings (a crash before that only sends them again); not
        `lazy`: at once (the link is lost)."""
        if not self._acked:
            return
        acked, self._acked = self._acked, []
        try:
            future = self.store.mark_delivered_soon(acked, lazy=lazy)
        except RuntimeError:  # no running loop (the store is closing): the sync way
            self._mark_now(acked)
            return
        self._writing.add(future)
        future.add_done_callback(partial(self._acks_written, acked))

    def _acks_written(self, acked: list[int], future: asyncio.Future[None]) -> None:
        self._writing.discard(future)
        if future.cancelled():
            return
        exc = future.exception()
        if isinstance(exc, StoreFull):
            # A full disk: the rows stay in the outbox and the acknowledgements in memory
            # until it has room (a crash meanwhile only sends them again, same ids).
            self._acked = acked + self._acked
            if not self._acks_held:
                self._acks_held = True
                self.log.warning("acks_held_store_full", count=len(self._acked))
            return
        if exc is not None:
            self.log.error("acks_not_written", error=str(exc), count=len(acked))
            return
        if self._acks_held:
            self._acks_held = False
            self.log.info("acks_written", count=len(acked))

    def _mark_now(self, acked: list[int]) -> None:
        try:
            self.store.mark_delivered(acked)
        except StoreFull:
            self._acked = acked + self._acked

    async def _publish_statuses(self, client: aiomqtt.Client) -> None:
        """Retained device statuses that changed since they were last sent."""
        while self._dirty_status:
            device = self._dirty_status.pop()
            payload = self._statuses[device].payload(self.hub)
            await client.publish(self.topics.status(device), _json(payload), qos=1, retain=True)

    def _publish_states(self, client: Client) -> None:
        """Retained `state` (newest reading by measured time) of devices whose newest reading
        changed: one per device per drain, the newest, sent as stored (no decode, no re-encode)
        like the readings, and at most one per device every `[mqtt] state_interval` seconds
        (the newest when it is due: a burst of readings, such as a backfill, updates it once),
        except when stopping. They may go beyond the window: at most one per device."""
        now = time.monotonic()
        interval = self.config.state_interval
        if self._deferred and (now >= self._deferred_due or self._stopping):
            self._dirty_state |= self._deferred
            self._deferred.clear()
            self._deferred_due = math.inf
        while self._dirty_state:
            device = self._dirty_state.pop()
            row = self._newest.get(device)
            if row is None:  # a new session: what the store holds (not one held for the clock)
                row = self.store.latest_row(device)
                if row is None:
                    continue
                self._newest[device] = row
            if self._state_sent.get(device) == row.rowid:
                continue
            due = self._state_at.get(device, -interval) + interval
            if now < due and not self._stopping:
                self._deferred.add(device)
                if due < self._deferred_due:
                    self._deferred_due = due
                    self._wake_at(due)
                continue
            self._state_at[device] = now
            self._send(client, row, state=True)

    def _wake_at(self, when: float) -> None:
        """Wake the drain at monotonic time `when` (or at the earlier wake already set)."""
        timer = self._state_timer
        if timer is not None and not timer.cancelled() and timer.when() <= when:
            return
        if timer is not None:
            timer.cancel()
        loop = asyncio.get_running_loop()
        self._state_timer = loop.call_at(loop.time() + (when - time.monotonic()), self._wake.set)
