"""Pure packet codecs and sans-I/O device sessions: bytes in, events out; no I/O, no clock."""
