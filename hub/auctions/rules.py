"""Auction mechanisms: the ascending (English) auction and the sealed-bid second-price auction.

Pure logic, no I/O. One `Auction` object per battery offer; the auction session
(hub/auctions/session.py) feeds it bids from aggregators and the battery's answers (BidAccept /
BidReject) and asks it who to put to the battery next. Units: prices in milli-cents per kWh,
energy in Wh, time in ms (all ints).

Just over 400 lines for a reason: both mechanisms share the floor, exclusion and energy rules
of the base class, and read best side by side.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from enum import StrEnum

from shared_etp import schema

__all__ = [
    "AscendingAuction",
    "Auction",
    "AuctionClosedError",
    "AuctionError",
    "BidRecord",
    "BidStatus",
    "InvalidBidError",
    "Mechanism",
    "Offer",
    "SecondPriceAuction",
    "min_increment_for",
    "new_auction",
]

# Rejections that tell every bidder the battery's price floor is above the rejected price.
FLOOR_REASONS = frozenset({schema.REASON_BELOW_RESERVE, schema.REASON_BELOW_MARKET})
# Rejections that exclude the bidder from the rest of this auction (not a price problem).
EXCLUDING_REASONS = frozenset({schema.REASON_LOW_REPUTATION})


class Mechanism(StrEnum):
    """Auction mechanism chosen per site."""

    ASCENDING = "ascending"
    SECOND_PRICE = "second_price"


class BidStatus(StrEnum):
    """Life cycle of one bid inside an auction."""

    SUBMITTED = "submitted"  # recorded, not yet put to the battery
    ACCEPTED = "accepted"  # the battery holds energy for it (it is or was the standing bid)
    REJECTED = "rejected"  # the battery answered BidReject
    SUPERSEDED = "superseded"  # never put to the battery: a better bid was accepted first
    WON = "won"  # the final, winning bid


class AuctionError(Exception):
    """Base class of auction rule violations."""


class AuctionClosedError(AuctionError):
    """A bid or outcome arrived for an auction that has already closed."""


class InvalidBidError(AuctionError):
    """A bid breaks the auction's rules (below the floor, too small a raise, bad energy...)."""


@dataclass(frozen=True)
class Offer:
    """What a battery put up for sale: `reserve_mc` is the reserve it announced (QueryResponse
    `sale`); the battery may privately apply a higher dynamic reserve."""

    device_id: int
    auction_id: int
    lot_wh: int
    reserve_mc: int
    opened_ms: int = 0

    def __post_init__(self) -> None:
        if self.lot_wh <= 0:
            raise ValueError(f"offer {self.auction_id}: lot_wh must be > 0, got {self.lot_wh}")
        if self.reserve_mc < 0:
            raise ValueError(
                f"offer {self.auction_id}: reserve_mc must be >= 0, got {self.reserve_mc}"
            )


@dataclass
class BidRecord:
    """One bid as the auction saw it. `seq` orders submissions (earlier wins ties)."""

    bidder_id: int
    price_mc: int
    energy_wh: int
    round: int
    seq: int = 0
    status: BidStatus = BidStatus.SUBMITTED
    reason: int | None = None  # the battery's REASON_* code when rejected


