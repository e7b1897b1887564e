"""Never sell what the pack cannot deliver (issue #15): the node core on CPython.

Lots sold at once are discharged together; the IR drop of their current must not take the
cells below their cut-off. Property: for random packs, lots, delivery times and timings, no
set of accepted sales (every hold confirmed, at any moment) makes the simulator's pack report
voltage_out_of_range; bids that would are refused with power_limit. The board layer
(AdcBattery) is held to the same rule through the same evaluator, with its configured cell
resistance and current limit.
"""

from __future__ import annotations

import copy
import sys
import types
from collections.abc import Iterator

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from firmware.etp_node.battery import SimBattery
from firmware.etp_node.core import NodeCore
from shared_etp import schema as S
from shared_etp.frame import Keyring, Sender, decode_frame, derive_key

MASTER = b"power-test-master-secret"
DEV = 4
KEY = derive_key(MASTER, DEV)
START_MS = 1_795_000_000_000


class Clock:
    """Settable ms clock."""

    def __init__(self) -> None:
        self.now = START_MS

    def __call__(self) -> int:
        return self.now


def make_core(battery: SimBattery, clock: Clock, delivery_s: int, **config: object) -> NodeCore:
    values = {
        "device_id": DEV,
        "site": "p",
        "key": KEY,
        "reserve_mc": 20000,
        "pct_for_sale": 10000,
        "floor_wh": 0,
        "dynamic_reserve": False,
        "hold_timeout_ms": 3000,
        "min_reputation": 0,
        "epoch": 7,
        "delivery_s": delivery_s,
    }
    values.update(config)
    return NodeCore(values, battery, None, clock)


def ask(core: NodeCore, sender: Sender, msg_type: int, **fields: int) -> dict:
    frame, _ = sender.frame(msg_type, dst=DEV, **fields)
    ((_, reply_frame),) = core.handle(core.topic_req, frame)
    keys = Keyring()
    keys.add(DEV, KEY)
    return decode_frame(reply_frame, keys)


def all_holds_confirmed_fault(core: NodeCore, battery: SimBattery) -> int:
    """The fault the pack would report if every live hold were confirmed now."""
    future = copy.deepcopy(battery)
    for hold in core.ledger.holds.values():
        future.deliver(hold[2], core.delivery_s)
    return future.fault()


ops = st.lists(
    st.one_of(
        st.tuples(st.just("bid"), st.integers(0, 3), st.integers(1, 6), st.integers(1, 6000)),
        st.tuples(st.just("confirm"), st.integers(0, 99)),
        st.tuples(st.just("wait"), st.integers(0, 120_000)),
    ),
    min_size=10,
    max_size=60,
)


@settings(max_examples=400, deadline=None)
@given(
    ops=ops,
    capacity=st.integers(500, 30000),
    soc=st.integers(300, 10000),
    cells=st.integers(4, 24),
    min_cell_mv=st.integers(2500, 3600),
    delivery_s=st.integers(1, 3600),
    charge_w=st.sampled_from([0, 0, 500, 5000]),
)
def test_no_accepted_sale_leads_to_a_voltage_fault(
    ops: list[tuple],
    capacity: int,
    soc: int,
    cells: int,
    min_cell_mv: int,
    delivery_s: int,
    charge_w: int,
) -> None:
    clock = Clock()
    battery = SimBattery(
        capacity_wh=capacity,
        soc=soc,
        cells_series=cells,
        min_cell_mv=min_cell_mv,
        charge_w=charge_w,
    )
    core = make_core(battery, clock, delivery_s)
    battery.step(clock.now)
    core.tick()
    started_faulted = battery.fault() != 0  # a pack already below its cut-off at rest
    bidders = [Sender(100001 + i, DEV, KEY, 1, clock=clock) for i in range(4)]
    accepted: dict[tuple[int, int], tuple[int, int]] = {}
    power_refused = 0
    for step, op in enumerate(ops):
        if op[0] == "bid":
            _, who, auc, energy = op
            auc += 10 * step  # mostly new auctions: sales pile up as in a fast cadence
            reply = ask(core, bidders[who], S.BID, auc=auc, price=30000, ereq=energy)
            if reply["t"] == S.BID_ACCEPT:
                accepted[(who, auc)] = (30000, energy)
            elif reply["reason"] == S.REASON_POWER_LIMIT:
                power_refused += 1
        elif op[0] == "confirm":
            if not accepted:
                continue
            (who, auc), (price, energy) = sorted(accepted.items())[op[1] % len(accepted)]
            ask(core, bidders[who], S.BID_CONFIRM, auc=auc, price=price, ereq=energy)
        else:
            clock.now += op[1]
            core.tick()
        if not started_faulted:
            # Whatever was sold, and whatever is held (were all of it confirmed now), the
            # pack stays inside its voltage limits.
            assert battery.fault() == 0, (battery.cell_mv(), battery.dis_w)
            assert all_holds_confirmed_fault(core, battery) == 0
            assert core.stats["faults"] == 0
    event(f"power_limit refusals: {min(power_refused, 3)}+")
    event(f"trades: {min(core.stats['trades'], 5)}+")


