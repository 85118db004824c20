"""Control point writes of the CGMS emulator: RACP reports, SOCP, Session Start Time.

A mixin of `CgmsPeripheral` (see `drivers.cgms.emulator.peripheral` for the behaviour a collector
meets); split out to keep each module small.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

from bumble import att
from bumble.device import Connection
from bumble.gatt import Characteristic

from drivers.cgms.emulator.sensor import CgmsSensor
from protocols.cgms.socp import SocpOpCode, SocpPacket, SocpResponseCode, SocpResult
from protocols.cgms.state import SessionStartTime
from protocols.errors import ControlPointError, CrcError, ProtocolError
from protocols.gatt.racp import (
    RacpCommand,
    RacpFilter,
    RacpNumberOfRecords,
    RacpOpCode,
    RacpOperator,
    RacpResponse,
    RacpResponseCode,
    parse_racp,
)

__all__ = ["ControlPoints", "Link"]

_CODE = RacpResponseCode
_SOCP = SocpOpCode


@dataclass(eq=False)
class Link:
    """One connected collector."""

    connection: Connection
    cursor: int = -1  # newest offset this link has had (live or in a report)
    report: asyncio.Task[None] | None = None
    up: bool = True


class ControlPoints:
    """RACP / SOCP / Session Start Time handlers (the peripheral provides the rest)."""

    sensor: CgmsSensor
    racp: Characteristic[bytes]
    socp: Characteristic[bytes]
    _links: dict[Connection, Link]
    _wake: asyncio.Event

    def _spawn(self, work: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        raise NotImplementedError

    def _subscribed(self, connection: Connection, characteristic: Characteristic[bytes]) -> int:
        raise NotImplementedError

    async def _notify(self, link: Link, offsets: Sequence[int], *, live: bool = False) -> int:
        raise NotImplementedError

    def _report_begins(self) -> Sequence[int]:
        """A report was asked for: arm its faults; the offsets to notify before its records."""
        raise NotImplementedError

    async def _indicate(
        self, link: Link, characteristic: Characteristic[bytes], data: bytes
    ) -> None:
        raise NotImplementedError

    def restart_session(self, age: float | None = None, replay: float | None = None) -> None:
        raise NotImplementedError

    def stop_session(self) -> None:
        raise NotImplementedError

    # -- RACP ------------------------------------------------------------------------------------

    def _on_racp(self, connection: Connection, value: bytes) -> None:
        link = self._links[connection]
        if not self._subscribed(connection, self.racp) & 2:
            raise att.ATT_Error(0xFD)  # CCCD improperly configured
        try:
            command = parse_racp(value)
        except ControlPointError as exc:
            self._racp_answer(link, value[0], RacpResponseCode(exc.response_code))
            return
        except ProtocolError:
            self._racp_answer(link, value[0] if value else 0, _CODE.INVALID_OPERAND)
            return
        if link.report is not None:
            if isinstance(command, RacpCommand) and command.opcode == RacpOpCode.ABORT_OPERATION:
                link.report.cancel()
                link.report = None
                self._racp_answer(link, RacpOpCode.ABORT_OPERATION, _CODE.SUCCESS)
                return
            raise att.ATT_Error(0xFE)  # procedure already in progress
        if not isinstance(command, RacpCommand):
            self._racp_answer(link, value[0], _CODE.OP_CODE_NOT_SUPPORTED)
        elif command.opcode == RacpOpCode.ABORT_OPERATION:
            self._racp_answer(link, command.opcode, _CODE.SUCCESS)
        elif command.filter_type not in (None, RacpFilter.TIME_OFFSET):
            self._racp_answer(link, command.opcode, _CODE.OPERAND_NOT_SUPPORTED)
        elif command.operator == RacpOperator.WITHIN_RANGE and not self.sensor.config.ranges:
            self._racp_answer(link, command.opcode, _CODE.OPERATOR_NOT_SUPPORTED)
        elif command.opcode == RacpOpCode.REPORT_NUMBER_OF_STORED_RECORDS:
            count = len(self._select(command))
            self._spawn(self._indicate(link, self.racp, RacpNumberOfRecords(count).build()))
        elif command.opcode == RacpOpCode.REPORT_STORED_RECORDS:
            ahead = self._report_begins()
            link.report = self._spawn(self._report(link, command, ahead))
        else:  # deleting a CGM's memory is not offered
            self._racp_answer(link, command.opcode, _CODE.OP_CODE_NOT_SUPPORTED)

    def _racp_answer(self, link: Link, opcode: int, code: RacpResponseCode) -> None:
        self._spawn(self._indicate(link, self.racp, RacpResponse(opcode, code).build()))

    def _select(self, command: RacpCommand) -> range:
        """The offsets a request means right now."""
        op, values = command.operator, [int(v) for v in command.values if isinstance(v, int)]
        everything = self.sensor.offsets()
        if op == RacpOperator.FIRST_RECORD:
            return everything[:1]
        if op == RacpOperator.LAST_RECORD:
            return everything[-1:]
        if op == RacpOperator.GREATER_THAN_OR_EQUAL:
            return self.sensor.offsets(values[0])
        if op == RacpOperator.LESS_THAN_OR_EQUAL:
            return self.sensor.offsets(None, values[0])
        if op == RacpOperator.WITHIN_RANGE:
            return self.sensor.offsets(values[0], values[1])
        return everything

    async def _report(self, link: Link, command: RacpCommand, ahead: Sequence[int] = ()) -> None:
        """Notify the selected records (open-ended: up to the newest, even if made meanwhile),
        after the records `ahead` (in flight when the request was read)."""
        try:
            if ahead and await self._notify(link, ahead) < len(ahead):
                return  # the link went: no response
            selection, sent, last = self._select(command), 0, None
            pack = self.sensor.config.pack
            open_ended = command.operator in (
                RacpOperator.ALL_RECORDS, RacpOperator.GREATER_THAN_OR_EQUAL,
            )  # fmt: skip
            while selection:
                chunk = selection[:pack]
                if await self._notify(link, chunk) < len(chunk):
                    return  # the link went: no response
                sent, last = sent + len(chunk), chunk[-1]
                selection = selection[len(chunk) :]
                if not selection and open_ended:  # records made while the report ran
                    selection = self.sensor.offsets(last + 1)
            if open_ended and last is not None:
                link.cursor = max(link.cursor, last)
            code = _CODE.SUCCESS if sent else _CODE.NO_RECORDS_FOUND
            self._end_report(link)  # before the response: the next request may follow at once
            await self._indicate(link, self.racp, RacpResponse(command.opcode, code).build())
        finally:
            self._end_report(link)

    def _end_report(self, link: Link) -> None:
        if link.report is asyncio.current_task():
            link.report = None
            self._wake.set()

    # -- SOCP and Session Start Time -------------------------------------------------------------

    def _check_crc(self, parse: Any, value: bytes) -> Any:
        try:
            parsed = parse(value)
        except CrcError:
            raise att.ATT_Error(0x81) from None  # invalid CRC
        if self.sensor.config.e2e_crc and not parsed.e2e_crc:
            raise att.ATT_Error(0x80)  # missing CRC
        return parsed

    def _on_sst(self, _connection: Connection, value: bytes) -> None:
        try:
            self._check_crc(SessionStartTime.parse, value)
        except ProtocolError:
            raise att.ATT_Error(att.ErrorCode.VALUE_NOT_ALLOWED) from None

    def _on_socp(self, connection: Connection, value: bytes) -> None:
        link = self._links[connection]
        if not self._subscribed(connection, self.socp) & 2:
            raise att.ATT_Error(0xFD)
        e2e = self.sensor.config.e2e_crc
        try:
            packet = self._check_crc(SocpPacket.parse, value)
        except ControlPointError as exc:
            result = SocpResult(value[0], exc.response_code)
            packet = SocpPacket(_SOCP.RESPONSE_CODE, result, e2e)
            self._spawn(self._indicate(link, self.socp, packet.build()))
            return
        except ProtocolError:
            raise att.ATT_Error(att.ErrorCode.INVALID_ATTRIBUTE_LENGTH) from None
        op, code = packet.opcode, SocpResponseCode.SUCCESS
        if op == _SOCP.GET_COMMUNICATION_INTERVAL:
            interval = self.sensor.config.interval
            answer = SocpPacket(_SOCP.COMMUNICATION_INTERVAL_RESPONSE, interval, e2e)
            self._spawn(self._indicate(link, self.socp, answer.build()))
            return
        if op == _SOCP.START_SESSION:
            self.restart_session()
        elif op == _SOCP.STOP_SESSION:
            self.stop_session()
        elif (
            op == _SOCP.SET_COMMUNICATION_INTERVAL and packet.operand != self.sensor.config.interval
        ):
            code = SocpResponseCode.PARAMETER_OUT_OF_RANGE  # the interval is fixed
        elif op != _SOCP.SET_COMMUNICATION_INTERVAL:
            code = SocpResponseCode.OP_CODE_NOT_SUPPORTED
        answer = SocpPacket(_SOCP.RESPONSE_CODE, SocpResult(op, code), e2e)
        self._spawn(self._indicate(link, self.socp, answer.build()))
