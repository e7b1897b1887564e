"""The Go prototype's 14-field text line, converted to and from protocol messages.

Line fields, in order: messageType messageID deviceID ttl bidPrice salePrice energyTotal
percentageForSale requiredEnergyAmount terminationCode remainingBatteryEnergy
batteryHealthStatusCode batteryVoltage dischargeRate. Decimals carry two places.
Scaling (legacy unit -> wire integer): cents/kWh x1000 -> milli-cents/kWh, kWh x1000 -> Wh,
% x100 -> hundredths of a percent, V x1000 -> mV, kW x1000 -> W, ttl seconds x1000 -> ms.
"""

from shared_etp.errors import BAD_LEGACY, OUT_OF_RANGE, ProtocolError
from shared_etp.names import FIELD_RANGE

# (message field, scale from the legacy value to the wire integer, decimal places)
LEGACY_FIELDS = (
    ("t", 1, 0),
    ("id", 1, 0),
    ("src", 1, 0),
    ("ttl", 1000, 0),
    ("price", 1000, 2),
    ("sale", 1000, 2),
    ("etot", 1000, 2),
    ("pct", 100, 2),
    ("ereq", 1000, 2),
    ("term", 1, 0),
    ("erem", 1000, 2),
    ("health", 1, 0),
    ("volt", 1000, 2),
    ("dis", 1000, 2),
)

_MAX_LINE = 1024


def _parse_scaled(token, scale, places, position):
    """Parse a decimal token exactly (no floats) and scale it to an integer."""
    text = token
    negative = text.startswith("-")
    if negative or text.startswith("+"):
        text = text[1:]
    whole, dot, frac = text.partition(".")
    if not whole and not frac:
        raise ProtocolError(BAD_LEGACY, "field %d %r is not a number" % (position, token))
    if not (whole or "0").isdigit() or (dot and not frac.isdigit()):
        raise ProtocolError(BAD_LEGACY, "field %d %r is not a number" % (position, token))
    if dot and places == 0:
        raise ProtocolError(BAD_LEGACY, "field %d %r must be an integer" % (position, token))
    digits = 0
    unit = 1
    while unit < scale:
        unit *= 10
        digits += 1
    if len(frac) > digits and int(frac[digits:]) != 0:
        raise ProtocolError(
            BAD_LEGACY, "field %d %r has more precision than the protocol keeps" % (position, token)
        )
    frac = (frac + "0" * digits)[:digits]
    value = int(whole or "0") * scale + (int(frac) if frac else 0)
    return -value if negative else value


def _format_scaled(value, scale, places):
    """Render a wire integer in legacy units with the given decimal places, rounding half up."""
    if places == 0:
        return str(value // scale)
    negative = value < 0
    magnitude = -value if negative else value
    step = scale // (10**places)  # wire units per last legacy digit
    units = (magnitude + step // 2) // step
    whole = units // (10**places)
    frac = units % (10**places)
    text = "%d.%0*d" % (whole, places, frac)
    return "-" + text if negative and units else text


def parse_legacy(line):
    """Parse a legacy line into a partial message (type, id, src, ttl and the payload fields).

    The result lacks the new header (epoch, seq, timestamp, key id, ...): stamp it with a
    Sender before signing.
    """
    if isinstance(line, (bytes, bytearray)):
        try:
            line = bytes(line).decode()
        except UnicodeError:
            raise ProtocolError(BAD_LEGACY, "line is not text") from None
    if len(line) > _MAX_LINE:
        raise ProtocolError(BAD_LEGACY, "line longer than %d characters" % _MAX_LINE)
    tokens = line.split()
    if len(tokens) != len(LEGACY_FIELDS):
        raise ProtocolError(
            BAD_LEGACY, "expected %d fields, got %d" % (len(LEGACY_FIELDS), len(tokens))
        )
    msg = {}
    for position, (token, (name, scale, places)) in enumerate(zip(tokens, LEGACY_FIELDS)):
        value = _parse_scaled(token, scale, places, position + 1)
        low, high = FIELD_RANGE[name]
        if value < low or value > high:
            raise ProtocolError(
                OUT_OF_RANGE,
                "field %d (%s) %s outside the protocol's range" % (position + 1, name, token),
            )
        msg[name] = value
    return msg


def to_legacy(msg):
    """Render a message as a legacy line; fields the message lacks are written as zero."""
    parts = []
    for name, scale, places in LEGACY_FIELDS:
        parts.append(_format_scaled(msg.get(name, 0), scale, places))
    return " ".join(parts)
