"""Registry liveness rules and metric bookkeeping (pure, no sockets)."""

from __future__ import annotations

from hub.buyers.aggregator import FIRST_AGGREGATOR_ID
from hub.devices import Device, DeviceKeyring, Registry
from hub.devices.keys import MAX_DEVICE_ID
from hub.metrics import Metrics
from hub.transport.codec import BatteryState, FailureNotice
from shared_etp.frame import Receiver, Sender, derive_key
from shared_etp.schema import BESS_STATUS, BID, HEALTH_FAULT, HEALTH_OK, QUERY


class Clock:
    def __init__(self) -> None:
        self.now = 0

    def __call__(self) -> int:
        return self.now


def _status(device_id: int, health: int = HEALTH_OK) -> BatteryState:
    return BatteryState(device_id, sent_ms=1, energy_remaining_wh=5000, health=health,
                        voltage_mv=50000, discharge_w=0, soc=5000)


def test_silence_past_the_limit_fails_a_device_once() -> None:
    clock = Clock()
    failures: list[tuple[int, int, str]] = []
    registry = Registry(1000, 3.0, lambda d, r, s: failures.append((d.device_id, r, s)),
                        clock=clock)
    registry.on_state(_status(1))
    registry.on_state(_status(2))
    clock.now = 2500
    registry.on_state(_status(2))
    clock.now = 3001
    assert [d.device_id for d in registry.sweep()] == [1]
    clock.now = 5000
    assert registry.sweep() == []  # device 2 was heard at 2500: 2500 ms < 3000 ms
    clock.now = 6000
    assert [d.device_id for d in registry.sweep()] == [2]
    assert registry.sweep() == []
    assert [(f[0], f[2]) for f in failures] == [(1, "deadline"), (2, "deadline")]
    registry.on_state(_status(1))  # heard again: back online
    assert registry.devices[1].online


def test_fault_status_and_will_take_a_device_out_of_trading() -> None:
    failures: list[str] = []
    registry = Registry(1000, 3.0, lambda d, r, s: failures.append(s))
    registry.on_state(_status(1))
    registry.on_state(_status(2))
    registry.on_state(_status(1, HEALTH_FAULT))
    registry.on_failure_frame(FailureNotice(2, HEALTH_FAULT, 13))
    assert registry.online() == []
    assert failures == ["status", "will"]
    registry.on_state(_status(1, HEALTH_FAULT))  # still faulted: no second failure
    assert failures == ["status", "will"]
    registry.on_state(_status(1))
    assert [d.device_id for d in registry.online()] == [1]


def test_a_faulted_device_does_not_flap_online_on_a_late_reply() -> None:
    """A reply in flight when the battery failed proves it alive, not healthy: it stays out of
    trading (no 'device online' between its failure and its next status) until it reports
    healthy again."""
    changes: list[bool] = []
    registry = Registry(1000, 3.0, lambda *_: None, on_change=lambda d: changes.append(d.online))
    registry.on_state(_status(3))
    registry.on_failure_frame(FailureNotice(3, HEALTH_FAULT, 10))
    registry.seen(3, 2)  # e.g. its answer to a Bid sent just before the fault
    registry.on_state(_status(3, HEALTH_FAULT))
    assert not registry.devices[3].online and registry.online() == []
    assert changes == [True, False]  # online once, then offline: no flap
    registry.on_state(_status(3))
    assert registry.devices[3].online and changes[-1] is True


def test_device_keyring_binds_each_key_to_its_device() -> None:
    master = b"m" * 32
    keyring = DeviceKeyring(master)
    assert keyring.key_for(7, 7) == derive_key(master, 7)
    assert keyring.key_for(7, 8) is None  # another sender may not use key 7
    assert keyring.key_for(MAX_DEVICE_ID, MAX_DEVICE_ID) == derive_key(master, MAX_DEVICE_ID)
    beyond = MAX_DEVICE_ID + 1
    assert keyring.key_for(beyond, beyond) is None  # past the device range: no key
    agg = FIRST_AGGREGATOR_ID
    assert keyring.key_for(agg, agg) is None  # aggregator ids are not device keys
    receiver = Receiver(keyring)
    frame, _ = Sender(7, 7, derive_key(master, 7), 1).frame(BESS_STATUS, erem=1, health=0,
                                                           volt=1, dis=0, soc=1)
    assert receiver.open(frame)["src"] == 7


def test_metrics_percentiles_and_deadline_misses() -> None:
    metrics = Metrics()
    for value in range(1, 101):
        metrics.observe_response(BID, float(value))
    metrics.observe_response(QUERY, 600.0)  # QueryResponse deadline is 500 ms
    metrics.observe_timeout(BID, 1000.0)
    summary = metrics.snapshot()
    assert summary["latency_ms"]["bid"]["p50_ms"] in (50.0, 51.0)
    assert summary["latency_ms"]["bid"]["p99_ms"] == 99.0
    assert summary["deadline_misses"] == {"query": 1, "bid": 1}
    assert summary["timeouts"] == {"bid": 1}
    assert metrics.total_deadline_misses == 2


def test_device_sellable_energy() -> None:
    device = Device(1, energy_remaining_wh=10000, pct_for_sale=8000)
    assert device.sellable_wh == 8000
