"""What an auction session is told (events) and what it asks its driver to do (commands).

Plain frozen values: a driver builds events from what the batteries answered and carries out
commands; hub/auctions/session.py decides between them. Also the closed sets a session uses:
`Outcome`, `BidOutcome`, `Phase`, and the `SessionRules` it needs of the configuration.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from hub.auctions.rules import Mechanism

__all__ = [
    "AwaitConfirm",
    "BidAnswered",
    "BidOutcome",
    "Cancelled",
    "Close",
    "Command",
    "ConfirmAnswered",
    "Event",
    "NextRound",
    "Outcome",
    "Phase",
    "QueryAnswered",
    "RecordBid",
    "RecordFailed",
    "RecordOffer",
    "RecordTrade",
    "RoundStarted",
    "SendBid",
    "SendConfirm",
    "SendQuery",
    "SendTerminate",
    "SessionRules",
    "TimedOut",
    "TradeRecorded",
    "TradeTerms",
]


class Outcome(StrEnum):
    """How an auction ended."""

    CLEARED = "cleared"  # the battery acknowledged the confirm: the trade is proven
    UNVERIFIED = "unverified"  # trade recorded, the battery's answer never came: it is asked
    NO_SALE = "no_sale"  # nothing sold (no lot, no bid the battery took)
    TERMINATED = "terminated"  # cut short: no answer to the query, device failure, shutdown
    VOID = "void"  # trade recorded, but the battery refused the confirm: it never committed

    @property
    def store_status(self) -> str:
        """The auction's status in the store (one of models.AUCTION_CLOSED_STATUSES)."""
        if self in (Outcome.CLEARED, Outcome.UNVERIFIED):
            return "cleared"
        if self is Outcome.NO_SALE:
            return "no_sale"
        return "terminated"

    @property
    def trade_status(self) -> str | None:
        """What the auction's recorded trade becomes (models.TRADE_STATUSES), if it has one."""
        return {
            Outcome.CLEARED: "verified",
            Outcome.UNVERIFIED: "unverified",
            Outcome.VOID: "void",
        }.get(self)


class BidOutcome(StrEnum):
    """What the battery made of one bid (the store's bid outcomes)."""

    ACCEPTED = "accepted"
    REJECTED = "rejected"
    CONFIRMED = "confirmed"


class Phase(StrEnum):
    """Where a session stands."""

    NEW = "new"
    QUERYING = "querying"
    BETWEEN_ROUNDS = "between_rounds"
    BIDDING = "bidding"
    RECORDING = "recording"  # the trade is being written durably (not cancellable)
    CONFIRMING = "confirming"  # BidConfirm sent, waiting for the battery (not cancellable)
    CLOSED = "closed"


@dataclass(frozen=True)
class TradeTerms:
    """The trade a session records and confirms."""

    bidder_id: int
    price_mc: int
    energy_wh: int
    reserve_mc: int


@dataclass(frozen=True)
class SessionRules:
    """What a session needs to know of the site's configuration (see AuctionConfig)."""

    mechanism: Mechanism
    max_lot_wh: int | None  # largest lot per auction (None: the whole sellable amount)
    min_lot_wh: int
    response_timeout_ms: int
    hold_timeout_ms: int
    auction_rules: dict[str, int] = field(default_factory=dict)  # see rules.new_auction
    confirm_copies: int = 3  # BidConfirm sent at most this often while unanswered

    def confirm_wait_ms(self, copy: int) -> int:
        """How long to wait after sending copy `copy` (1-based): a reply's time, and after the
        last copy also the battery's hold time, so a late answer to any copy still counts."""
        if copy < self.confirm_copies:
            return self.response_timeout_ms
        return self.response_timeout_ms + self.hold_timeout_ms


# ---- events (what happened) ----------------------------------------------------------------


@dataclass(frozen=True)
class QueryAnswered:
    """The battery's QueryResponse: what it sells now, at what announced reserve."""

    sellable_wh: int
    reserve_mc: int
    health: int


@dataclass(frozen=True)
class BidAnswered:
    """BidAccept (accepted) or BidReject (with its reason) to the bid in flight."""

    accepted: bool
    reason: int = 0


@dataclass(frozen=True)
class RoundStarted:
    """The driver let the next round begin (after NextRound)."""


@dataclass(frozen=True)
class TradeRecorded:
    """The trade asked for by RecordTrade is durable."""


@dataclass(frozen=True)
class RecordFailed:
    """The trade asked for by RecordTrade could not be written: nothing may be confirmed."""


@dataclass(frozen=True)
class ConfirmAnswered:
    """The battery answered copy `copy` of BidConfirm, `waited_ms` into the current wait."""

    copy: int
    accepted: bool
    reason: int = 0
    waited_ms: int = 0


@dataclass(frozen=True)
class TimedOut:
    """The request or wait in flight got no answer in time."""


@dataclass(frozen=True)
class Cancelled:
    """The auction must end now (device failure, shutdown); ignored while a recorded trade is
    being confirmed, which always runs to its end."""

    reason: int


Event = (
    QueryAnswered
    | BidAnswered
    | RoundStarted
    | TradeRecorded
    | RecordFailed
    | ConfirmAnswered
    | TimedOut
    | Cancelled
)


# ---- commands (what to do) -----------------------------------------------------------------


@dataclass(frozen=True)
class SendQuery:
    """Send Query for this auction; answer with QueryAnswered or TimedOut."""


@dataclass(frozen=True)
class RecordOffer:
    """The battery's offer differs from what the auction was opened with: store it."""

    lot_wh: int
    reserve_mc: int


@dataclass(frozen=True)
class SendBid:
    """Send Bid as `bidder_id`; answer with BidAnswered or TimedOut."""

    bidder_id: int
    price_mc: int
    energy_wh: int
    round: int


@dataclass(frozen=True)
class RecordBid:
    """Note what the battery made of a bid (bid history, event log)."""

    bidder_id: int
    price_mc: int
    energy_wh: int
    round: int
    outcome: BidOutcome
    reason: int | None = None


@dataclass(frozen=True)
class NextRound:
    """Bidding round over; start the next one (feed RoundStarted). `pause`: the site's pause
    between rounds applies (not before the first round)."""

    pause: bool


@dataclass(frozen=True)
class RecordTrade:
    """Write the trade durably BEFORE anything is confirmed; answer with TradeRecorded."""

    terms: TradeTerms


@dataclass(frozen=True)
class SendConfirm:
    """Send copy `copy` of BidConfirm, then wait `wait_ms` for an answer to any copy."""

    terms: TradeTerms
    copy: int
    wait_ms: int


@dataclass(frozen=True)
class AwaitConfirm:
    """Keep waiting `wait_ms` for answers to the copies already sent."""

    wait_ms: int


@dataclass(frozen=True)
class SendTerminate:
    """Tell the battery the auction is over (it releases any hold)."""

    reason: int


@dataclass(frozen=True)
class Close:
    """The auction is over: the last command of every session."""

    outcome: Outcome
    terms: TradeTerms | None = None  # the trade recorded (CLEARED, UNVERIFIED, VOID)
    reason: int | None = None  # the battery's refusal (VOID)


Command = (
    SendQuery
    | RecordOffer
    | SendBid
    | RecordBid
    | NextRound
    | RecordTrade
    | SendConfirm
    | AwaitConfirm
    | SendTerminate
    | Close
)
