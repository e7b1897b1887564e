"""The legacy stream has no framing: the bridge cuts it into messages from the fixed format."""

from __future__ import annotations

from hub.legacy.wire import LegacyStream, legacy_line
from shared_etp.legacy import parse_legacy

QUERY_RESPONSE = "2 48213 7 5 0.00 20.00 10.00 50.00 0.00 0 9.00 0 48.00 0.50"
BID_ACCEPT = "4 48214 7 5 21.50 20.00 10.00 50.00 1.00 0 9.00 0 48.00 -1.25"


def test_one_message_per_read() -> None:
    stream = LegacyStream()
    assert stream.feed_lines(QUERY_RESPONSE.encode()) == [QUERY_RESPONSE]
    assert stream.feed_lines(BID_ACCEPT.encode()) == [BID_ACCEPT]


def test_two_messages_in_one_read_without_a_separator() -> None:
    # "... 0.50" + "4 48214 ..." arrive as "... 0.504 48214 ...": the last field has two
    # decimals, so the first message ends after them
    stream = LegacyStream()
    assert stream.feed_lines((QUERY_RESPONSE + BID_ACCEPT).encode()) == [
        QUERY_RESPONSE,
        BID_ACCEPT,
    ]


def test_a_message_split_across_reads_at_every_byte() -> None:
    data = (QUERY_RESPONSE + BID_ACCEPT + QUERY_RESPONSE).encode()
    for cut in range(1, len(data)):
        stream = LegacyStream()
        lines = stream.feed_lines(data[:cut]) + stream.feed_lines(data[cut:])
        assert lines == [QUERY_RESPONSE, BID_ACCEPT, QUERY_RESPONSE], cut
        assert stream.garbled == 0


def test_byte_by_byte_and_with_stray_whitespace() -> None:
    stream = LegacyStream()
    lines = []
    for byte in ("  " + QUERY_RESPONSE + "\n" + BID_ACCEPT).encode():
        lines += stream.feed_lines(bytes([byte]))
    assert lines == [QUERY_RESPONSE, BID_ACCEPT]


def test_garbage_is_skipped_and_counted() -> None:
    stream = LegacyStream()
    lines = stream.feed_lines(b"hello " + QUERY_RESPONSE.encode())
    # "hello" is not a messageType: the stream drops fields until a message parses
    messages = [parse_legacy(line) for line in lines]
    assert messages and messages[-1]["id"] == 48213
    assert stream.garbled >= 1


def test_lines_round_trip_through_the_codec() -> None:
    msg = parse_legacy(BID_ACCEPT)
    assert legacy_line(msg).decode() == BID_ACCEPT
    assert LegacyStream().feed(legacy_line(msg)) == [msg]
