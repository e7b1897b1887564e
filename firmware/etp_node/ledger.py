"""Energy holds: energy promised in a BidAccept, held per auction until confirmed or released.

At most one hold per auction (the best bid); the sum of all holds across auctions is what the
node must never promise twice. A hold is released by BidConfirm (commit), a better bid in the
same auction, Terminate, a fault, or its timeout. Recently released holds are remembered
(bounded) so a late BidConfirm is answered hold_expired rather than not_holder.
"""

from shared_etp.compat import const

_RECENT_MAX = const(64)

# Indices into a hold list: [bidder, price_mc, energy_wh, expires_ms, msg_id]
BIDDER = const(0)
PRICE = const(1)
ENERGY = const(2)
EXPIRES = const(3)
MSG_ID = const(4)


class Ledger:
    """Holds by auction id; totals across auctions; expiry; memory of recent releases."""

    def __init__(self):
        self.holds = {}  # auction id -> [bidder, price_mc, energy_wh, expires_ms, msg_id]
        self._recent = {}  # auction id -> (bidder, why released)
        self._recent_order = []

    def held_wh(self, exclude_auction=None):
        """Energy held across all auctions (optionally leaving one auction out), Wh."""
        total = 0
        for auction, hold in self.holds.items():
            if auction != exclude_auction:
                total += hold[ENERGY]
        return total

    def get(self, auction):
        """The hold in an auction, or None."""
        return self.holds.get(auction)

    def put(self, auction, bidder, price_mc, energy_wh, expires_ms, msg_id):
        """Hold energy for bidder in auction; returns the hold it replaced (or None)."""
        previous = self.holds.get(auction)
        self.holds[auction] = [bidder, price_mc, energy_wh, expires_ms, msg_id]
        if previous is not None:
            self._remember(auction, previous[BIDDER], "outbid")
        return previous

    def release(self, auction, why):
        """Remove and return the hold in auction (None if there is none)."""
        hold = self.holds.pop(auction, None)
        if hold is not None:
            self._remember(auction, hold[BIDDER], why)
        return hold

    def release_all(self, why):
        """Release every hold; returns [(auction, hold)]."""
        out = []
        for auction in list(self.holds):
            out.append((auction, self.release(auction, why)))
        return out

    def expire(self, now_ms):
        """Release holds whose timeout passed; returns [(auction, hold)]."""
        out = []
        for auction, hold in list(self.holds.items()):
            if now_ms >= hold[EXPIRES]:
                out.append((auction, self.release(auction, "expired")))
        return out

    def released(self, auction):
        """(bidder, why) of the last hold released in auction, if remembered."""
        return self._recent.get(auction)

    def _remember(self, auction, bidder, why):
        if auction not in self._recent:
            self._recent_order.append(auction)
            if len(self._recent_order) > _RECENT_MAX:
                self._recent.pop(self._recent_order.pop(0), None)
        self._recent[auction] = (bidder, why)

    def __len__(self):
        return len(self.holds)
