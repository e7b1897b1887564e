"""Energy holds: energy promised in a BidAccept, held per auction until confirmed or released.

At most one hold per auction (the best bid); the sum of all holds across auctions is what the
node must never promise twice. A hold is released by BidConfirm (commit), a better bid in the
same auction, Terminate, a fault, or its timeout (the core does those releases). Recently
released holds are remembered (bounded) so a late BidConfirm is answered hold_expired rather
than not_holder, and a repeated BidConfirm of a committed trade is answered BidAccept again
(core.py).
"""

from shared_etp.compat import const

# Recent releases kept: auctions run one after another, so a late or repeated BidConfirm
# (the hub re-sends its unanswered confirms after a restart) names one of the last few.
_RECENT_MAX = const(8)

# Indices into a hold list: [bidder, price_mc, energy_wh, expires_ms, msg_id]
_BIDDER = const(0)
_PRICE = const(1)
_ENERGY = const(2)
_EXPIRES = const(3)


class Ledger:
    """Holds by auction id; totals across auctions; expiry; memory of recent releases.

    `holds` (auction -> hold) and `recent` are read directly: no accessor methods, each would
    cost heap on a board. `recent` is a ring of _RECENT_MAX releases, each a tuple (auction,
    bidder, why released, price_mc, energy_wh) (find() gives an auction's), made at boot: a
    release replaces one small tuple, so trading grows nothing (a growing dict, or a table
    that needs one large block, would sit between each frame's garbage on a small heap).
    """

    def __init__(self):
        self.holds = {}  # auction id -> [bidder, price_mc, energy_wh, expires_ms, msg_id]
        self.recent = [None] * _RECENT_MAX
        self._recent_next = 0  # index of the entry replaced next (the oldest)

    def held_wh(self, exclude_auction=None, delivery_s=0):
        """Energy held across all auctions (optionally leaving one auction out), Wh; with
        delivery_s, the power (W) those holds add once confirmed: each is discharged over
        delivery_s from its confirm on, all of them at once in the worst case (a sale's
        current is what its delivery overlaps with: evaluator.py)."""
        total = 0
        for auction, hold in self.holds.items():
            if auction != exclude_auction:
                energy = hold[_ENERGY]
                # per lot as the battery adds it (battery.deliver): the same rounding
                total += energy * 3600 // delivery_s if delivery_s else energy
        return total

    def find(self, auction):
        """The auction's last release, (auction, bidder, why, price_mc, energy_wh), or None."""
        for entry in self.recent:
            if entry is not None and entry[0] == auction:
                return entry
        return None

    def put(self, auction, bidder, price_mc, energy_wh, expires_ms, msg_id):
        """Hold energy for bidder in auction; returns the hold it replaced (or None)."""
        previous = self.release(auction, "outbid")
        self.holds[auction] = [bidder, price_mc, energy_wh, expires_ms, msg_id]
        return previous

    def release(self, auction, why):
        """Remove and return the hold in auction (None if there is none), remembering why."""
        hold = self.holds.pop(auction, None)
        if hold is not None:
            entry = self.find(auction)
            if entry is None:  # in the oldest entry's place
                index = self._recent_next
                self._recent_next = (index + 1) % _RECENT_MAX
            else:
                index = self.recent.index(entry)
            self.recent[index] = (auction, hold[_BIDDER], why, hold[_PRICE], hold[_ENERGY])
        return hold
