"""Authenticated frames become the typed messages the registry and the auctions read."""

from __future__ import annotations

from hub.transport import codec
from shared_etp.schema import HEALTH_FAULT, HEALTH_OK, REASON_LINK_LOST

QUERY_RESPONSE = {"t": 2, "src": 7, "ts": 1234, "erem": 8000, "pct": 2500, "sale": 21000,
                  "health": HEALTH_OK, "volt": 51000, "soc": 6200}


def test_a_query_response_offers_its_requested_energy_or_its_share() -> None:
    state = codec.battery_state(QUERY_RESPONSE)
    assert (state.device_id, state.sent_ms, state.reserve_mc) == (7, 1234, 21000)
    assert state.sellable_wh == 2000  # 25 % of 8,000 Wh
    assert codec.battery_state({**QUERY_RESPONSE, "ereq": 900}).sellable_wh == 900
    status = codec.battery_state({"src": 7, "ts": 1, "erem": 100, "health": HEALTH_OK})
    assert status.reserve_mc is None and status.voltage_mv is None  # absent, not zero


def test_a_birth_and_a_failure_keep_every_field() -> None:
    born = codec.birth({"src": 3, "ts": 5, "etot": 13500, "erem": 9000, "pct": 4000,
                        "sale": 19000, "health": HEALTH_OK})
    assert (born.energy_total_wh, born.energy_remaining_wh, born.pct_for_sale,
            born.reserve_mc) == (13500, 9000, 4000, 19000)
    notice = codec.failure_notice({"src": 3, "health": HEALTH_FAULT, "reason": REASON_LINK_LOST})
    assert (notice.device_id, notice.health, notice.reason) == (3, HEALTH_FAULT, REASON_LINK_LOST)
