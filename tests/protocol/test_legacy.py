"""The Go prototype's 14-field line converts to messages and back without loss."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared_etp import errors
from shared_etp.errors import ProtocolError
from shared_etp.frame import Keyring, Sender, decode_frame, encode_frame
from shared_etp.legacy import LEGACY_FIELDS, parse_legacy, to_legacy

LINE = "3 48213 7 5 21.50 0.00 100.00 55.25 5.00 0 80.00 0 48.20 -1.50"


def test_example_line_maps_to_scaled_integers():
    msg = parse_legacy(LINE)
    assert msg == {
        "t": 3,
        "id": 48213,
        "src": 7,
        "ttl": 5000,
        "price": 21500,
        "sale": 0,
        "etot": 100000,
        "pct": 5525,
        "ereq": 5000,
        "term": 0,
        "erem": 80000,
        "health": 0,
        "volt": 48200,
        "dis": -1500,
    }
    assert to_legacy(msg) == LINE


def test_legacy_message_survives_the_wire():
    key = b"k" * 32
    sender = Sender(7, 7, key, 1)
    legacy = parse_legacy(LINE)
    # the prototype had one auction per TCP session: a bridge assigns the auction id
    msg = sender.stamp(
        legacy.pop("t"), msg_id=legacy.pop("id"), ttl=legacy.pop("ttl"), auc=1, **legacy
    )
    msg["src"] = 7
    ring = Keyring()
    ring.add(7, key)
    assert to_legacy(decode_frame(encode_frame(msg, key), ring)) == LINE


def test_short_forms_are_read_exactly():
    msg = parse_legacy("3 1 2 5 21.5 .5 1 0 0 0 0 0 0 0")
    assert (msg["price"], msg["sale"], msg["etot"]) == (21500, 500, 1000)


@pytest.mark.parametrize(
    "line, code",
    [
        ("3 1 2", errors.BAD_LEGACY),
        (LINE + " 9", errors.BAD_LEGACY),
        (LINE.replace("21.50", "21.5x"), errors.BAD_LEGACY),
        (LINE.replace("21.50", "21.5055"), errors.BAD_LEGACY),  # more precision than kept
        (LINE.replace("48213", "4.5"), errors.BAD_LEGACY),
        (LINE.replace("21.50", "-21.50"), errors.OUT_OF_RANGE),
        ("12" + LINE[1:], errors.OUT_OF_RANGE),
        ("", errors.BAD_LEGACY),
        ("x" * 2000, errors.BAD_LEGACY),
    ],
)
def test_bad_lines_give_specific_errors(line, code):
    with pytest.raises(ProtocolError) as info:
        parse_legacy(line)
    assert info.value.code == code


def test_bytes_input_and_non_text():
    assert parse_legacy(LINE.encode())["id"] == 48213
    with pytest.raises(ProtocolError):
        parse_legacy(b"\xff\xfe")


def two_dp(low, high):
    return st.integers(low, high).map(
        lambda cents: "%s%d.%02d" % ("-" if cents < 0 else "", abs(cents) // 100, abs(cents) % 100)
    )


@settings(max_examples=2000, deadline=None)
@given(
    st.tuples(
        st.integers(0, 9),
        st.integers(0, 2**32 - 1),
        st.integers(0, 2**32 - 1),
        st.integers(0, 86400),
        two_dp(0, 2**31 // 10),
        two_dp(0, 2**31 // 10),
        two_dp(0, 10**9),
        two_dp(0, 10000),
        two_dp(0, 10**9),
        st.integers(0, 255),
        two_dp(0, 10**9),
        st.integers(0, 255),
        two_dp(0, 200000),
        two_dp(-(2**31 // 10), 2**31 // 10),
    )
)
def test_every_two_decimal_line_round_trips(fields):
    line = " ".join(str(f) for f in fields)
    assert to_legacy(parse_legacy(line)) == line.replace("-0.00", "0.00")


def test_new_values_round_to_two_decimals_half_up():
    assert to_legacy({"price": 21505}).split()[4] == "21.51"
    assert to_legacy({"price": 21504}).split()[4] == "21.50"
    assert to_legacy({"dis": -1505}).split()[13] == "-1.51"
    assert len(LEGACY_FIELDS) == 14
