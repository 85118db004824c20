"""CGMS (0x181F) service and characteristic UUIDs (protocols.md §1.1), as bleak reports them.

`CGMS_SERVICE` 0x181F, `CGM_MEASUREMENT` 0x2AA7 (notify), `CGM_FEATURE` 0x2AA8 (read),
`CGM_STATUS` 0x2AA9 (read), `CGM_SESSION_START_TIME` 0x2AAA (read/write),
`CGM_SESSION_RUN_TIME` 0x2AAB (read), `CGM_SPECIFIC_OPS_CONTROL_POINT` 0x2AAC (write/indicate).
The Record Access Control Point 0x2A52 is shared with GLS: `protocols.gatt.racp`.
"""

from __future__ import annotations

from typing import Final

from protocols.gatt.uuids import uuid16

CGMS_SERVICE: Final = uuid16(0x181F)
CGM_MEASUREMENT: Final = uuid16(0x2AA7)
CGM_FEATURE: Final = uuid16(0x2AA8)
CGM_STATUS: Final = uuid16(0x2AA9)
CGM_SESSION_START_TIME: Final = uuid16(0x2AAA)
CGM_SESSION_RUN_TIME: Final = uuid16(0x2AAB)
CGM_SPECIFIC_OPS_CONTROL_POINT: Final = uuid16(0x2AAC)
