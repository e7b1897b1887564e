"""Energy holds: energy promised in a BidAccept, held per auction until confirmed or released.

At most one hold per auction (the best bid); the sum of all holds across auctions is what the
node must never promise twice. A hold is released by BidConfirm (commit), a better bid in the
same auction, Terminate, a fault, or its timeout. Recently released holds are remembered
(bounded) so a late BidConfirm is answered hold_expired rather than not_holder, and a repeated
BidConfirm of a committed trade is answered BidAccept again (core.py).
"""

from shared_etp.compat import const

# Recent releases kept: auctions run one after another, so a late or repeated BidConfirm
# names one of the last few. Each entry costs ~90 bytes of heap: 16, not 64, saves ~4 KB.
_RECENT_MAX = const(16)

# Indices into a hold list: [bidder, price_mc, energy_wh, expires_ms, msg_id]
_BIDDER = const(0)
_PRICE = const(1)
_ENERGY = const(2)
_EXPIRES = const(3)
_MSG_ID = const(4)


class Ledger:
    """Holds by auction id; totals across auctions; expiry; memory of recent releases.

    `holds` (auction -> hold) and `recent` (auction -> (bidder, why released)) are read
    directly: no accessor methods, each would cost heap on a board.
    """

    def __init__(self):
        self.holds = {}  # auction id -> [bidder, price_mc, energy_wh, expires_ms, msg_id]
        self.recent = {}  # auction id -> (bidder, why released)
        self._recent_order = []

    def held_wh(self, exclude_auction=None):
        """Energy held across all auctions (optionally leaving one auction out), Wh."""
        total = 0
        for auction, hold in self.holds.items():
            if auction != exclude_auction:
                total += hold[_ENERGY]
        return total

    def put(self, auction, bidder, price_mc, energy_wh, expires_ms, msg_id):
        """Hold energy for bidder in auction; returns the hold it replaced (or None)."""
        previous = self.holds.get(auction)
        self.holds[auction] = [bidder, price_mc, energy_wh, expires_ms, msg_id]
        if previous is not None:
            self._remember(auction, previous[_BIDDER], "outbid")
        return previous

    def release(self, auction, why):
        """Remove and return the hold in auction (None if there is none)."""
        hold = self.holds.pop(auction, None)
        if hold is not None:
            self._remember(auction, hold[_BIDDER], why)
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
            if now_ms >= hold[_EXPIRES]:
                out.append((auction, self.release(auction, "expired")))
        return out

    def _remember(self, auction, bidder, why):
        if auction not in self.recent:
            self._recent_order.append(auction)
            if len(self._recent_order) > _RECENT_MAX:
                self.recent.pop(self._recent_order.pop(0), None)
        self.recent[auction] = (bidder, why)
