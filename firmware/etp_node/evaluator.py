"""Bid evaluation: static and dynamic reserve, bidder reputation, market conditions.

Pure logic, no I/O: the core feeds it the market notices, the local trade history and the
energy figures, and asks for a verdict (a schema.REASON_* code, _REASON_NONE to accept).
The rules, in the order they are checked, are documented in firmware/README.md.
"""

from shared_etp.compat import const

# protocol constants (shared_etp.schema), private so they cost no heap
_REASON_AUCTION_CLOSED = const(5)
_REASON_BELOW_MARKET = const(9)
_REASON_BELOW_RESERVE = const(1)
_REASON_DEVICE_FAULT = const(8)
_REASON_INSUFFICIENT_ENERGY = const(2)
_REASON_LOW_REPUTATION = const(3)
_REASON_NONE = const(0)
_REASON_OUTBID = const(4)
_REASON_POWER_LIMIT = const(15)
_NOTICE_REPUTATION = const(1)  # shared_etp.frame.NOTICE_* (the kinds of hub notice)
_NOTICE_CLEARING = const(2)

_PRICES_KEPT = const(16)
_BIDDERS_KEPT = const(16)  # local histories kept (a site has few aggregators): bounded heap
NEUTRAL_REPUTATION = const(5000)


class Evaluator:
    """Decides on bids; remembers reputation, clearing prices, history and closed auctions."""

    def __init__(self, config):
        self.reserve_mc = config["reserve_mc"]
        self.dynamic = bool(config["dynamic_reserve"])
        self.scarcity_gain_pct = config.get("scarcity_gain_pct", 50)
        self.market_weight_pct = config.get("market_weight_pct", 50)
        self.min_reputation = config["min_reputation"]
        self.hub_reputation = {}  # bidder -> score from the hub's notice (1/100 %)
        self.hub_prices = []  # recent clearing prices from the hub's notice, mc/kWh
        self.local_prices = []  # prices of this node's own trades
        self.history = {}  # bidder -> [confirmed, abandoned]
        self.closed = []  # auctions ended by Terminate (bounded: core._on_terminate)

    # --- inputs -------------------------------------------------------------------------
    def set_notice(self, kind, data):
        """Adopt a hub notice: reputation ({bidder id: score}, 1/100 %) or clearing prices (a
        list of mc/kWh, newest last); entries that are not integers are ignored."""
        if kind == _NOTICE_REPUTATION:
            table = {}
            if isinstance(data, dict):
                for bidder, score in data.items():
                    if type(bidder) is int and type(score) is int:
                        table[bidder] = max(0, min(10000, score))
            self.hub_reputation = table
        elif kind == _NOTICE_CLEARING:
            prices = []
            if isinstance(data, (list, tuple)):
                for price in data:
                    if type(price) is int and price >= 0:
                        prices.append(price)
            self.hub_prices = prices[-_PRICES_KEPT:]

    def record(self, bidder, price_mc=None):
        """A confirmed trade at price_mc raises the bidder's local score and adds a local
        clearing price; with no price, a hold the bidder let expire lowers its score."""
        entry = self.history.get(bidder)
        if entry is None:
            if len(self.history) >= _BIDDERS_KEPT:
                self.history.pop(next(iter(self.history)))
            entry = [0, 0]  # [confirmed, abandoned]
            self.history[bidder] = entry
        if price_mc is None:
            entry[1] += 1
            return
        entry[0] += 1
        if len(self.local_prices) >= _PRICES_KEPT:  # room first: the list never outgrows 16
            self.local_prices.pop(0)
        self.local_prices.append(price_mc)

    # --- derived figures ----------------------------------------------------------------
    def dynamic_reserve(self, sellable_wh, max_sellable_wh, energy_wh):
        """The reserve in force for a bid of energy_wh given the sellable energy.

        Static reserve, moved market_weight_pct of the way up toward the median recent
        clearing price (never down), plus a scarcity premium of up to scarcity_gain_pct that
        grows as this bid would take the last of the sellable energy.
        """
        reserve = self.reserve_mc
        if not self.dynamic:
            return reserve
        # The market price: the median recent clearing price (the hub's notice, else this
        # node's own trades; the lower middle for even counts). Inline, as the bidder's
        # score in evaluate(): each function is ~130 bytes of a board's heap.
        prices = self.hub_prices or self.local_prices
        if prices:
            ordered = sorted(prices)
            market = ordered[(len(ordered) - 1) // 2]
            if market > reserve:
                reserve += (market - reserve) * self.market_weight_pct // 100
        if max_sellable_wh > 0:
            left = max(0, sellable_wh - energy_wh)
            used_share = 10000 - min(10000, left * 10000 // max_sellable_wh)  # 1/100 %
            reserve += reserve * self.scarcity_gain_pct * used_share // 1000000
        return reserve

    # --- the verdict --------------------------------------------------------------------
    def evaluate(self, bidder, auction, price_mc, energy_wh, sellable_wh, max_sellable_wh,
                 held, faulted, core=None):
        """_REASON_NONE to accept the bid, else the REASON_* code of the first rule it breaks.

        sellable_wh excludes every hold except the one in this auction when the bidder is
        replacing its own; held is the hold in this auction (or None). With the node (its
        battery layer and ledger), the lot must also fit the pack's power (power_cap_wh:
        power_limit).
        """
        if faulted:
            return _REASON_DEVICE_FAULT
        if auction in self.closed:
            return _REASON_AUCTION_CLOSED
        # The bidder's score (1/100 %): the hub's notice if it names the bidder, else local
        # history, (confirmed + 1) / (confirmed + abandoned + 2): a new bidder starts at 50 %,
        # each abandoned hold pulls it down, each confirmed trade pulls it up.
        score = self.hub_reputation.get(bidder)
        if score is None:
            entry = self.history.get(bidder)
            score = NEUTRAL_REPUTATION if entry is None else (
                (entry[0] + 1) * 10000 // (entry[0] + entry[1] + 2))
        if score < self.min_reputation:
            return _REASON_LOW_REPUTATION
        if price_mc < self.reserve_mc:
            return _REASON_BELOW_RESERVE
        if price_mc < self.dynamic_reserve(sellable_wh, max_sellable_wh, energy_wh):
            return _REASON_BELOW_MARKET
        if held is not None and held[1] >= price_mc:
            return _REASON_OUTBID
        if energy_wh <= 0 or energy_wh > sellable_wh:
            return _REASON_INSUFFICIENT_ENERGY
        if core is not None and self.power_cap_wh(core, auction, energy_wh) < energy_wh:
            return _REASON_POWER_LIMIT
        return _REASON_NONE

    def power_cap_wh(self, core, auction, energy_wh):
        """energy_wh if a lot of it fits the pack's power, else a smaller lot that does (0:
        none), for the node `core` (its battery layer, ledger and delivery_s). Every lot sold
        may be discharging at once (those being delivered: battery.dis_w; those held in other
        auctions than `auction`: they may all be confirmed), each over delivery_s, so their
        current and the lot's, at the state of charge left once all of them are taken, must
        keep the terminal voltage (open-circuit voltage less I x R: battery.cell_mv, 0 past
        the pack's current limit) at or above the cut-off."""
        battery = core.battery
        ledger = core.ledger
        delivery_s = max(1, core.delivery_s)  # as battery.deliver
        held_wh = ledger.held_wh(auction)
        held_w = ledger.held_wh(auction, delivery_s)
        lot = energy_wh
        # Fewer Wh sag less: an eighth less at a time (QueryResponse's offer is within 1/8 of
        # the largest lot that fits; a bid is checked at its own energy, exactly).
        while lot > 0 and battery.cell_mv(held_wh + lot,
                                          held_w + lot * 3600 // delivery_s) < battery.min_cell_mv:
            lot -= lot // 8 + 1
        return lot if lot > 0 else 0
