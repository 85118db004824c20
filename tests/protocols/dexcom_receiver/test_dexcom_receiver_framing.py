"""The stream decoder: frames out of any chunking, garbage skipped, resync after bad frames."""

from __future__ import annotations

from protocols.dexcom_receiver.commands import build_u32, ping
from protocols.dexcom_receiver.frames import (
    ANSWERS,
    MAX_PACKET,
    BadFrame,
    Command,
    Event,
    Frame,
    FrameDecoder,
    Garbage,
    Packet,
    parse_packet,
)
from protocols.errors import CrcError

PING = ping()
TIME = Packet(Command.ACK, build_u32(441849600)).build()


def feed_bytewise(decoder: FrameDecoder, data: bytes) -> list[Event]:
    events: list[Event] = []
    for i in range(len(data)):
        events += decoder.feed(data[i : i + 1])
    return events


def frames(events: list[Event]) -> list[Packet]:
    return [e.packet for e in events if isinstance(e, Frame)]


def test_frames_split_anywhere_are_reassembled() -> None:
    stream = PING + TIME + PING
    events = feed_bytewise(FrameDecoder(), stream)
    assert frames(events) == [parse_packet(PING), parse_packet(TIME), parse_packet(PING)]
    assert all(isinstance(e, Frame) for e in events)


def test_garbage_between_frames_is_skipped_and_reported_once_per_run() -> None:
    decoder = FrameDecoder()
    events = decoder.feed(b"\xaa\xbb" + PING + b"noise\x01\xff\xff" + TIME + b"tail")
    assert frames(events) == [parse_packet(PING), parse_packet(TIME)]
    garbage = [e.raw for e in events if isinstance(e, Garbage)]
    assert garbage == [b"\xaa\xbb", b"noise\x01\xff\xff", b"tail"]
    assert decoder.pending == 0


def test_a_corrupted_frame_is_reported_and_the_next_one_still_found() -> None:
    bad = PING[:-1] + bytes([PING[-1] ^ 0xFF])
    events = FrameDecoder().feed(bad + TIME)
    assert [type(e) for e in events] == [BadFrame, Frame]
    assert isinstance(events[0], BadFrame)
    assert isinstance(events[0].error, CrcError)
    assert events[0].raw == bad
    assert frames(events) == [parse_packet(TIME)]


def test_a_corrupted_length_does_not_swallow_the_next_frame() -> None:
    # The first frame claims 9 bytes: it takes the first 3 bytes of the good frame with it.
    lying = b"\x01\x09\x00\x0a\x5e\x65"
    events = FrameDecoder().feed(lying + TIME)
    assert frames(events) == [parse_packet(TIME)]
    assert sum(isinstance(e, BadFrame) for e in events) == 1


def test_an_impossible_length_is_garbage() -> None:
    events = FrameDecoder().feed(b"\x01\x02\x00" + PING)  # length 2 < 6
    assert frames(events) == [parse_packet(PING)]
    assert [e.raw for e in events if isinstance(e, Garbage)] == [b"\x01\x02\x00"]


def test_clear_forgets_a_partial_frame() -> None:
    decoder = FrameDecoder()
    assert decoder.feed(TIME[:5]) == []
    assert decoder.pending == 5
    decoder.clear()
    assert frames(decoder.feed(PING)) == [parse_packet(PING)]


def test_largest_packet_round_trips() -> None:
    payload = bytes(range(256)) * 6 + bytes(1584 - 1536)
    packet = Packet(Command.ACK, payload)
    raw = packet.build()
    assert len(raw) == MAX_PACKET
    assert frames(FrameDecoder().feed(raw)) == [packet]


def test_a_host_decoder_skips_false_starts_at_once() -> None:
    noise = b"\x01\x02\x03noise"  # SOF and a plausible length, but 'n' is no answer code
    answer = Packet(Command.ACK).build()
    events = FrameDecoder(ANSWERS).feed(noise + answer)
    assert frames(events) == [Packet(Command.ACK)]
    assert [e.raw for e in events if isinstance(e, Garbage)] == [noise]
    # Without the answer codes the false start waits for its 770 bytes.
    assert frames(FrameDecoder().feed(noise + answer)) == []