def test_a_lot_whose_current_would_take_the_pack_below_cutoff_is_refused() -> None:
    """10 kWh, 14s pack at 90 %: lots delivered over 600 s (6 kW per kWh) pile up until the
    next one would sag the cells below 2.8 V; it is refused power_limit, a smaller one fits,
    and once the deliveries end the pack sells again."""
    clock = Clock()
    battery = SimBattery(capacity_wh=10000, soc=9000)
    core = make_core(battery, clock, 600)
    bidder = Sender(100001, DEV, KEY, 1, clock=clock)
    answers = []
    for auc in range(1, 30):
        reply = ask(core, bidder, S.BID, auc=auc, price=30000, ereq=500)
        answers.append(reply.get("reason", 0))
        if reply["t"] == S.BID_ACCEPT:
            confirm = ask(core, bidder, S.BID_CONFIRM, auc=auc, price=30000, ereq=500)
            assert confirm["t"] == S.BID_ACCEPT
        clock.now += 200
        core.tick()
        assert battery.fault() == 0
    assert S.REASON_POWER_LIMIT in answers
    sold = core.stats["trades"]
    assert 0 < sold < 29 and core.stats["sold_wh"] < battery.capacity_wh
    # the refused lot would have sagged the cells below the cut-off
    assert battery.cell_mv(500, 500 * 3600 // 600) < battery.min_cell_mv <= battery.cell_mv()
    # the largest lot the model says still fits is sold
    fits = [e for e in range(1, 500) if battery.cell_mv(e, e * 6) >= battery.min_cell_mv]
    assert fits
    small = ask(core, bidder, S.BID, auc=100, price=30000, ereq=fits[-1])
    assert small["t"] == S.BID_ACCEPT
    assert ask(core, bidder, S.BID, auc=101, price=30000, ereq=fits[-1] + 1)["reason"] == (
        S.REASON_POWER_LIMIT
    )
    assert ask(core, bidder, S.BID_CONFIRM, auc=100, price=30000, ereq=fits[-1])["t"] == (
        S.BID_ACCEPT
    )
    assert battery.fault() == 0
    clock.now += 601_000  # every delivery over: no current, the voltage recovers
    core.tick()
    again = ask(core, bidder, S.BID, auc=102, price=30000, ereq=500)
    assert again["t"] == S.BID_ACCEPT


def test_holds_count_as_current_before_they_are_confirmed() -> None:
    """Accepted bids not yet confirmed may all be confirmed: the next lot is refused on their
    current, and accepted again when they expire unconfirmed."""
    clock = Clock()
    battery = SimBattery(capacity_wh=10000, soc=9000)
    core = make_core(battery, clock, 600)
    bidder = Sender(100001, DEV, KEY, 1, clock=clock)
    reasons = [
        ask(core, bidder, S.BID, auc=a, price=30000, ereq=500).get("reason", 0)
        for a in range(1, 30)
    ]
    assert S.REASON_POWER_LIMIT in reasons and core.stats["trades"] == 0
    assert all_holds_confirmed_fault(core, battery) == 0
    clock.now += 3001  # the holds expire
    core.tick()
    assert ask(core, bidder, S.BID, auc=50, price=30000, ereq=500)["t"] == S.BID_ACCEPT


class FakeAdcPins:
    """Named test double of the board's ADC pins (machine.ADC/Pin): a settable pack voltage."""

    volt_counts = 0

    class Pin:
        def __init__(self, number: int) -> None:
            self.number = number

    class ADC:
        def __init__(self, pin: object) -> None:
            self.pin = pin

        def read_u16(self) -> int:
            return FakeAdcPins.volt_counts


@pytest.fixture
def adc_pins() -> Iterator[type[FakeAdcPins]]:
    module = types.ModuleType("machine")
    module.ADC = FakeAdcPins.ADC  # type: ignore[attr-defined]
    module.Pin = FakeAdcPins.Pin  # type: ignore[attr-defined]
    saved = sys.modules.get("machine")
    sys.modules["machine"] = module
    try:
        yield FakeAdcPins
    finally:
        if saved is None:
            del sys.modules["machine"]
        else:
            sys.modules["machine"] = saved


def test_board_layer_refuses_by_its_configured_resistance_and_current_limit(
    adc_pins: type[FakeAdcPins],
) -> None:
    """AdcBattery: the same rule, from its configured cell resistance and max current."""
    from firmware.etp_node.battery_adc import AdcBattery

    adc_pins.volt_counts = 14 * 3950  # 1 mV per count: 14 cells at 3.95 V (about 80 %)
    clock = Clock()

    def board(resistance_uohm: int, max_a: int) -> NodeCore:
        pack = AdcBattery(10000, 14, {"volt": 26}, {"volt": 1}, 2800, 4250, resistance_uohm, max_a)
        return make_core(pack, clock, 900)

    bidder = Sender(100001, DEV, KEY, 1, clock=clock)
    # 2 kWh over 900 s = 8 kW = 156 A at 51 V: over a 100 A limit, within a 200 A one
    limited = board(2000, 100)
    assert ask(limited, bidder, S.BID, auc=1, price=30000, ereq=2000)["reason"] == (
        S.REASON_POWER_LIMIT
    )
    assert ask(limited, bidder, S.BID, auc=2, price=30000, ereq=1000)["t"] == S.BID_ACCEPT
    roomy = board(2000, 200)
    assert ask(roomy, bidder, S.BID, auc=3, price=30000, ereq=2000)["t"] == S.BID_ACCEPT
    # a high-resistance pack (20 mOhm per cell: 156 A sags 3.1 V) cannot carry it at all
    sagging = board(20000, 1000)
    assert ask(sagging, bidder, S.BID, auc=4, price=30000, ereq=2000)["reason"] == (
        S.REASON_POWER_LIMIT
    )
    assert ask(sagging, bidder, S.BID, auc=5, price=30000, ereq=200)["t"] == S.BID_ACCEPT


def test_query_offers_the_largest_lot_the_pack_can_deliver() -> None:
    """QueryResponse's ereq is the energy for sale capped by the power rule: a lot of it is
    accepted; one an eighth larger (the cap's step) is refused power_limit."""
    clock = Clock()
    battery = SimBattery(capacity_wh=10000, soc=9000)
    core = make_core(battery, clock, 120)  # 1 kWh over 2 min = 30 kW: power binds first
    hub = Sender(0, DEV, KEY, 1, clock=clock)
    bidder = Sender(100001, DEV, KEY, 1, clock=clock)
    offered = ask(core, hub, S.QUERY, auc=1)["ereq"]
    assert 0 < offered < core.sellable_wh()
    too_big = offered + offered // 7 + 2
    assert ask(core, bidder, S.BID, auc=1, price=30000, ereq=too_big)["reason"] == (
        S.REASON_POWER_LIMIT
    )
    assert ask(core, bidder, S.BID, auc=1, price=30000, ereq=offered)["t"] == S.BID_ACCEPT
    # the hold takes (nearly all) the pack's power
    assert ask(core, hub, S.QUERY, auc=2)["ereq"] < offered // 4
