"""Dexcom G4 / G5 / G6 receiver over USB serial: the receiver's stored EGV readings.

Supported: the Dexcom G4 Platinum, G5 Mobile and G6 receivers (USB VID:PID 22a3:0047,
CDC-ACM, /dev/ttyACM*), read with the receiver's USB protocol (the one openaps/dexcom_reader
uses). The G7 receiver encrypts its database reads and is not supported. Glucose is what the
receiver shows (mg/dL, 40-400); below 40 is published as out of range "low", above 400 as
"high"; the receiver's status values (sensor not active, no antenna, not calibrated, ...) are
logged (`egv_status`) and not published. The trend arrow becomes the Nightscout direction.

Every poll reads the receiver's clock and its newest EGV pages; the first contact backfills
`backfill_hours`, a reconnect everything since the newest stored reading (the receiver keeps
weeks). Reading ids are (receiver serial, record system time): the same record never
publishes twice, whichever page or poll it came from. Reading times are anchored to the hub's
clock: a receiver's clock hours or months off, or reset to its 2009 epoch, does not move them
(its offset is the device status's `clock_offset_s`; a clock that went back starts a new
session "egv-..."). Pages and records damaged in the receiver's memory are asked for twice
more, then passed over (`records_unreadable`). docs/dexcom-receiver.md has the rules.

Options (all optional):

  path            serial device of the receiver (default: the one USB device 22a3:0047, found
                  by VID:PID; with several receivers plugged in, set it to a stable name:
                  the udev rule below, or /dev/serial/by-id/...)
  poll_interval   seconds between reads of the newest pages, > 0 (default 60; the receiver
                  stores a reading every 5 minutes)
  backfill_hours  how far back the first contact reads, >= 0 (default 24)
  timeout         seconds one request may take before it is sent again (3 tries), > 0
                  (default 2)

Example::

    [[devices]]
    id = "receiver"
    driver = "dexcom_receiver"
    path = "/dev/dexcom-receiver"   # the udev rule's symlink

udev (Raspberry Pi OS): keep ModemManager off the port and let the gateway's user open it,
e.g. /etc/udev/rules.d/60-dexcom-receiver.rules::

    SUBSYSTEM=="tty", ATTRS{idVendor}=="22a3", ATTRS{idProduct}=="0047", \\
      ENV{ID_MM_DEVICE_IGNORE}="1", GROUP="dialout", MODE="0660", SYMLINK+="dexcom-receiver"

No receiver at hand: `gatewayd simulate --device dexcom-receiver` runs an emulated one on a
pseudo-terminal and prints the `path` to configure (docs/dexcom-receiver.md).
"""

from __future__ import annotations

import math

from drivers.dexcom_receiver.link import USB_PID, USB_VID
from drivers.dexcom_receiver.options import ReceiverOptions, parse_options
from drivers.dexcom_receiver.session import DRIVER, SESSION, ReceiverSession
from gatewayd.plugin import DeviceMatch, DriverPlugin, Emulator

__all__ = ["DRIVER", "SESSION", "ReceiverOptions", "ReceiverSession", "plugin"]

plugin: DriverPlugin[ReceiverOptions] = DriverPlugin(
    name=DRIVER,
    transport="serial",
    help=__doc__ or "",
    parse_options=parse_options,
    open=ReceiverSession,
    match=DeviceMatch(usb_vid_pid=((USB_VID, USB_PID),)),
    emulator=Emulator("dexcom-receiver", "drivers.dexcom_receiver.simulate:simulate"),
    # A receiver left at home while its wearer is out has nothing new for hours: silence is
    # normal. A dead cable or a hung receiver already fails its request timeouts (LinkLost).
    expected_interval=lambda _options: math.inf,
    # `time` is anchored to the hub's clock (the receiver clock's offset is measured every poll):
    # the default time_base "hub", re-dated with `received` if the hub's clock was not yet right.
)
