"""MQTT topic scheme: etp/v1/<site>/bess/<device>/<leaf>, etp/v1/<site>/market/<leaf> and
etp/v1/<site>/market/<device>/<notice> (one board's market notices).

See shared_etp/README.md for the table of topics, publishers, QoS and retain flags.
"""

ROOT = "etp/v1"

BIRTH = "birth"  # Register, retained (Sparkplug NBIRTH-like)
DEATH = "death"  # DeviceFailure: the device's last will, and self-reported faults
STATUS = "status"  # BESSStatus
REQUEST = "req"  # to the device: Query, Bid, BidConfirm, Terminate
RESPONSE = "resp"  # from the device: QueryResponse, BidAccept, BidReject

REPUTATION = "reputation"  # retained notice: bidder id -> reputation (hundredths of a percent)
CLEARING = "clearing"  # retained notice: recent clearing prices (milli-cents/kWh)
TIME = "time"  # retained notice: the hub's time, every second (boards without a clock)
NOTICES = (REPUTATION, CLEARING, TIME)  # the notice leaves of market/<device>/
HUB_STATE = "hub"  # retained text "online" / "offline" (the hub's own will)

LEAVES = (BIRTH, DEATH, STATUS, REQUEST, RESPONSE)


def _check_segment(value, what):
    text = str(value)
    if not text or "/" in text or "+" in text or "#" in text or "\x00" in text:
        raise ValueError("invalid %s %r for an MQTT topic" % (what, value))
    return text


def device_topic(site, device_id, leaf):
    """Topic of one device's leaf, e.g. etp/v1/site1/bess/7/req."""
    return "%s/%s/bess/%d/%s" % (ROOT, _check_segment(site, "site"), device_id, leaf)


def market_topic(site, leaf):
    """Topic of a site-wide market notice, e.g. etp/v1/site1/market/clearing."""
    return "%s/%s/market/%s" % (ROOT, _check_segment(site, "site"), leaf)


def notice_topic(site, device_id, leaf):
    """Topic of one board's market notice, e.g. etp/v1/site1/market/7/clearing: signed with that
    board's own notice key, readable by anyone, published (retained) only by the hub."""
    return "%s/%s/market/%d/%s" % (ROOT, _check_segment(site, "site"), device_id, leaf)


def notice_wildcard(site, leaf):
    """Subscription for one kind of market notice of every board at a site (simulators)."""
    return "%s/%s/market/+/%s" % (ROOT, _check_segment(site, "site"), leaf)


def device_wildcard(site, leaf):
    """Subscription for one leaf of every device at a site ('+' for every site)."""
    segment = site if site == "+" else _check_segment(site, "site")
    return "%s/%s/bess/+/%s" % (ROOT, segment, leaf)


DISCOVERY = ROOT + "/+/bess/+/" + BIRTH  # every battery's birth at every site


def parse_device_topic(topic):
    """Split a device topic into (site, device_id, leaf); None if it is not one."""
    parts = topic.split("/")
    if len(parts) != 6 or parts[0] + "/" + parts[1] != ROOT or parts[3] != "bess":
        return None
    if parts[5] not in LEAVES or not parts[4].isdigit():
        return None
    return parts[2], int(parts[4]), parts[5]
