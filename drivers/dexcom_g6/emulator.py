"""An emulated Dexcom G5/G6 transmitter: a Bumble GATT server built from `protocols.dexcom_g6`.

GATT as protocols.md §2.1: Device Information (manufacturer "DexcomUN") and the CGM service with
Communication (read/notify, unused), Control (write/indicate), Authentication
(read/write/indicate) and Backfill (read/write/notify); advertised as ``Dexcom<last two>`` with
service 0xFEBC. Behaviour, per connection:

* Authentication (§2.4): an auth request is answered (by read) with the hash of the gateway's
  token under the emulator's own transmitter id and a random challenge; the challenge answer
  must be the hash of that challenge, else the status says "not authenticated". A gateway
  configured with another id therefore fails (token hash mismatch). The status says bonded when
  the link is encrypted (a bond from an earlier pairing); keep-alive and bond request are
  recorded, the gateway then pairs (Just Works).
* Control (§2.5, §2.6): refused with ATT "insufficient authorization" before authentication and
  "insufficient authentication" on an unencrypted link (`require_bond`, as a real transmitter
  makes iOS pair; `refuse_bonding`: every pairing request is refused, as by a transmitter
  bonded to a phone); time, glucose (the newest record, 0x31 or 0x4F as asked) and backfill (the
  records in memory in the range, at most 573 - the 1-byte frame index - as frames on Backfill,
  then the summary) are answered by indication.
* Wake-ups (§2.7): `wake()` advertises, accepts one connection and serves it until the gateway
  disconnects or `window` seconds have passed since the wake-up began (then the transmitter drops
  the link), and stops advertising. `run()` wakes at every measurement on the transmitter's clock.

Test hooks: `drop_link()` (now); `fail_next` (a set of "time" / "glucose" / "backfill": drop the
link instead of answering that command, once each); `corrupt_backfills` (the next n backfills
have one frame byte flipped: the summary CRC no longer matches); `reject_auth` (the challenge
answer is refused); `skip_wakeups` (`run()` sleeps through the next n wake-ups: the radio is off
while the transmitter keeps measuring); `disorder_backfills` (the next n backfills carry their
records twice, newest first); `drop_in_backfill` (the next backfill stops after n frames: the
link drops); `reset_at_wakeup` (`run()` resets the transmitter once that many wake-ups are
done). Records in `Transmitter.damaged` rotted in memory: every backfill that holds one
sends it with a flipped glucose byte under the CRC of the good data (a mismatch each time), and
a live answer about it has a bad message CRC. The transmitter's own faults (its clock, a reset)
are `Transmitter` hooks. Counters: `connections`, `wakeups`, `auth_requests`
(with their end byte: 0x01 = the alternate slot), `keep_alives`, `bond_requests`, `commands`
(labels of the Control commands answered) with `requests` (the messages), `backfills`.

In this process::

    async with in_process_link() as link:
        transmitter = Transmitter("8G1234", clock=ManualClock(start))
        emulator = G6Emulator(link.peripheral, transmitter)
        await emulator.wake()  # one wake-up; or `await emulator.run()` for all of them

As a sibling process: `gatewayd simulate --device dexcom-g6` (`drivers.dexcom_g6.serve`).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Coroutine
from dataclasses import replace
from typing import Any, Final

import structlog
from bumble import att
from bumble.core import AdvertisingData
from bumble.device import Connection, Device
from bumble.gatt import Characteristic, CharacteristicValue, Service

from drivers.dexcom_g6.transmitter import Transmitter
from gatewayd.plugin import honour_cancellation
from gatewayd.plugin.emulation import refuse_pairing
from protocols.dexcom_g6.auth import (
    AuthChallengeTx,
    AuthRequestRx,
    AuthRequestTx,
    AuthStatusRx,
    BondRequestTx,
    KeepAliveTx,
    auth_hash,
    parse_authentication,
)
from protocols.dexcom_g6.backfill import BackfillRx, BackfillTx, build_backfill_frames
from protocols.dexcom_g6.control import ControlMessage, parse_control
from protocols.dexcom_g6.framing import (
    AUTHENTICATION,
    BACKFILL,
    CGM_SERVICE,
    COMMUNICATION,
    CONTROL,
    MANUFACTURER,
    TREND_NONE,
    advertised_name,
)
from protocols.dexcom_g6.glucose import (
    CalibrationState,
    GlucoseRecord,
    GlucoseRx,
    GlucoseTx,
    TransmitterTimeTx,
)
from protocols.errors import ProtocolError
from protocols.gatt.uuids import DEVICE_INFORMATION_SERVICE, MANUFACTURER_NAME

__all__ = ["BACKFILL_CAPACITY", "G6Emulator"]

P = Characteristic.Properties
#: The most records one backfill stream can carry (255 frames x 18 bytes, less the header).
BACKFILL_CAPACITY: Final = (255 * 18 - 4) // 8
#: Advertising interval (ms): the shortest legal one; the virtual link connects on the next.
ADVERTISING_INTERVAL_MS: Final = 20
log = structlog.get_logger().bind(component="dexcom_g6_emulator")


class G6Emulator:
    """A G5/G6 transmitter on a Bumble `Device` (see the module docstring)."""

    def __init__(
        self,
        device: Device,
        transmitter: Transmitter,
        *,
        window: float = 10.0,
        require_bond: bool = True,
        refuse_bonding: bool = False,
    ) -> None:
        self.device = device
        self.transmitter = transmitter
        self.window = window
        self.require_bond = require_bond
        if refuse_bonding:
            refuse_pairing(device)
        self.name = advertised_name(transmitter.transmitter_id)
        # hooks
        self.fail_next: set[str] = set()
        self.corrupt_backfills = 0
        self.reject_auth = False
        self.skip_wakeups = 0
        self.disorder_backfills = 0
        self.drop_in_backfill: int | None = None
        self.reset_at_wakeup: int | None = None
        # counters
        self.connections = 0
        self.wakeups = 0
        self.missed_wakeups = 0
        self.auth_requests: list[AuthRequestTx] = []
        self.keep_alives: list[int] = []
        self.bond_requests = 0
        self.commands: list[str] = []
        self.requests: list[ControlMessage] = []
        self.backfills: list[tuple[int, int, int]] = []  # (start, end, records sent)
        # the connection being served
        self._connection: Connection | None = None
        self._auth_value = b""
        self._challenge: bytes | None = None
        self._authenticated = False
        self._connected = asyncio.Event()
        self._disconnected = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self.control: Characteristic[bytes] = Characteristic(
            CONTROL,
            P.WRITE | P.INDICATE,
            "WRITEABLE",
            CharacteristicValue(read=self._not_readable, write=self._on_control),
        )
        self.authentication: Characteristic[bytes] = Characteristic(
            AUTHENTICATION,
            P.READ | P.WRITE | P.INDICATE,
            "READABLE,WRITEABLE",
            CharacteristicValue(read=self._read_authentication, write=self._on_authentication),
        )
        self.backfill: Characteristic[bytes] = Characteristic(
            BACKFILL, P.READ | P.WRITE | P.NOTIFY, "READABLE,WRITEABLE", b""
        )
        communication: Characteristic[bytes] = Characteristic(
            COMMUNICATION, P.READ | P.NOTIFY, "READABLE", b""
        )
        manufacturer: Characteristic[bytes] = Characteristic(
            MANUFACTURER_NAME, P.READ, "READABLE", MANUFACTURER.encode()
        )
        device.add_service(Service(DEVICE_INFORMATION_SERVICE, [manufacturer]))
        device.add_service(
            Service(CGM_SERVICE, [communication, self.control, self.authentication, self.backfill])
        )
        device.on(device.EVENT_CONNECTION, self._on_connection)

    # -- wake-ups ------------------------------------------------------------------------------

    async def wake(self) -> bool:
        """One wake-up: advertise, serve one connection, sleep. True if a gateway connected."""
        self.wakeups += 1
        deadline = asyncio.get_running_loop().time() + self.window
        self._connected.clear()
        self._disconnected.clear()
        await self._advertise()
        honour_cancellation()
        try:
            async with asyncio.timeout_at(deadline):
                await self._connected.wait()
        except TimeoutError:
            await self._stop_advertising()
            return False
        await self._stop_advertising()
        try:
            async with asyncio.timeout_at(deadline):
                await self._disconnected.wait()
        except TimeoutError:
            log.info("emulator_window_over", window=self.window)
            await self.drop_link()
        return True

    async def run(self) -> None:
        """Wake up at every measurement on the transmitter's clock, until cancelled."""
        tx = self.transmitter
        while True:
            await tx.clock.sleep_until(tx.wall(tx.next_measurement()))
            honour_cancellation()
            if self.reset_at_wakeup is not None and self.wakeups >= self.reset_at_wakeup:
                self.reset_at_wakeup = None
                tx.reset()
                log.info("emulator_transmitter_reset", transmitter_time=tx.now())
            if self.skip_wakeups > 0:
                self.skip_wakeups -= 1
                self.missed_wakeups += 1
                continue
            await self.wake()
            honour_cancellation()

    async def drop_link(self) -> None:
        """Disconnect the connection being served, now."""
        connection = self._connection
        if connection is not None:
            with contextlib.suppress(Exception):  # best effort: it may be going already
                await connection.disconnect()

    async def wait_idle(self) -> None:
        """Return once no connection is up."""
        while self._connection is not None:
            await self._disconnected.wait()

    async def close(self) -> None:
        """Stop answering and advertising (the device goes with the link)."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._stop_advertising()

    async def _advertise(self) -> None:
        ad = AdvertisingData
        data = ad(
            [
                (ad.FLAGS, bytes([0x06])),
                (ad.COMPLETE_LIST_OF_16_BIT_SERVICE_CLASS_UUIDS, (0xFEBC).to_bytes(2, "little")),
                (ad.COMPLETE_LOCAL_NAME, self.name.encode()),
            ]
        )
        await self.device.start_advertising(
            advertising_data=bytes(data),
            auto_restart=False,
            advertising_interval_min=ADVERTISING_INTERVAL_MS,
            advertising_interval_max=ADVERTISING_INTERVAL_MS,
        )

    async def _stop_advertising(self) -> None:
        with contextlib.suppress(Exception):  # stopped by the connection already, or powered off
            await self.device.stop_advertising()

    # -- connections ---------------------------------------------------------------------------

    def _on_connection(self, connection: Connection) -> None:
        self.connections += 1
        self._connection = connection
        self._auth_value, self._challenge, self._authenticated = b"", None, False
        connection.on(
            connection.EVENT_DISCONNECTION, lambda _reason: self._on_disconnection(connection)
        )
        self._connected.set()

    def _on_disconnection(self, connection: Connection) -> None:
        if connection is self._connection:
            self._connection = None
            self._disconnected.set()

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- authentication ------------------------------------------------------------------------

    def _read_authentication(self, _connection: Connection | None) -> bytes:
        return self._auth_value

    def _on_authentication(self, connection: Connection | None, value: bytes) -> None:
        txid = self.transmitter.transmitter_id
        try:
            message = parse_authentication(bytes(value))
        except ProtocolError:
            log.info("emulator_bad_auth_message", hex=bytes(value).hex())
            return
        if isinstance(message, AuthRequestTx):
            self.auth_requests.append(message)
            self._challenge = secrets.token_bytes(8)
            self._authenticated = False
            self._auth_value = AuthRequestRx(
                auth_hash(txid, message.token), self._challenge
            ).build()
        elif isinstance(message, AuthChallengeTx):
            ok = (
                self._challenge is not None
                and message.challenge_hash == auth_hash(txid, self._challenge)
                and not self.reject_auth
            )
            self._authenticated = ok
            bonded = connection is not None and connection.is_encrypted
            self._auth_value = AuthStatusRx(int(ok), int(bonded)).build()
        elif isinstance(message, KeepAliveTx):
            self.keep_alives.append(message.seconds)
        elif isinstance(message, BondRequestTx):
            self.bond_requests += 1

    # -- control -------------------------------------------------------------------------------

    @staticmethod
    def _not_readable(_connection: Connection | None) -> bytes:
        raise att.ATT_Error(att.ErrorCode.READ_NOT_PERMITTED)

    def _on_control(self, connection: Connection | None, value: bytes) -> None:
        # Bumble's server does not enforce permissions: the transmitter refuses by itself.
        if connection is None or not self._authenticated:
            raise att.ATT_Error(att.ErrorCode.INSUFFICIENT_AUTHORIZATION)
        if self.require_bond and not connection.is_encrypted:
            raise att.ATT_Error(att.ErrorCode.INSUFFICIENT_AUTHENTICATION)
        try:
            message = parse_control(bytes(value))
        except ProtocolError:
            log.info("emulator_bad_control_message", hex=bytes(value).hex())
            return
        label = _label(message)
        if label is None:
            return  # an answer written to us: a transmitter ignores it
        if label in self.fail_next:
            self.fail_next.discard(label)
            log.info("emulator_fail", command=label)
            self._spawn(self.drop_link())
            return
        self.commands.append(label)
        self.requests.append(message)
        self._spawn(self._answer(connection, message))

    async def _answer(self, connection: Connection, message: ControlMessage) -> None:
        try:
            if isinstance(message, TransmitterTimeTx):
                await self._indicate(connection, self.transmitter.time_message().build())
            elif isinstance(message, GlucoseTx):
                await self._indicate(connection, self._glucose_answer(message))
            elif isinstance(message, BackfillTx):
                await self._send_backfill(connection, message)
        except Exception as exc:  # noqa: BLE001 - the link went down mid-answer, in any of Bumble's ways
            log.info("emulator_answer_cut", error=repr(exc))

    def _glucose(self, message: GlucoseTx) -> GlucoseRx:
        tx = self.transmitter
        latest = tx.latest()
        if latest is None:  # no session: a stopped state, no value
            record = GlucoseRecord(tx.now(), 0, CalibrationState.STOPPED, TREND_NONE)
            return GlucoseRx(tx.status, 0, record, g6=message.g6)
        sequence, record = latest
        return GlucoseRx(tx.status, sequence, record, g6=message.g6)

    def _glucose_answer(self, message: GlucoseTx) -> bytes:
        answer = self._glucose(message)
        data = answer.build()
        if answer.record.timestamp in self.transmitter.damaged:
            return data[:-3] + bytes([data[-3] ^ 0xFF]) + data[-2:]  # under the old CRC
        return data

    async def _send_backfill(self, connection: Connection, message: BackfillTx) -> None:
        tx = self.transmitter
        records = tx.records(message.start, message.end)[:BACKFILL_CAPACITY]
        if self.disorder_backfills > 0:  # the oldest that fit twice, newest first
            self.disorder_backfills -= 1
            kept = records[: BACKFILL_CAPACITY // 2]
            records = [r for record in reversed(kept) for r in (record, record)]
        frames = build_backfill_frames(records)
        summary = BackfillRx.for_frames(frames, message.start, message.end, status=tx.status)
        self.backfills.append((message.start, message.end, len(records)))
        if any(r.timestamp in tx.damaged for r in records):  # the CRC of the good data
            rotted = [
                replace(r, glucose=r.glucose ^ 0x155) if r.timestamp in tx.damaged else r
                for r in records
            ]
            frames = build_backfill_frames(rotted)
        if self.corrupt_backfills > 0:
            self.corrupt_backfills -= 1
            frames[-1] = frames[-1][:-1] + bytes([frames[-1][-1] ^ 0xFF])
        cut, self.drop_in_backfill = self.drop_in_backfill, None
        for n, frame in enumerate(frames):
            if cut is not None and n >= cut:
                log.info("emulator_drop_in_backfill", frames=n)
                await self.drop_link()
                return
            await self.device.notify_subscriber(connection, self.backfill, frame)
        await self._indicate(connection, summary.build())

    async def _indicate(self, connection: Connection, data: bytes) -> None:
        await self.device.indicate_subscriber(connection, self.control, data)


def _label(message: ControlMessage) -> str | None:
    if isinstance(message, TransmitterTimeTx):
        return "time"
    if isinstance(message, GlucoseTx):
        return "glucose"
    if isinstance(message, BackfillTx):
        return "backfill"
    return None
