"""Dexcom G5/G6 Control characteristic: any message written to or indicated on it.

`parse_control(data)` dispatches on the opcode to the eight supported messages
(`ControlMessage`: `TransmitterTimeTx`/`Rx`, `GlucoseTx`/`Rx`, `BackfillTx`/`Rx`); a transmitter
emulator uses it to read the hub's requests, a fuzz campaign to reach every parser at once.
"""

from __future__ import annotations

from typing import Any

from protocols.dexcom_g6.backfill import BackfillRx, BackfillTx
from protocols.dexcom_g6.framing import Opcode
from protocols.dexcom_g6.glucose import GlucoseRx, GlucoseTx, TransmitterTimeRx, TransmitterTimeTx
from protocols.errors import ProtocolError

__all__ = ["ControlMessage", "parse_control"]

ControlMessage = (
    TransmitterTimeTx | TransmitterTimeRx | GlucoseTx | GlucoseRx | BackfillTx | BackfillRx
)

_CONTROL_PARSERS: dict[int, Any] = {
    Opcode.TRANSMITTER_TIME_TX: TransmitterTimeTx.parse,
    Opcode.TRANSMITTER_TIME_RX: TransmitterTimeRx.parse,
    Opcode.GLUCOSE_TX: GlucoseTx.parse,
    Opcode.GLUCOSE_G6_TX: GlucoseTx.parse,
    Opcode.GLUCOSE_RX: GlucoseRx.parse,
    Opcode.GLUCOSE_G6_RX: GlucoseRx.parse,
    Opcode.BACKFILL_TX: BackfillTx.parse,
    Opcode.BACKFILL_RX: BackfillRx.parse,
}


def parse_control(data: bytes) -> ControlMessage:
    """Any supported message written to or indicated on Control (both directions)."""
    raw = bytes(data)
    parser = _CONTROL_PARSERS.get(raw[0]) if raw else None
    if parser is None:
        raise ProtocolError("not a supported G5/G6 control message", raw)
    message: ControlMessage = parser(raw)
    return message
