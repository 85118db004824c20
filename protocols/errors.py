"""The one error every codec and protocol session raises for bad input."""


class ProtocolError(ValueError):
    """Bytes that do not follow the protocol: malformed, truncated, or failing a check.

    `data` holds the offending bytes (when known) so the caller can log them as hex.
    """

    def __init__(self, message: str, data: bytes = b"") -> None:
        super().__init__(message)
        self.data = data
