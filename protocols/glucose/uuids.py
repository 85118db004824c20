"""Glucose Service (GLS 0x1808) service and characteristic UUIDs (protocols.md §1.13).

`GLUCOSE_SERVICE` 0x1808, `GLUCOSE_MEASUREMENT` 0x2A18 (notify), `GLUCOSE_MEASUREMENT_CONTEXT`
0x2A34 (notify), `GLUCOSE_FEATURE` 0x2A51 (read). The Record Access Control Point 0x2A52
(write/indicate) is shared with CGMS: `protocols.gatt.racp`. Collector: enable notify on 2A18
(+2A34) and indicate on 2A52, then RACP `01 03 01 <seq LE16>` = report records with sequence
number >= seq (`protocols.glucose.session.report_records_from`).
"""

from __future__ import annotations

from typing import Final

from protocols.gatt.uuids import uuid16

GLUCOSE_SERVICE: Final = uuid16(0x1808)
GLUCOSE_MEASUREMENT: Final = uuid16(0x2A18)
GLUCOSE_MEASUREMENT_CONTEXT: Final = uuid16(0x2A34)
GLUCOSE_FEATURE: Final = uuid16(0x2A51)
