"""Fuzzing: hostile bytes give a ProtocolError with a known code, never any other exception."""

import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared_etp import cbor
from shared_etp.compat import hmac_sha256
from shared_etp.errors import ALL_CODES, ProtocolError
from shared_etp.frame import Keyring, Sender, decode_frame, encode_frame
from shared_etp.schema import FIELD_KEY, FIELD_RANGE, REQUIRED, TYPE_NAMES
from tests.conftest import REPO

KEY = b"\x01" * 32
RING = Keyring()
RING.add(7, KEY)
FUZZ = settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def rejects_cleanly(data: bytes) -> None:
    try:
        decode_frame(data, RING)
    except ProtocolError as exc:
        assert exc.code in ALL_CODES
        assert exc.reason
    try:
        cbor.loads(data)
    except ProtocolError as exc:
        assert exc.code in ALL_CODES


@FUZZ
@given(st.binary(max_size=700))
def test_random_bytes(data):
    rejects_cleanly(data)


cbor_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**64), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=8)
    | st.binary(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.integers(0, 40), children, max_size=6)
    ),
    max_leaves=20,
)


@FUZZ
@given(st.dictionaries(st.integers(-2, 40), cbor_values, max_size=30))
def test_correctly_signed_garbage_maps(fields):
    """Even with a valid tag, any map that is not a valid message is rejected by rule."""
    import cbor2

    body = cbor2.dumps(fields, canonical=True)
    frame = body + hmac_sha256(KEY, body)
    try:
        msg = decode_frame(frame, RING)
    except ProtocolError as exc:
        assert exc.code in ALL_CODES
    else:
        assert {FIELD_KEY[name]: value for name, value in msg.items()} == fields


@st.composite
def valid_messages(draw):
    msg_type = draw(st.integers(0, len(TYPE_NAMES) - 1))
    msg = {"v": 1, "t": msg_type, "kid": 7}
    for name in ("id", "src", "dst", "ep", "seq", "ts", "ttl", "pri", *REQUIRED[msg_type]):
        low, high = FIELD_RANGE[name]
        msg.setdefault(name, draw(st.integers(low, high)))
    for name in draw(st.sets(st.sampled_from(sorted(FIELD_RANGE)))):
        low, high = FIELD_RANGE[name]
        msg.setdefault(name, draw(st.integers(low, high)))
    return msg


@FUZZ
@given(valid_messages())
def test_valid_messages_round_trip_and_match_the_pure_codec(msg):
    import cbor2

    frame = encode_frame(msg, KEY)
    assert decode_frame(frame, RING) == msg
    int_map = {FIELD_KEY[name]: value for name, value in msg.items()}
    assert cbor.dumps(int_map) == frame[:-32] == cbor2.dumps(int_map, canonical=True)
    assert cbor.loads(frame[:-32]) == int_map


@FUZZ
@given(valid_messages(), st.integers(0, 10_000), st.integers(1, 255))
def test_mutated_valid_frames_are_rejected(msg, position, xor):
    frame = bytearray(encode_frame(msg, KEY))
    frame[position % len(frame)] ^= xor
    with pytest.raises(ProtocolError):
        decode_frame(bytes(frame), RING)


@pytest.mark.slow
@pytest.mark.parametrize("interpreter", ["cpython", "micropython"])
def test_random_mutation_fuzzer_on_both_interpreters(interpreter, request):
    binary = sys.executable if interpreter == "cpython" else request.getfixturevalue("micropython")
    cases = "20000" if interpreter == "cpython" else "10000"
    result = subprocess.run(
        [binary, "tests/golden/fuzz_frames.py", str(REPO), cases, "1234"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert " 0 crashed" in result.stdout


def test_sender_output_is_always_accepted():
    sender = Sender(1001, 7, KEY, 1)
    for _ in range(100):
        frame, msg = sender.frame(3, dst=7, auc=1, price=1, ereq=1)
        assert decode_frame(frame, RING) == msg


def _full_checks(body: bytes) -> dict | None:
    """The message the pure codec and validate() accept from body, or None."""
    from shared_etp.fields import FIELD_NAMES
    from shared_etp.frame import validate

    try:
        msg = cbor.loads(body, FIELD_NAMES)
        validate(msg)
    except ProtocolError:
        return None
    return msg


@FUZZ
@given(st.dictionaries(st.integers(-2, 40), cbor_values, max_size=30), st.booleans())
def test_hub_fast_decode_accepts_exactly_what_the_full_checks_accept(fields, canonical):
    """The hub's one-pass decode (cbor2) may only decline, never differ from the full checks."""
    import cbor2

    from shared_etp.host import hub_codec

    body = cbor2.dumps(fields, canonical=canonical)
    fast = hub_codec()[2](cbor2.loads(body), body)
    assert fast == _full_checks(body)


@FUZZ
@given(valid_messages())
def test_hub_fast_paths_take_every_valid_message(msg):
    from shared_etp.host import hub_codec

    _loads, body_of, message_of = hub_codec()
    body = body_of(msg)
    int_map = {FIELD_KEY[name]: value for name, value in msg.items()}
    assert body == cbor.dumps(int_map)
    assert message_of(cbor.loads(body), body) == msg


@FUZZ
@given(
    st.dictionaries(
        st.sampled_from(sorted(FIELD_KEY)) | st.text(max_size=3),
        st.integers(-(2**40), 2**54) | st.booleans() | st.none() | st.text(max_size=2),
        max_size=25,
    )
)
def test_hub_fast_encode_declines_everything_validate_rejects(msg):
    from shared_etp.frame import validate
    from shared_etp.host import hub_codec

    body = hub_codec()[1](msg)
    try:
        validate(msg)
    except ProtocolError:
        assert body is None
    else:
        assert body is None or body == cbor.dumps({FIELD_KEY[n]: v for n, v in msg.items()})
