"""Property test of the node core (on CPython): whatever bidders do, energy is never oversold.

Random interleavings of bids, confirms (right and wrong), terminates, time passing and faults
from several bidders on several auctions; after every step the holds fit in the energy for sale,
the pack never goes below the owner's floor, and what was sold is exactly what the battery lost.
"""

from __future__ import annotations

from hypothesis import event, given, settings
from hypothesis import strategies as st

from firmware.etp_node.battery import SimBattery
from firmware.etp_node.core import NodeCore
from shared_etp import schema as S
from shared_etp.frame import Keyring, Sender, decode_frame, derive_key

MASTER = b"property-test-master-secret"
DEV = 3
KEY = derive_key(MASTER, DEV)


class Clock:
    """Settable ms clock."""

    def __init__(self) -> None:
        self.now = 1_795_000_000_000

    def __call__(self) -> int:
        return self.now


ops = st.lists(
    st.one_of(
        st.tuples(st.just("bid"), st.integers(0, 4), st.integers(1, 3),
                  st.integers(19000, 40000), st.integers(0, 1500)),
        st.tuples(st.just("confirm"), st.integers(0, 99), st.booleans()),
        st.tuples(st.just("terminate"), st.integers(0, 4), st.integers(0, 3)),
        st.tuples(st.just("wait"), st.integers(0, 4000)),
        st.tuples(st.just("fault"), st.sampled_from(["undervolt", "clear"])),
    ),
    min_size=20,
    max_size=80,
)


@settings(max_examples=500, deadline=None)
@given(ops=ops, pct=st.integers(3000, 10000), floor=st.integers(0, 1000),
       dynamic=st.booleans())
def test_never_oversells(ops: list[tuple], pct: int, floor: int, dynamic: bool) -> None:
    """Holds always fit the energy for sale; sales match the battery's loss; floor is kept."""
    clock = Clock()
    battery = SimBattery(capacity_wh=10000, soc=10000)
    core = NodeCore({"device_id": DEV, "site": "p", "key": KEY, "notice_key": derive_key(MASTER, 0),
                     "reserve_mc": 20000, "pct_for_sale": pct, "floor_wh": floor,
                     "dynamic_reserve": dynamic, "hold_timeout_ms": 3000, "min_reputation": 0,
                     "epoch": 7}, battery, None, clock)
    senders = [Sender(1001 + i, DEV, KEY, 1, clock=clock) for i in range(5)]
    senders[0] = Sender(0, DEV, KEY, 1, clock=clock)  # the hub may terminate too
    keys = Keyring()
    keys.add(DEV, KEY)
    accepted: dict[tuple[int, int], tuple[int, int]] = {}  # (who, auc) -> (price, ereq)
    committed: set[tuple[int, int]] = set()  # (who, auc) whose confirm committed a trade
    sold = 0
    for op in ops:
        if op[0] == "bid":
            _, who, auc, price, ereq = op
            frame, _ = senders[who].frame(S.BID, dst=DEV, auc=auc, price=price, ereq=ereq)
            (_, reply_frame), = core.handle(core.topic_req, frame)
            reply = decode_frame(reply_frame, keys)
            if reply["t"] == S.BID_ACCEPT:
                accepted[(who, auc)] = (price, ereq)
                committed.discard((who, auc))  # a new hold: its confirm commits afresh
        elif op[0] == "confirm":
            _, pick, honest = op
            if not accepted:
                continue
            (who, auc), (price, ereq) = sorted(accepted.items())[pick % len(accepted)]
            if not honest:
                ereq += 1  # a confirm that does not match the hold
            frame, _ = senders[who].frame(S.BID_CONFIRM, dst=DEV, auc=auc, price=price, ereq=ereq)
            before = battery.remaining_wh()
            (_, reply_frame), = core.handle(core.topic_req, frame)
            reply = decode_frame(reply_frame, keys)
            if reply["t"] == S.BID_ACCEPT and (who, auc) in committed:
                # a repeat of a committed confirm is answered again, with no second delivery
                assert honest and reply["ereq"] == ereq
                assert battery.remaining_wh() == before
            elif reply["t"] == S.BID_ACCEPT:
                assert honest and reply["ereq"] == ereq
                assert battery.remaining_wh() == before - ereq
                sold += ereq
                committed.add((who, auc))
                assert battery.remaining_wh() * pct // 10000 >= floor  # the owner's floor
            else:
                assert battery.remaining_wh() == before
        elif op[0] == "terminate":
            _, who, auc = op
            fields = {"auc": auc} if auc else {}
            frame, _ = senders[who].frame(S.TERMINATE, dst=DEV, term=1, **fields)
            before = battery.remaining_wh()
            replies = core.handle(core.topic_req, frame)
            assert battery.remaining_wh() == before  # asking commits nothing
            if not auc:
                assert replies == []  # releases every hold, answers nothing
            else:
                # Answered: "committed to you" exactly when this bidder's confirm committed
                # a trade in the auction (with no audit trail, a trade the ring of recent
                # releases forgot can only be answered unknown_auction).
                (_, reply_frame), = replies
                reply = decode_frame(reply_frame, keys)
                assert reply["auc"] == auc and reply["dst"] == senders[who].src
                if reply["t"] == S.BID_ACCEPT:
                    assert (who, auc) in committed
                    assert (reply["price"], reply["ereq"]) == accepted[(who, auc)]
                elif (who, auc) in committed:
                    assert reply["reason"] == S.REASON_UNKNOWN_AUCTION
                assert not any(a == auc for a in core.ledger.holds)  # its hold is released
        elif op[0] == "wait":
            clock.now += op[1]
            core.tick()
        else:
            battery.inject_fault(op[1])
            core.tick()
        assert core.ledger.held_wh() <= core.max_sellable_wh()
        assert battery.remaining_wh() == 10000 - sold >= 0
        assert core.stats["sold_wh"] == sold
    assert sum(core.stats["protocol_errors"].values()) == 0
    event(f"trades: {min(core.stats['trades'], 3)}+")
    event(f"expired: {min(core.stats['expired'], 1)}+")
