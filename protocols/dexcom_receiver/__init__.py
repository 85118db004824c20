"""Dexcom G4 / G5 / G6 receiver, USB serial protocol (protocols.md §3): the public API.

Pure: bytes in, values or events out; no I/O, no clock. Every parser raises only `ProtocolError`
(or a subclass: `CrcError`, `NakError`) on bad input. Three modules; import each name from the
module that defines it:

* `frames` - framing (§3.2, VERIFIED): ``SOF 0x01 | length u16 LE (whole
  packet, 6..1590) | command u8 | payload | CRC-16/XMODEM LE``; `Packet`, `build_packet`,
  `parse_packet`, the `Command` and `RecordType` codes (§3.3), and `FrameDecoder`, the
  resynchronising stream decoder (`Frame` / `BadFrame` / `Garbage` events).
* `commands` - requests (`ping`, `read_firmware_header`,
  `read_database_partition_info`, `read_page_range`, `read_pages`, `read_system_time`) and
  answers (`expect_ack` -> `NakError`, `parse_page_range`, `parse_system_time`,
  `parse_xml_attributes`); the 2009-01-01 epoch (`EPOCH`, `receiver_time`,
  `receiver_seconds`); system_time is UTC, display_time is local wall time.
* `records` - database pages (28-byte `PageHeader`, 528-byte pages), EGV records
  (G4 13 / G5 23 / G6 25 bytes; `EgvRecord` with `value`, `display_only`, `trend`, `noise`,
  `special`, `out_of_range`, `glucose_mgdl`), `parse_egv_page`, XML records
  (`parse_xml_page`: the serial number is MANUFACTURING_DATA's `SerialNumber`).

Transport (§3.1) [H]: USB VID 0x22A3 PID 0x0047, CDC-ACM (`/dev/ttyACM*`), 115200 8N1 (nominal
for CDC). Strictly request/response: one packet out, one packet back.

Verified vectors (§3.2, Appendix A): Ping `01 06 00 0A 5E 65`; ReadFirmwareHeader
`01 06 00 0B 7F 75`; ReadDatabasePageRange(EGV) `01 07 00 10 04 8B B8`;
ReadDatabasePages(EGV, 500, 1) `01 0C 00 11 04 F4 01 00 00 01 2B 83`; ReadSystemTime
`01 06 00 22 34 C0`; G4 EGV `00 17 56 1a f0 08 56 1a 78 00 14 76 d8` (120 mg/dL, FLAT, noise 1).
"""
