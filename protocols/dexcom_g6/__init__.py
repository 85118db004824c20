"""Dexcom G5/G6 transmitter BLE protocol: codecs and a sans-I/O session (protocols.md §2).

Modules: `framing` (UUIDs, opcodes, the CRC-16/XMODEM Control framing), `glucose` (time,
glucose records, calibration states), `auth` (authentication), `backfill` (request, frame
stream, summary), `control` (`parse_control`, any Control message) and `session` (`G6Session`).
Import each name from the module that defines it. Pure: no I/O, no clock (`now` is passed in),
no BLE library; AES comes from `cryptography`. Every `parse` raises only
`ProtocolError` (`CrcError` for a bad CRC) on bad bytes and every `build` gives the exact bytes
back, so a transmitter emulator can be built from the same classes. G7 / ONE+ (J-PAKE) is not
supported (§2.8).

GATT (§2.1, [H]): advertised service `ADVERTISED_SERVICE` (0xFEBC), local name
`advertised_name(id)` = "Dexcom" + last 2 id characters; service `CGM_SERVICE`
F8083532-849E-531C-C594-30F1F86A4EA5 with `COMMUNICATION` …3533 (read/notify, unused),
`CONTROL` …3534 (write/indicate), `AUTHENTICATION` …3535 (write/indicate, read),
`BACKFILL` …3536 (read/write/notify); DIS manufacturer `MANUFACTURER` "DexcomUN".
Constants are lowercase 128-bit strings, as bleak reports them.

Messages (dataclasses with `parse(bytes)` / `build()`; `Opcode` lists §2.3):

* Authentication (no CRC): `AuthRequestTx(token, end_byte=0x02)` (0x01; end byte 0x01 =
  alternate slot), `AuthRequestRx(token_hash, challenge)` (0x03), `AuthChallengeTx(hash)` (0x04),
  `AuthStatusRx(authenticated, bonded)` (0x05), `KeepAliveTx(seconds=25)` (0x06),
  `BondRequestTx()` (0x07); `parse_authentication(data)` dispatches on the opcode.
  `auth_hash(transmitter_id, data8)` = AES-128-ECB("00"+id+"00"+id, data8 ‖ data8)[0:8]
  (VERIFIED); `AuthenticationFailed(ProtocolError)` with `.reason` and `retryable = False`.
* Control (opcode + payload + CRC-16/XMODEM LE; `protocols.crc.append_xmodem_crc` /
  `split_xmodem_crc`): `TransmitterTimeTx()` `24 e6 64`, `TransmitterTimeRx(status, current_time,
  session_start_time, extra)` (0x25; `NO_SESSION` = 0xFFFFFFFF; `.activation(now)`);
  `GlucoseTx(g6=False)` `30 53 36` / `4e 0a a9`; `GlucoseRx(status, sequence, record, g6)`
  (0x31/0x4F); `BackfillTx(start, end)` (0x50), `BackfillRx(status, backfill_status,
  identifier, start, end, buffer_length, buffer_crc)` (0x51, `.for_frames(...)`);
  `parse_control(data)` dispatches these eight on the opcode (`ControlMessage`).
* `GlucoseRecord(timestamp, glucose, state, trend=127, flags=0)`: the 8-byte record of GlucoseRx
  and the backfill stream; `.display_only`, `.trend_mgdl_min`, `.reliable`.
* Backfill stream: `BackfillStream` (`append(frame)`, `check(summary)`, `records()`, `header()`),
  `build_backfill_frames(records, identifier=0, header=DEFAULT_HEADER)` for emulators.
* `CalibrationState` (CGMBLEKit names, 1-18 and 24), `state_name(state)` ("ok", "warmup",
  "needs_initial_calibration", "needs_calibration", "calibration_error", "sensor_failed",
  "session_failed", "question_marks", "sensor_expired", "session_stopped", "state_<n>") and
  `state_flags(state)` (reading status flags; `()` for OK), `RELIABLE_STATES` {6, 7, 14}.

Session (`G6Session`, h11 shape; requests are `protocols.gatt.session.Request(kind, characteristic,
data, awaits_response, label)`)::

    session = G6Session("8G1234", backfill_from=last_transmitter_time + 1, activation=known)
    # connect; enable indications on AUTHENTICATION (and CONTROL, notify on BACKFILL once
    # authenticated/bonded), then:
    while (request := session.next_request()) is not None:   # again after every receive()
        if request.kind is RequestKind.READ:
            events = session.receive(request.characteristic, await read(...), now=utc_now())
        else:
            await write(request.characteristic, request.data)   # with response
            if request.label == "bond_request":
                await pair()   # OS pairing, Just Works [M]; then enable CONTROL indications
        # indications/notifications: events = session.receive(uuid, data, now=utc_now())
    # no answer in time (CGMBLEKit: 2 s per command, 15 s while bonding): session.timeout()

Constructor: `G6Session(transmitter_id, *, token=None, alternate=False, bond=True,
g6_glucose=False, backfill_from=None, activation=None, keep_alive_s=25)`: `transmitter_id`
the 6-character id (upper-cased; `ValueError` otherwise); `token` 8 bytes (default random);
`alternate` writes end byte 0x01 instead of 0x02 to take the transmitter's other slot so the
hub can coexist with the phone app (xDrip `endByteAlt`; semantics [M], §8.5); `bond` sends
keep-alive `06 19` + bond request `07` when AuthStatus says not bonded; `g6_glucose` asks
glucose with 0x4E instead of 0x30 (the answer may be 0x31 or 0x4F either way); `backfill_from`
the first transmitter time (s since activation) wanted, backfilled up to the transmitter's
current time after the glucose read (None: no backfill); `activation` a known aware
activation date, used until the time message gives a fresh one.

Steps: WRITE `auth_request`, READ `auth_challenge` (token hash checked: a mismatch raises
`AuthenticationFailed(reason="token_hash_mismatch")` from `receive`), WRITE `auth_answer`, READ
`auth_status` (not authenticated: `AuthenticationFailed(reason="challenge_rejected")`), WRITE
`keep_alive` + `bond_request` (when not bonded), then on CONTROL, each awaiting an indication:
`time`, `glucose`, `backfill`. More work: `request_glucose()`, `request_backfill(start,
end=None)`. State: `transmitter_id`, `token`, `authenticated`, `bonded`, `failed` (authentication
cannot go on: disconnect), `activation`, `time` (last `TransmitterTimeRx`).
`AuthenticationFailed` is final (wrong id: map it to a non-retryable error); a
`ProcedureFailed` of an authentication step (timeout, malformed answer) also sets `failed` but
is worth a reconnect. A failed Control step is skipped and the session goes on.

`receive(characteristic, data, *, now=None)` returns events (frozen dataclasses, base
`protocols.gatt.session.SessionEvent`); `now` (aware) is needed to turn the time message into the
activation date (activation = now - transmitter time); without it the constructor's
`activation` stays. A characteristic outside the service raises `ProtocolError`; any bytes
give events, `ProtocolError` or `AuthenticationFailed` only.

* `Authenticated(bonded)`; `BondRequested()`.
* `TimeRead(activation, transmitter_time, session_start, status)`.
* `Glucose(value, transmitter_time, time, trend, calibration_state, display_only, sequence,
  status, backfill)`: `trend` in mg/dL/min (None = 127); `time` = activation +
  transmitter_time; helpers `reliable`, `state_name`, `flags` (+ "battery_low" for status
  0x81), `glucose_mgdl` (reliable and 40..400, else None), `out_of_range` ("low"/"high").
* `BackfillRecords(records, start, end)`: `Glucose` events with `backfill=True`, emitted only
  when the summary's length and buffer CRC match the frames.
* `BackfillDamaged(start, end, reason, timestamps, data)`: the backfill asked for start..end
  arrived damaged (reason "crc_mismatch", "malformed" or "frame_sequence"); `timestamps` are
  the unverified ones of the records it seemed to carry (where to split the range).
* `Completed()`: all queued control work is done; `ProcedureFailed(request, reason, code,
  data)` with reason "timeout", "malformed" or "crc_mismatch" (a message);
  `RecordRejected(reason, data)` for an unsolicited bad message or a backfill frame out of
  sequence; `UnexpectedData(characteristic, data)`.

Confidence (protocols.md tags): VERIFIED - auth hash, XMODEM framing and the three commands,
time, glucose (incl. display-only), backfill request, frames, summary length/CRC. [H] - UUIDs,
opcodes, auth/bond sequence, calibration state values. [M] - the alternate end byte's effect,
Just Works pairing, 0x4E/0x4F on a given firmware. [L] / ours - the grouping of calibration
states into status flags, `out_of_range` from CGMBLEKit's 40..400 clamp.
"""
