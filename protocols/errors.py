"""The one error every codec and protocol session raises for bad input.

`ProtocolError` (a `ValueError`) is the root; subclasses narrow it without callers having to care:

* `CrcError` — a value whose E2E-CRC / frame CRC does not match (`received`, `computed`).
* `ControlPointError` — a control point packet that is well framed but invalid for its op code;
  `response_code` is the code a server (an emulator) answers it with (RACP / SOCP tables).
"""


class ProtocolError(ValueError):
    """Bytes that do not follow the protocol: malformed, truncated, or failing a check.

    `data` holds the offending bytes (when known) so the caller can log them as hex.
    """

    def __init__(self, message: str, data: bytes = b"") -> None:
        super().__init__(message)
        self.data = data


class CrcError(ProtocolError):
    """A CRC that does not match the bytes it covers."""

    def __init__(self, message: str, data: bytes = b"", *, received: int, computed: int) -> None:
        super().__init__(f"{message}: CRC 0x{received:04x} != computed 0x{computed:04x}", data)
        self.received = received
        self.computed = computed


class ControlPointError(ProtocolError):
    """A control point request or response that is invalid for its op code / operator.

    `response_code` is what a server answers such a request with (for example RACP 0x03
    "invalid operator", 0x05 "invalid operand"; SOCP 0x03 "invalid operand").
    """

    def __init__(self, message: str, data: bytes = b"", *, response_code: int) -> None:
        super().__init__(message, data)
        self.response_code = response_code
