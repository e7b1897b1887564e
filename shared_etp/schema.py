"""Message types, fields (CBOR map keys, ranges, units), priorities, deadlines and TTLs.

Every value on the wire is an integer. Prices are milli-cents per kWh, energies Wh, voltage mV,
power W, percentages hundredths of a percent, times milliseconds. The ten payload fields of the
Go prototype's 14-field line map onto these scaled integers without loss (see legacy.py).
"""

from shared_etp.compat import const

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

TYPE_NAMES = (
    "register",
    "query",
    "query_response",
    "bid",
    "bid_accept",
    "bid_confirm",
    "bid_reject",
    "terminate",
    "device_failure",
    "bess_status",
)

_U32 = 0xFFFFFFFF
_I32_MIN = -0x80000000
_I32_MAX = 0x7FFFFFFF
_U53 = (1 << 53) - 1
_U40 = (1 << 40) - 1

# (name, CBOR key, minimum, maximum). Keys are small non-negative integers, so RFC 8949
# bytewise key order equals numeric order and equals cbor2's canonical order.
FIELDS = (
    # header
    ("v", 0, 1, 255),  # protocol version
    ("t", 1, 0, 9),  # message type
    ("id", 2, 0, _U32),  # message id (legacy messageID); responses echo the request's id
    ("src", 3, 0, _U32),  # sender id (legacy deviceID); 0 is the hub
    ("dst", 4, 0, _U32),  # recipient id; 0 = hub / everyone on the topic
    ("kid", 5, 0, 0xFFFF),  # key id of the HMAC key
    ("ep", 6, 0, _U32),  # sender boot epoch (survives reboots, see replay.py)
    ("seq", 7, 0, _U32),  # per-sender sequence number within the epoch
    ("ts", 8, 0, _U53),  # sender timestamp, ms since the Unix epoch
    ("ttl", 9, 0, 86400000),  # time to live in ms after ts; 0 = the type's deadline
    ("pri", 10, 0, 255),  # priority, 0 most urgent
    ("auc", 11, 0, _U32),  # auction id
    # payload: the Go prototype's ten payload fields, scaled to integers
    ("price", 12, 0, _I32_MAX),  # bidPrice, milli-cents per kWh
    ("sale", 13, 0, _I32_MAX),  # salePrice (the seller's reserve), milli-cents per kWh
    ("etot", 14, 0, _U40),  # energyTotal, Wh
    ("pct", 15, 0, 10000),  # percentageForSale, hundredths of a percent
    ("ereq", 16, 0, _U40),  # requiredEnergyAmount, Wh
    ("term", 17, 0, 255),  # terminationCode
    ("erem", 18, 0, _U40),  # remainingBatteryEnergy, Wh
    ("health", 19, 0, 255),  # batteryHealthStatusCode
    ("volt", 20, 0, 2000000),  # batteryVoltage, mV
    ("dis", 21, _I32_MIN, _I32_MAX),  # dischargeRate, W (negative while charging)
    # payload: new in protocol version 1
    ("reason", 22, 0, 255),  # reason code (BidReject, DeviceFailure, Terminate)
    ("soc", 23, 0, 10000),  # state of charge, hundredths of a percent
    ("round", 24, 0, 0xFFFF),  # auction round
)

FIELD_KEY = {}
FIELD_NAME = {}
FIELD_RANGE = {}
for _name, _key, _low, _high in FIELDS:
    FIELD_KEY[_name] = _key
    FIELD_NAME[_key] = _name
    FIELD_RANGE[_name] = (_low, _high)

HEADER_FIELDS = ("v", "t", "id", "src", "dst", "kid", "ep", "seq", "ts", "ttl", "pri")

# Fields each type must carry beyond the header.
REQUIRED = (
    ("etot", "pct", "sale", "erem", "health"),  # register (birth)
    (),  # query
    ("etot", "pct", "sale", "erem", "health", "volt", "dis", "soc"),  # query_response
    ("auc", "price", "ereq"),  # bid
    ("auc", "price", "ereq"),  # bid_accept: energy now held for the bidder
    ("auc", "price", "ereq"),  # bid_confirm: the buyer commits; the trade is final
    ("auc", "reason"),  # bid_reject
    ("term",),  # terminate
    ("health", "reason"),  # device_failure
    ("erem", "health", "volt", "dis", "soc"),  # bess_status
)

# Priorities (paper): 0 is the most urgent.
PRIORITY = (80, 65, 70, 20, 5, 10, 15, 2, 0, 60)

# Per-type deadlines in ms (paper): how long handling/delivery of this message type may take.
# Query and Bid carry the deadline of the answer they ask for; Terminate is as urgent as a
# confirmation.
DEADLINE_MS = (5000, 500, 500, 500, 500, 500, 500, 500, 200, 2000)

# What answers what: request type -> response types, for latency measurement.
RESPONSES = {
    QUERY: (QUERY_RESPONSE,),
    BID: (BID_ACCEPT, BID_REJECT),
    BID_ACCEPT: (BID_CONFIRM, BID_REJECT),
}

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

REASON_NAMES = {
    0: "none",
    1: "below_reserve",
    2: "insufficient_energy",
    3: "low_reputation",
    4: "outbid",
    5: "auction_closed",
    6: "unknown_auction",
    7: "hold_expired",
    8: "device_fault",
    9: "below_market",
    10: "voltage_out_of_range",
    11: "over_temperature",
    12: "shutdown",
    13: "link_lost",
    14: "not_holder",
}

# Battery health status codes.
HEALTH_OK = const(0)
HEALTH_DEGRADED = const(1)
HEALTH_FAULT = const(2)
HEALTH_OFFLINE = const(3)


def type_number(name_or_number):
    """Message type number from its name ("bid"), its number, or a numeric string."""
    if isinstance(name_or_number, int):
        return name_or_number
    text = str(name_or_number).strip().lower().replace("-", "_")
    if text.isdigit():
        return int(text)
    compact = text.replace("_", "")
    for number, name in enumerate(TYPE_NAMES):
        if name.replace("_", "") == compact:
            return number
    raise ValueError("unknown message type " + repr(name_or_number))
