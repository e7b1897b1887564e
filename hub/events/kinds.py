"""The closed set of event kinds and the typed `Event` every component sees."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

__all__ = ["Event", "EventKind"]


class EventKind(StrEnum):
    """Every change an operator or a service must see. Values are stored as `events.kind`."""

    # auctions (emitted by the auction driver)
    AUCTION_OPENED = "auction_opened"  # payload: mechanism, lot_wh, reserve_mc
    QUERY_ANSWERED = "query_answered"  # the battery's offer: lot_wh, reserve_mc
    BID_PLACED = "bid_placed"  # bidder_id, price_mc, energy_wh, round
    BID_ACCEPTED = "bid_accepted"  # bidder_id, price_mc, energy_wh, round
    BID_REJECTED = "bid_rejected"  # bidder_id, price_mc, round, reason
    TRADE_RECORDED = "trade_recorded"  # durable before BidConfirm: trade_id, bidder_id, price_mc...
    CONFIRM_ANSWERED = "confirm_answered"  # the battery answered BidConfirm: copy, accepted, reason
    TRADE_VERIFIED = "trade_verified"  # the battery proved it; it counts: source confirm | asked
    TRADE_UNVERIFIED = "trade_unverified"  # no answer: does not count; its battery will be asked
    TRADE_VOID = "trade_void"  # the battery did not commit: reason, source confirm | asked
    TRADE_UNRESOLVABLE = "trade_unresolvable"  # the battery's answer cannot decide: problem
    AUCTION_CLOSED = "auction_closed"  # outcome: cleared | no_sale | terminated (+ price...)
    AUCTION_RECOVERED = "auction_recovered"  # left open by a crash, resolved: outcome
    # devices (emitted by the runtime)
    BATTERY_STATUS = "battery_status"  # on a change of health / online / coarse state of charge
    DEVICE_ONLINE = "device_online"  # health
    DEVICE_OFFLINE = "device_offline"  # health
    DEVICE_FAILURE = "device_failure"  # reason, source (will | deadline | status), health
    DEVICE_QUARANTINED = "device_quarantined"  # flooding: until_ms, dropped (hub.devices.flood)
    # market and operations
    AGGREGATOR_UPDATE = "aggregator_update"  # aggregator_id, budget_mc, requirement_wh...
    TRADING_PERIOD = "trading_period"  # period
    OPERATOR_ACTION = "operator_action"  # action, by
    SETTLEMENT_CHANGED = "settlement_changed"  # trade_id, status, signature
    METRICS_SNAPSHOT = "metrics_snapshot"  # the hub's status counts, periodically
    ALERT_RAISED = "alert_raised"  # the alert (hub.store AlertRow.view): new, or a repeat counted
    ALERT_ACKNOWLEDGED = "alert_acknowledged"  # the alert, with acknowledged_by
    # device provisioning (`etp device`): key_generation, owner (never a secret)
    DEVICE_PROVISIONED = "device_provisioned"
    DEVICE_REVOKED = "device_revoked"
    DEVICE_ROTATED = "device_rotated"

    # security audit (hub.security.audit; payloads never carry a secret)
    API_KEY_CREATED = "api_key_created"  # key_id (etp_<id>), name, role, source, by, at_ms
    API_KEY_REVOKED = "api_key_revoked"  # source: api (by: the key) | database (etp apikey)
    LOGIN_FAILED = "login_failed"  # client, reason, key_id, count, window_s, reasons
    FRAMES_REJECTED = "frames_rejected"  # reason, count, window_s (per device and reason)


@dataclass(frozen=True, slots=True)
class Event:
    """One event of the site's log, numbered by `seq` (strictly increasing, never reused).

    `kind` is an EventKind; it is a plain str only for a stored row whose kind this version
    of the hub does not know (written by another version). `payload` is JSON-ready.
    """

    seq: int
    kind: EventKind | str
    ts_ms: int
    device_id: int | None = None
    auction_id: int | None = None
    payload: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready view (what the gateway sends to clients)."""
        return {
            "seq": self.seq,
            "kind": str(self.kind),
            "ts_ms": self.ts_ms,
            "device_id": self.device_id,
            "auction_id": self.auction_id,
            "payload": self.payload,
        }


def kind_of(value: str) -> EventKind | str:
    """The EventKind named `value`, or `value` itself when this hub does not know it."""
    try:
        return EventKind(value)
    except ValueError:
        return value
