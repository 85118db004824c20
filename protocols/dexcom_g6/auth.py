"""Dexcom G5/G6 authentication messages and the transmitter-id hash (protocols.md §2.4).

The family's API is documented in `protocols.dexcom_g6` (package docstring). Authentication
messages travel on the Authentication characteristic and carry no CRC (§2.2). Sources:
CGMBLEKit `Transmitter.swift` (`TransmitterID.computeHash`, `authenticate`, `requestBond`),
`Messages/AuthChallengeRxMessage.swift`; xDrip `g5model/AuthRequestTxMessage.java`.

* `auth_hash(transmitter_id, data8)`: key = ASCII "00" + id + "00" + id (16 bytes for the
  6-character id), hash = AES-128-ECB(key, data8 ‖ data8)[0:8]. VERIFIED: id "123456",
  `0123456789abcdef` -> `e60d4a7999b0fbb2` (CGMBLEKit `TransmitterIDTests`).
* `AuthRequestTx` `01 | token(8) | end byte` (0x02 standard; 0x01 the "alternate" slot, xDrip
  `endByteAlt`, effect [M], protocols.md §8.5). Example `01 11 8a 83 27 70 2f 45 ee 02`.
* `AuthRequestRx` `03 | tokenHash(8) | challenge(8)`; `AuthChallengeTx` `04 | hash(challenge)`;
  `AuthStatusRx` `05 | authenticated 01/00 | bonded 01/00`; `KeepAliveTx` `06 | seconds`
  (`06 19` = 25 s before bonding); `BondRequestTx` `07`.
* `AuthenticationFailed(ProtocolError)`: the transmitter's token hash does not match the id
  (`reason="token_hash_mismatch"`) or it refused our challenge answer (`"challenge_rejected"`).
  Not retryable: the configured transmitter id is wrong (or another transmitter answered).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Final

import construct as cs
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from protocols.codec import build_construct, parse_construct
from protocols.dexcom_g6.framing import Opcode
from protocols.errors import ProtocolError

END_BYTE_STANDARD: Final = 0x02
END_BYTE_ALTERNATE: Final = 0x01
#: Keep-alive CGMBLEKit and xDrip send before the bond request (25 s, `06 19`).
BOND_KEEP_ALIVE_S: Final = 25


class AuthenticationFailed(ProtocolError):  # noqa: N818 - reads as the event it reports
    """The transmitter does not share our transmitter id: a configuration error.

    `reason`: "token_hash_mismatch" (its answer to our token is wrong) or "challenge_rejected"
    (AuthStatus says not authenticated). `retryable` is False: retrying cannot help.
    """

    retryable: ClassVar[bool] = False

    def __init__(self, message: str, data: bytes = b"", *, reason: str) -> None:
        super().__init__(message, data)
        self.reason = reason


def normalize_transmitter_id(transmitter_id: str) -> str:
    """The 6-character id in upper case; `ValueError` if it is not 6 ASCII letters/digits."""
    text = transmitter_id.strip().upper()
    if len(text) != 6 or not text.isascii() or not text.isalnum():
        raise ValueError(f"a G5/G6 transmitter id is 6 letters or digits, not {transmitter_id!r}")
    return text


def auth_key(transmitter_id: str) -> bytes:
    """The AES-128 key: ASCII "00" + id + "00" + id."""
    tx = normalize_transmitter_id(transmitter_id)
    return f"00{tx}00{tx}".encode("ascii")


def auth_hash(transmitter_id: str, data: bytes) -> bytes:
    """AES-128-ECB(key, data ‖ data)[0:8] for 8 bytes of token or challenge."""
    if len(data) != 8:
        raise ProtocolError(f"auth hash input: {len(data)} bytes, expected 8", bytes(data))
    # ECB over one 16-byte block is what the transmitter computes; it is not our choice.
    encryptor = Cipher(algorithms.AES(auth_key(transmitter_id)), modes.ECB()).encryptor()  # noqa: S305
    return (encryptor.update(bytes(data) * 2) + encryptor.finalize())[:8]


def _opcode(op: Opcode) -> Any:
    return "opcode" / cs.Const(op, cs.Int8ul)


AUTH_REQUEST_TX = cs.Struct(
    _opcode(Opcode.AUTH_REQUEST_TX), "token" / cs.Bytes(8), "end_byte" / cs.Int8ul
)
AUTH_REQUEST_RX = cs.Struct(
    _opcode(Opcode.AUTH_REQUEST_RX), "token_hash" / cs.Bytes(8), "challenge" / cs.Bytes(8)
)
AUTH_CHALLENGE_TX = cs.Struct(_opcode(Opcode.AUTH_CHALLENGE_TX), "challenge_hash" / cs.Bytes(8))
AUTH_STATUS_RX = cs.Struct(
    _opcode(Opcode.AUTH_STATUS_RX), "authenticated" / cs.Int8ul, "bonded" / cs.Int8ul
)
KEEP_ALIVE_TX = cs.Struct(_opcode(Opcode.KEEP_ALIVE_TX), "seconds" / cs.Int8ul)
BOND_REQUEST_TX = cs.Struct(_opcode(Opcode.BOND_REQUEST_TX))


def _parse(con: cs.Construct[Any, Any], data: bytes, what: str) -> Any:
    if len(data) != con.sizeof():
        raise ProtocolError(f"{what}: {len(data)} bytes, expected {con.sizeof()}", bytes(data))
    return parse_construct(con, data, what)


@dataclass(frozen=True, slots=True)
class AuthRequestTx:
    """`01 | token | end byte`: opens authentication (10 bytes)."""

    token: bytes
    end_byte: int = END_BYTE_STANDARD

    @classmethod
    def parse(cls, data: bytes) -> AuthRequestTx:
        """Decode 10 bytes."""
        c = _parse(AUTH_REQUEST_TX, data, "auth request")
        return cls(bytes(c.token), c.end_byte)

    def build(self) -> bytes:
        """10 bytes."""
        fields = {"token": self.token, "end_byte": self.end_byte}
        return build_construct(AUTH_REQUEST_TX, fields, "auth request")

    @property
    def alternate(self) -> bool:
        """The alternate slot was asked (end byte 0x01)."""
        return self.end_byte == END_BYTE_ALTERNATE


@dataclass(frozen=True, slots=True)
class AuthRequestRx:
    """`03 | tokenHash | challenge` (17 bytes): the transmitter proves it knows the id."""

    token_hash: bytes
    challenge: bytes

    @classmethod
    def parse(cls, data: bytes) -> AuthRequestRx:
        """Decode 17 bytes."""
        c = _parse(AUTH_REQUEST_RX, data, "auth challenge")
        return cls(bytes(c.token_hash), bytes(c.challenge))

    def build(self) -> bytes:
        """17 bytes."""
        fields = {"token_hash": self.token_hash, "challenge": self.challenge}
        return build_construct(AUTH_REQUEST_RX, fields, "auth challenge")


@dataclass(frozen=True, slots=True)
class AuthChallengeTx:
    """`04 | hash(challenge)` (9 bytes): we prove we know the id."""

    challenge_hash: bytes

    @classmethod
    def parse(cls, data: bytes) -> AuthChallengeTx:
        """Decode 9 bytes."""
        return cls(bytes(_parse(AUTH_CHALLENGE_TX, data, "auth answer").challenge_hash))

    def build(self) -> bytes:
        """9 bytes."""
        fields = {"challenge_hash": self.challenge_hash}
        return build_construct(AUTH_CHALLENGE_TX, fields, "auth answer")


@dataclass(frozen=True, slots=True)
class AuthStatusRx:
    """`05 | authenticated | bonded` (3 bytes); each is 1 for yes (CGMBLEKit `isAuthenticated`)."""

    authenticated: int
    bonded: int

    @classmethod
    def parse(cls, data: bytes) -> AuthStatusRx:
        """Decode 3 bytes."""
        c = _parse(AUTH_STATUS_RX, data, "auth status")
        return cls(c.authenticated, c.bonded)

    def build(self) -> bytes:
        """3 bytes."""
        fields = {"authenticated": self.authenticated, "bonded": self.bonded}
        return build_construct(AUTH_STATUS_RX, fields, "auth status")

    @property
    def is_authenticated(self) -> bool:
        """The transmitter accepted our answer."""
        return self.authenticated == 1

    @property
    def is_bonded(self) -> bool:
        """This central is already bonded."""
        return self.bonded == 1


@dataclass(frozen=True, slots=True)
class KeepAliveTx:
    """`06 | seconds` on Authentication (`06 19` before bonding)."""

    seconds: int = BOND_KEEP_ALIVE_S

    @classmethod
    def parse(cls, data: bytes) -> KeepAliveTx:
        """Decode 2 bytes."""
        return cls(_parse(KEEP_ALIVE_TX, data, "keep-alive").seconds)

    def build(self) -> bytes:
        """2 bytes."""
        return build_construct(KEEP_ALIVE_TX, {"seconds": self.seconds}, "keep-alive")


@dataclass(frozen=True, slots=True)
class BondRequestTx:
    """`07`: asks the transmitter to start pairing (the OS pairing follows, Just Works [M])."""

    @classmethod
    def parse(cls, data: bytes) -> BondRequestTx:
        """Decode 1 byte."""
        _parse(BOND_REQUEST_TX, data, "bond request")
        return cls()

    def build(self) -> bytes:
        """1 byte."""
        return build_construct(BOND_REQUEST_TX, {}, "bond request")


AuthMessage = (
    AuthRequestTx | AuthRequestRx | AuthChallengeTx | AuthStatusRx | KeepAliveTx | BondRequestTx
)

_AUTH_PARSERS: Final[dict[int, Any]] = {
    Opcode.AUTH_REQUEST_TX: AuthRequestTx.parse,
    Opcode.AUTH_REQUEST_RX: AuthRequestRx.parse,
    Opcode.AUTH_CHALLENGE_TX: AuthChallengeTx.parse,
    Opcode.AUTH_STATUS_RX: AuthStatusRx.parse,
    Opcode.KEEP_ALIVE_TX: KeepAliveTx.parse,
    Opcode.BOND_REQUEST_TX: BondRequestTx.parse,
}


def parse_authentication(data: bytes) -> AuthMessage:
    """Any message written to or read from the Authentication characteristic (both ways)."""
    raw = bytes(data)
    parser = _AUTH_PARSERS.get(raw[0]) if raw else None
    if parser is None:
        raise ProtocolError("not a G5/G6 authentication message", raw)
    message: AuthMessage = parser(raw)
    return message
