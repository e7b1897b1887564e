"""Message types, fields (CBOR map keys, ranges, units), priorities, deadlines and TTLs.

Every value on the wire is an integer. Prices are milli-cents per kWh, energies Wh, voltage mV,
power W, percentages hundredths of a percent, times milliseconds. The ten payload fields of the
Go prototype's 14-field line map onto these scaled integers without loss (see legacy.py).
"""

from shared_etp.compat import IS_MICROPYTHON, const

# Field and per-type tables (what frame.py needs, all a board loads): see fields.py.
from shared_etp.fields import (  # noqa: F401
    DEADLINE_MS,
    FIELD_HIGH,
    FIELD_LOW,
    FIELD_NAMES,
    HEADER_MASK,
    PRIORITY,
    REQUIRED_MASK,
)

PROTOCOL_VERSION = const(1)
TAG_BYTES = const(32)  # full HMAC-SHA256 tag appended to the body
MAX_FRAME_BYTES = const(512)

# Message types (paper numbering, as in the Go prototype).
REGISTER = const(0)
QUERY = const(1)
QUERY_RESPONSE = const(2)
BID = const(3)
BID_ACCEPT = const(4)
BID_CONFIRM = const(5)
BID_REJECT = const(6)
TERMINATE = const(7)
DEVICE_FAILURE = const(8)
BESS_STATUS = const(9)

TYPE_COUNT = const(10)  # types are 0..TYPE_COUNT-1 (names: shared_etp.names.TYPE_NAMES)


DEFAULT_TTL_MS = const(10000)

# BidReject / DeviceFailure / Terminate reason codes.
REASON_NONE = const(0)
REASON_BELOW_RESERVE = const(1)
REASON_INSUFFICIENT_ENERGY = const(2)
REASON_LOW_REPUTATION = const(3)
REASON_OUTBID = const(4)  # a better bid in this auction is held
REASON_AUCTION_CLOSED = const(5)
REASON_UNKNOWN_AUCTION = const(6)
REASON_HOLD_EXPIRED = const(7)  # BidConfirm came after the hold was released
REASON_DEVICE_FAULT = const(8)
REASON_BELOW_MARKET = const(9)  # below the dynamic (market/scarcity) reserve
REASON_VOLTAGE_OUT_OF_RANGE = const(10)
REASON_OVER_TEMPERATURE = const(11)
REASON_SHUTDOWN = const(12)
REASON_LINK_LOST = const(13)
REASON_NOT_HOLDER = const(14)  # BidConfirm from a bidder whose bid is not held
REASON_POWER_LIMIT = const(15)  # the lot's discharge, with the other sales', exceeds the pack's


# Market notice kind of the hub's time (market/time; hub/auctions/clock.py): after the
# reputation (1) and clearing-price (2) notices of shared_etp.frame.
NOTICE_TIME = const(3)

# Battery health status codes.
HEALTH_OK = const(0)
HEALTH_DEGRADED = const(1)
HEALTH_FAULT = const(2)
HEALTH_OFFLINE = const(3)


if not IS_MICROPYTHON:

    def __getattr__(name):
        """CPython: the hub's names and views (TYPE_NAMES, REASON_NAMES, FIELD_KEY, FIELD_NAME,
        FIELD_RANGE, FIELDS, HEADER_FIELDS, REQUIRED, RESPONSES, type_number) live in
        shared_etp.names and stay importable from here."""
        from shared_etp import names

        try:
            return getattr(names, name)
        except AttributeError:
            raise AttributeError("module 'shared_etp.schema' has no attribute " + repr(name))
