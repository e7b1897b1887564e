"""Hub-side views of the schema: type and reason names, field tables keyed by name.

Boards never import this module (it would only cost heap there); CPython code may import these
names from shared_etp.schema as well, which re-exports them.
"""

from shared_etp.schema import (
    BID,
    BID_ACCEPT,
    BID_CONFIRM,
    BID_REJECT,
    FIELD_HIGH,
    FIELD_LOW,
    FIELD_NAMES,
    QUERY,
    QUERY_RESPONSE,
)

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

# (name, CBOR key, minimum, maximum) per field, in key order.
FIELDS = tuple(
    (name, key, FIELD_LOW[key], FIELD_HIGH[key]) for key, name in enumerate(FIELD_NAMES)
)
FIELD_KEY = {name: key for key, name in enumerate(FIELD_NAMES)}
FIELD_NAME = dict(enumerate(FIELD_NAMES))
FIELD_RANGE = {name: (FIELD_LOW[key], FIELD_HIGH[key]) for key, name in enumerate(FIELD_NAMES)}

HEADER_FIELDS = FIELD_NAMES[:11]  # v t id src dst kid ep seq ts ttl pri

# Fields each type must carry beyond the header (schema.REQUIRED_MASK is the same as key bits).
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

# What answers what: request type -> response types, for latency measurement.
RESPONSES = {
    QUERY: (QUERY_RESPONSE,),
    BID: (BID_ACCEPT, BID_REJECT),
    BID_ACCEPT: (BID_CONFIRM, BID_REJECT),
}

# BidReject / DeviceFailure / Terminate reason codes by number (schema.REASON_*).
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
    15: "power_limit",
}


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