def min_increment_for(standing_mc: int, increment_bp: int = 100, floor_mc: int = 100) -> int:
    """Deterministic minimum raise over a standing price: `increment_bp` basis points of it,
    never less than `floor_mc`."""
    return max(standing_mc * increment_bp // 10_000, floor_mc)


def _rank_key(bid: BidRecord) -> tuple[int, int, int]:
    """Sort key, best first: higher price, then earlier submission, then lower bidder id."""
    return (-bid.price_mc, bid.seq, bid.bidder_id)


class Auction(ABC):
    """State shared by every mechanism: the offer, the bid history and the outcome."""

    mechanism: Mechanism

    def __init__(self, offer: Offer) -> None:
        self.offer = offer
        self.round = 1
        self.closed = False
        self.bids: list[BidRecord] = []
        self.standing: BidRecord | None = None  # best bid the battery accepted (holds)
        self.winner: BidRecord | None = None
        self.known_floor_mc = offer.reserve_mc  # public floor: reserve + what rejections taught
        self.available_wh = offer.lot_wh  # lot, lowered when the battery says it has less
        self.excluded: set[int] = set()
        self._seq = 0

    # -- common helpers -------------------------------------------------------------------
    @property
    def auction_id(self) -> int:
        """The auction id (same as the offer's)."""
        return self.offer.auction_id

    @property
    def clearing_price_mc(self) -> int | None:
        """Price the winner pays per kWh, None while open or when nothing sold."""
        return self.winner.price_mc if self.winner is not None else None

    @property
    def min_increment_mc(self) -> int:
        """Minimum raise over the current standing price (0 for sealed bids)."""
        return 0

    def min_acceptable_mc(self) -> int:
        """Lowest price a new bid may carry right now."""
        return self.known_floor_mc

    @abstractmethod
    def candidates(self) -> list[BidRecord]:
        """Bids to put to the battery next, best first (empty when there is nothing to send)."""

    @abstractmethod
    def bids_collected(self) -> None:
        """Every bidder has had its say this round (a sealed auction closes bidding here)."""

    @abstractmethod
    def end_round(self) -> bool:
        """The battery answered this round's candidates. True when the auction is over (then
        `.winner` is final); False when another round follows."""

    @abstractmethod
    def submit(self, bidder_id: int, price_mc: int, energy_wh: int) -> BidRecord:
        """Record a bid; raises InvalidBidError / AuctionClosedError when the rules say no."""

    @abstractmethod
    def battery_accepted(self, record: BidRecord) -> None:
        """The battery accepted (holds) the bid `record`."""

    @abstractmethod
    def battery_rejected(self, record: BidRecord, reason: int) -> None:
        """The battery rejected the bid `record` with a `schema.REASON_*` code."""

    def _check_open(self) -> None:
        if self.closed:
            raise AuctionClosedError(f"auction {self.auction_id} is closed; no more bids")

    def _check_energy(self, energy_wh: int) -> None:
        if energy_wh <= 0 or energy_wh > self.available_wh:
            raise InvalidBidError(
                f"auction {self.auction_id}: energy_wh must be in 1..{self.available_wh} "
                f"(the energy still available in the lot), got {energy_wh}"
            )

    def _record(self, bidder_id: int, price_mc: int, energy_wh: int) -> BidRecord:
        self._seq += 1
        bid = BidRecord(bidder_id, price_mc, energy_wh, self.round, seq=self._seq)
        self.bids.append(bid)
        return bid

    def _learn_from_rejection(self, record: BidRecord, reason: int) -> None:
        record.status = BidStatus.REJECTED
        record.reason = reason
        if reason in FLOOR_REASONS:
            # The battery's (possibly private) floor is above this price: public knowledge now.
            self.known_floor_mc = max(
                self.known_floor_mc, record.price_mc + min_increment_for(record.price_mc)
            )
        elif reason in EXCLUDING_REASONS:
            self.excluded.add(record.bidder_id)
        elif reason in (schema.REASON_INSUFFICIENT_ENERGY, schema.REASON_POWER_LIMIT):
            # The battery cannot deliver this much any more (energy, or the current of it on
            # top of its other sales: power_limit): public knowledge, like the floor.
            self.available_wh = min(self.available_wh, record.energy_wh - 1)

    def bidders(self) -> set[int]:
        """Every bidder that submitted at least one bid."""
        return {bid.bidder_id for bid in self.bids}


class AscendingAuction(Auction):
    """The paper's ascending auction: aggregators raise bids in rounds; each round the hub puts
    the best new bids to the battery; bidding stops when a round brings no new bid (after the
    opening rounds) or at `max_rounds`; the battery's standing (held) bid then wins."""

    mechanism = Mechanism.ASCENDING

    def __init__(
        self,
        offer: Offer,
        *,
        max_rounds: int = 100,
        opening_rounds: int = 3,
        increment_bp: int = 100,
        increment_floor_mc: int = 100,
    ) -> None:
        super().__init__(offer)
        if max_rounds < 1 or opening_rounds < 1:
            raise ValueError("max_rounds and opening_rounds must be >= 1")
        self.max_rounds = max_rounds
        self.opening_rounds = opening_rounds
        self.increment_bp = increment_bp
        self.increment_floor_mc = increment_floor_mc

    @property
    def min_increment_mc(self) -> int:
        """Minimum raise over the standing bid (over the reserve before any bid)."""
        base = self.standing.price_mc if self.standing else self.offer.reserve_mc
        return min_increment_for(base, self.increment_bp, self.increment_floor_mc)

    def min_acceptable_mc(self) -> int:
        """Lowest price a new bid may carry: the known floor, or standing + minimum raise."""
        if self.standing is None:
            return self.known_floor_mc
        return max(self.known_floor_mc, self.standing.price_mc + self.min_increment_mc)

    def bids_collected(self) -> None:
        """Nothing to do: an ascending round's bids go to the battery as they stand."""

    def round_bids(self) -> list[BidRecord]:
        """Bids submitted in the current round."""
        return [bid for bid in self.bids if bid.round == self.round]

    def submit(self, bidder_id: int, price_mc: int, energy_wh: int) -> BidRecord:
        """Record a bid for the current round (one per bidder per round).

        Raises InvalidBidError when it is below the floor / minimum raise, when the bidder
        already holds the standing bid or already bid this round, or when it was excluded."""
        self._check_open()
        self._check_energy(energy_wh)
        if bidder_id in self.excluded:
            raise InvalidBidError(
                f"auction {self.auction_id}: bidder {bidder_id} was excluded by the battery"
            )
        if self.standing is not None and self.standing.bidder_id == bidder_id:
            raise InvalidBidError(
                f"auction {self.auction_id}: bidder {bidder_id} already holds the standing bid"
            )
        if any(bid.bidder_id == bidder_id for bid in self.round_bids()):
            raise InvalidBidError(
                f"auction {self.auction_id}: bidder {bidder_id} already bid in round {self.round}"
            )
        minimum = self.min_acceptable_mc()
        if price_mc < minimum:
            raise InvalidBidError(
                f"auction {self.auction_id}: price {price_mc} mc/kWh is below the minimum "
                f"acceptable {minimum} mc/kWh (floor or standing + increment)"
            )
        return self._record(bidder_id, price_mc, energy_wh)

    def candidates(self) -> list[BidRecord]:
        """This round's bids not yet put to the battery and still above the standing bid."""
        if self.closed:
            return []
        floor = self.min_acceptable_mc()
        pending = [
            bid
            for bid in self.round_bids()
            if bid.status is BidStatus.SUBMITTED
            and bid.price_mc >= floor
            and bid.energy_wh <= self.available_wh
            and bid.bidder_id not in self.excluded
        ]
        return sorted(pending, key=_rank_key)

    def battery_accepted(self, record: BidRecord) -> None:
        """The battery holds energy for this bid: it becomes the standing bid."""
        self._check_open()
        record.status = BidStatus.ACCEPTED
        if self.standing is None or _rank_key(record) < _rank_key(self.standing):
            self.standing = record

    def battery_rejected(self, record: BidRecord, reason: int) -> None:
        """The battery refused this bid; price-floor reasons raise everyone's floor."""
        self._check_open()
        self._learn_from_rejection(record, reason)

    def end_round(self) -> bool:
        """Close the current round. True when bidding stopped (then `.winner` is final)."""
        self._check_open()
        this_round = self.round_bids()
        for bid in this_round:
            if bid.status is BidStatus.SUBMITTED:
                bid.status = BidStatus.SUPERSEDED
        idle = not this_round and (self.standing is not None or self.round >= self.opening_rounds)
        if idle or self.round >= self.max_rounds:
            self.closed = True
            self.winner = self.standing
            if self.winner is not None:
                self.winner.status = BidStatus.WON
            return True
        self.round += 1
        return False


class SecondPriceAuction(Auction):
    """Sealed-bid second-price (Vickrey) auction: one round, one bid per bidder; the highest bid
    wins and pays max(second-highest bid, floor). Ties: earlier submission, then lower id.

    After `close()`, `candidates()` gives the clearing bid (winner at the clearing price) to put
    to the battery; a price-floor rejection re-prices it against the learned floor."""

    mechanism = Mechanism.SECOND_PRICE

    def __init__(self, offer: Offer) -> None:
        super().__init__(offer)
        self.sealed_closed = False
        self.clearing_bid: BidRecord | None = None  # what to send the battery

    def submit(self, bidder_id: int, price_mc: int, energy_wh: int) -> BidRecord:
        """Record the bidder's single sealed bid (must be at or above the reserve)."""
        if self.sealed_closed:
            raise AuctionClosedError(f"auction {self.auction_id}: sealed bidding has closed")
        self._check_energy(energy_wh)
        if any(bid.bidder_id == bidder_id for bid in self.bids):
            raise InvalidBidError(
                f"auction {self.auction_id}: bidder {bidder_id} already submitted a sealed bid"
            )
        if price_mc < self.known_floor_mc:
            raise InvalidBidError(
                f"auction {self.auction_id}: price {price_mc} mc/kWh is below the reserve "
                f"{self.known_floor_mc} mc/kWh"
            )
        return self._record(bidder_id, price_mc, energy_wh)

    def _price(self) -> tuple[BidRecord | None, int | None]:
        valid = sorted(
            (
                bid
                for bid in self.bids
                if bid.price_mc >= self.known_floor_mc and bid.bidder_id not in self.excluded
            ),
            key=_rank_key,
        )
        if not valid:
            return None, None
        top = valid[0]
        second = valid[1].price_mc if len(valid) > 1 else 0
        return top, max(second, self.known_floor_mc)

    def close(self) -> tuple[BidRecord | None, int]:
        """End sealed bidding: (winning sealed bid or None, clearing price mc/kWh; 0 if none)."""
        self.sealed_closed = True
        top, price = self._price()
        self._set_clearing(top, price)
        return top, (price or 0)

    def _set_clearing(self, top: BidRecord | None, price: int | None) -> None:
        if top is None or price is None:
            self.clearing_bid = None
            self.closed = True
            self.winner = None
            return
        self.clearing_bid = BidRecord(top.bidder_id, price, top.energy_wh, self.round, seq=top.seq)

    @property
    def min_increment_mc(self) -> int:
        """Sealed bids have no increment."""
        return 0

    def bids_collected(self) -> None:
        """Sealed bidding closes after its single round: the clearing bid is priced."""
        self.close()

    def end_round(self) -> bool:
        """A sealed auction is one round: over once the battery answered the clearing bid."""
        self.closed = True
        return True

    def candidates(self) -> list[BidRecord]:
        """After close: the clearing bid, if the battery has not answered it yet."""
        if not self.sealed_closed or self.closed or self.clearing_bid is None:
            return []
        if self.clearing_bid.status is not BidStatus.SUBMITTED:
            return []
        return [self.clearing_bid]

    def battery_accepted(self, record: BidRecord) -> None:
        """The battery accepted the clearing bid: the auction is won at the clearing price."""
        self._check_open()
        record.status = BidStatus.WON
        self.standing = record
        self.winner = record
        self.closed = True
        for bid in self.bids:
            if bid.seq == record.seq and bid.bidder_id == record.bidder_id:
                bid.status = BidStatus.WON

    def battery_rejected(self, record: BidRecord, reason: int) -> None:
        """The battery refused the clearing bid. A price-floor reason raises the floor and
        re-prices (the winner may still clear at the higher floor); any other reason excludes
        that bidder and prices the next-best bid. Each call moves the auction forward."""
        self._check_open()
        self._learn_from_rejection(record, reason)
        if reason not in FLOOR_REASONS:
            # Not a price problem (reputation, energy, timeout...): this bidder cannot win this
            # sealed auction; the next-best bid is priced instead (always terminates).
            self.excluded.add(record.bidder_id)
        for bid in self.bids:
            if bid.bidder_id in self.excluded:
                bid.status = BidStatus.REJECTED
        top, price = self._price()
        self._set_clearing(top, price)


def new_auction(mechanism: Mechanism | str, offer: Offer, **rules: int) -> Auction:
    """Build the auction for `offer` with the site's mechanism and optional rule overrides
    (ascending: max_rounds, opening_rounds, increment_bp, increment_floor_mc)."""
    mech = Mechanism(mechanism)
    if mech is Mechanism.ASCENDING:
        return AscendingAuction(offer, **rules)
    if rules:
        raise ValueError(f"second-price auctions take no rules, got {sorted(rules)}")
    return SecondPriceAuction(offer)
