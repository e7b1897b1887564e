"""Operator commands against a running hub trading with a simulated fleet: pausing the site
stops new auctions and resuming restarts them, a paused aggregator's bids stop while the
others' go on, PATCH changes an aggregator's parameters live (its bids obey a lowered max
price) and refuses bad input, a battery out of service gets no new auction; each command is
an operator_action event naming its key; viewer keys get 403, no key 401, unknown ids 404."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from hub.auctions.config import AuctionConfig
from hub.auctions.control import OperatorMark, TradingControls
from hub.auctions.scheduler import Scheduler
from hub.auth import Role
from hub.buyers.aggregator import Aggregator, default_aggregators
from hub.buyers.bidding import Buyers
from hub.devices import Registry
from hub.events import EventKind
from hub.runtime import HubRuntime
from tests.hub.helpers import api_key, get_json, hub_settings, running_hub, sim_fleet, wait_for

FIXED, ADAPTIVE, MARKET = 100_001, 100_002, 100_003  # default_aggregators' ids by strategy


async def _call(
    hub: HubRuntime, key: str | None, path: str, method: str = "POST", body: Any = None
) -> tuple[int, Any]:
    return await asyncio.to_thread(
        get_json, f"{hub.http_url}{path}", key, method=method, body=body
    )


async def _events(hub: HubRuntime, after_seq: int, kind: str) -> list[dict[str, Any]]:
    return await hub.read_events(after_seq, 1000, [kind])


def _seq(hub: HubRuntime) -> int:
    assert hub.events is not None
    return hub.events.last_seq


async def _operator_actions(hub: HubRuntime, after_seq: int) -> list[dict[str, Any]]:
    return [event["payload"] for event in await _events(hub, after_seq, "operator_action")]


def test_the_scheduler_obeys_the_controls_at_its_next_tick(tmp_path: Path) -> None:
    """Without sockets: paused, nothing is due; a battery out of service is skipped while
    the others are due; resumed, the skipped battery is due again."""
    config = AuctionConfig.from_settings(hub_settings(tmp_path, trading_period_ms=0))
    registry = Registry(5000, 3.0, on_failure=lambda *_: None, clock=lambda: 0)
    for device_id in (1, 2, 3):
        device = registry.seen(device_id, 0)
        device.energy_remaining_wh, device.pct_for_sale = 10_000, 5_000
    controls = TradingControls()
    scheduler = Scheduler(config, registry, Buyers([Aggregator(cfg) for cfg in
                                                    default_aggregators(2)]),
                          lambda _period: None, controls)
    assert scheduler.due(0, set(), 0) == []  # first sight: first auctions are staggered
    later = 10 * config.auction_interval_ms
    mark = OperatorMark({"key_id": 1, "name": "ops"}, 0)
    controls.paused = mark
    assert scheduler.due(later, set(), 0) == []
    controls.paused = None
    controls.out_of_service[2] = mark
    assert [d.device_id for d in scheduler.due(later, set(), 0)] == [1, 3]
    del controls.out_of_service[2]
    assert [d.device_id for d in scheduler.due(later, set(), 0)] == [2]
    assert scheduler.due(later + 1, set(), 0) == []  # the others wait for their interval


async def test_operator_commands_need_an_operator_key_and_known_targets(tmp_path: Path) -> None:
    async with running_hub(hub_settings(tmp_path)) as hub:
        viewer = await api_key(hub, Role.VIEWER)
        operator = await api_key(hub, Role.OPERATOR, name="alice")
        commands = [
            ("/api/v1/trading/pause", "POST", None),
            ("/api/v1/trading/resume", "POST", None),
            (f"/api/v1/aggregators/{FIXED}/pause", "POST", None),
            (f"/api/v1/aggregators/{FIXED}/resume", "POST", None),
            (f"/api/v1/aggregators/{FIXED}", "PATCH", {"max_price_mc": 20_000}),
            ("/api/v1/batteries/7/out-of-service", "POST", None),
            ("/api/v1/batteries/7/in-service", "POST", None),
        ]
        for path, method, body in commands:
            assert (await _call(hub, None, path, method, body))[0] == 401, path
            code, answer = await _call(hub, viewer, path, method, body)
            assert code == 403 and "operator" in answer["detail"], path
        assert await _operator_actions(hub, 0) == []  # refused commands change nothing
        for path in ("/api/v1/aggregators/99/pause", "/api/v1/batteries/7/out-of-service"):
            code, answer = await _call(hub, operator, path)
            assert code == 404 and "no " in answer["detail"], path
        assert (await _call(hub, operator, "/api/v1/aggregators/99", "PATCH", {"budget_mc": 1}))[
            0
        ] == 404

        bad: list[tuple[Any, str]] = [
            ({}, "nothing to change"),
            ({"name": "x"}, "cannot be changed live"),
            ({"strategy": "market"}, "cannot be changed live"),
            ({"max_price_mc": "cheap"}, "must be a number"),
            ({"max_price_mc": 0}, "must be > 0"),
            ({"max_price_mc": 1.5}, "whole number"),
            ({"budget_mc": 2**40}, "must be in"),
            ({"max_price_mc": True}, "must be a number"),
            ({"strategy_params": {"margin_bp": 10}}, "no parameter 'margin_bp'"),  # adaptive
            ({"strategy_params": {"target_success": 1.5}}, "must be in 0.0..1.0"),
            ({"strategy_params": {"name": "fixed"}}, "no parameter 'name'"),
            ({"strategy_params": []}, "non-empty object"),
            ({"max_price_mc": 20_000, "strategy_params": {"window": 0}}, "window must be in"),
        ]
        before = hub.aggregators()[1]["config"]
        for body, reason in bad:
            code, answer = await _call(hub, operator, f"/api/v1/aggregators/{ADAPTIVE}",
                                       "PATCH", body)
            assert code == 400 and reason in answer["detail"], (body, answer)
        assert hub.aggregators()[1]["config"] == before  # all or nothing
        code, answer = await _call(hub, operator, f"/api/v1/aggregators/{ADAPTIVE}", "PATCH",
                                   {"budget_mc": 5_000_000,
                                    "strategy_params": {"target_success": 0.7, "window": 5}})
        assert code == 200, answer
        assert answer["config"]["budget_mc"] == 5_000_000
        assert answer["config"]["strategy_params"] == {"target_success": 0.7, "window": 5}
        assert hub.auctions is not None
        strategy = hub.auctions.buyers.by_id[ADAPTIVE].strategy
        assert (strategy.target_success, strategy.window) == (0.7, 5)  # type: ignore[attr-defined]
        actions = await _operator_actions(hub, 0)
        assert [a["action"] for a in actions] == ["update_aggregator"]
        assert actions[0]["by"]["name"] == "alice-operator"
        assert actions[0]["params"]["strategy_params"] == {"target_success": 0.7, "window": 5}


async def test_operator_commands_steer_a_trading_site(tmp_path: Path) -> None:
    # no trading periods and deep pockets: every aggregator keeps buying during the test
    settings = hub_settings(tmp_path, auction_interval_ms=200, trading_period_ms=0)
    configs = default_aggregators(3, settings.seed, demand_scale=100)
    # the fixed bidder opens at 1.5 x reserve (about 38 c/kWh), above the others' max prices:
    # it bids in every auction and never is priced out, until its max price is lowered
    configs[0].max_price_mc = 45_000
    configs[0].strategy_params = {"margin_bp": 5_000}
    async with running_hub(settings, aggregator_configs=configs) as hub:
        assert hub.auctions is not None and hub.registry is not None
        totals = hub.auctions.totals
        key = await api_key(hub, Role.OPERATOR, name="ops")
        async with sim_fleet(settings, hub.mqtt_url, count=4):
            await wait_for(lambda: totals.auctions_opened >= 4, 20, "auctions opening")

            # -- the whole site ------------------------------------------------------------
            start = _seq(hub)
            code, answer = await _call(hub, key, "/api/v1/trading/pause")
            assert code == 200 and answer["paused"] is True
            code, status = await _call(hub, key, "/api/v1/status", "GET")
            assert status["trading"]["paused"] is True
            assert status["trading"]["by"]["name"] == "ops-operator"
            await asyncio.sleep(0.3)  # auctions opened on the last tick get their rows
            opened = totals.auctions_opened
            await asyncio.sleep(1.2)  # six auction intervals
            assert totals.auctions_opened == opened, "an auction opened while paused"
            code, answer = await _call(hub, key, "/api/v1/trading/resume")
            assert code == 200 and answer["paused"] is False
            await wait_for(lambda: totals.auctions_opened > opened, 5, "trading again")
            code, status = await _call(hub, key, "/api/v1/status", "GET")
            assert status["trading"] == {"paused": False, "by": None, "since_ms": None}

            # -- one aggregator paused -----------------------------------------------------
            async def bidders_since(seq: int) -> set[int]:
                return {e["payload"]["bidder_id"] for e in await _events(hub, seq, "bid_placed")}

            deadline = asyncio.get_running_loop().time() + 10
            while FIXED not in await bidders_since(0):  # it bids before its pause
                assert asyncio.get_running_loop().time() < deadline, "no bid yet"
                await asyncio.sleep(0.2)
            code, answer = await _call(hub, key, f"/api/v1/aggregators/{FIXED}/pause")
            assert code == 200 and answer["paused"] is True
            paused_at = _seq(hub)

            deadline = asyncio.get_running_loop().time() + 10
            while {ADAPTIVE, MARKET} - await bidders_since(paused_at):
                assert asyncio.get_running_loop().time() < deadline, "others stopped bidding"
                await asyncio.sleep(0.2)
            assert FIXED not in await bidders_since(paused_at)
            code, page = await _call(hub, key, "/api/v1/aggregators", "GET")
            assert [row["paused"] for row in page["items"]] == [True, False, False]
            assert (await _call(hub, key, f"/api/v1/aggregators/{FIXED}/resume"))[0] == 200
            resumed_at = _seq(hub)
            deadline = asyncio.get_running_loop().time() + 10
            while FIXED not in await bidders_since(resumed_at):
                assert asyncio.get_running_loop().time() < deadline, "no bid after resume"
                await asyncio.sleep(0.2)

            # -- a lower max price ---------------------------------------------------------
            cap = 34_000  # under its opening bids so far, over the others' max prices
            before = [e["payload"]["price_mc"] for e in await _events(hub, 0, "bid_placed")
                      if e["payload"]["bidder_id"] == FIXED]
            assert max(before) > cap, before
            code, answer = await _call(hub, key, f"/api/v1/aggregators/{FIXED}", "PATCH",
                                       {"max_price_mc": cap})
            assert code == 200 and answer["config"]["max_price_mc"] == cap
            patched_at = _seq(hub)
            code, page = await _call(hub, key, "/api/v1/aggregators", "GET")
            assert page["items"][0]["config"]["max_price_mc"] == cap
            deadline = asyncio.get_running_loop().time() + 10
            while True:
                prices = [e["payload"]["price_mc"] for e in await _events(hub, patched_at,
                                                                          "bid_placed")
                          if e["payload"]["bidder_id"] == FIXED]
                if len(prices) >= 3:
                    break
                assert asyncio.get_running_loop().time() < deadline, "no bids under the cap"
                await asyncio.sleep(0.2)
            assert max(prices) <= cap, prices

            # -- a battery out of service --------------------------------------------------
            device_id = min(hub.registry.devices)
            code, answer = await _call(hub, key, f"/api/v1/batteries/{device_id}/out-of-service")
            assert code == 200 and answer["in_service"] is False
            code, page = await _call(hub, key, "/api/v1/batteries", "GET")
            service = {row["device_id"]: row["in_service"] for row in page["items"]}
            assert service[device_id] is False and sum(service.values()) == len(service) - 1
            await asyncio.sleep(0.3)  # an auction opened on the last tick gets its row
            out_at = _seq(hub)
            await asyncio.sleep(1.5)
            opened_for = {e["device_id"] for e in await _events(hub, out_at, "auction_opened")}
            assert device_id not in opened_for and len(opened_for) >= 2, opened_for
            code, answer = await _call(hub, key, f"/api/v1/batteries/{device_id}/in-service")
            assert code == 200 and answer["in_service"] is True
            back_at = _seq(hub)
            deadline = asyncio.get_running_loop().time() + 10
            while device_id not in {
                e["device_id"] for e in await _events(hub, back_at, "auction_opened")
            }:
                assert asyncio.get_running_loop().time() < deadline, "battery not auctioned"
                await asyncio.sleep(0.2)

        actions = await _operator_actions(hub, start)
        assert [a["action"] for a in actions] == [
            "pause_trading", "resume_trading", "pause_aggregator", "resume_aggregator",
            "update_aggregator", "battery_out_of_service", "battery_in_service",
        ]
        assert all(a["by"]["name"] == "ops-operator" and a["by"]["key_id"] for a in actions)
        assert actions[4]["params"] == {"aggregator_id": FIXED, "max_price_mc": cap}
        assert actions[5]["params"] == {"device_id": device_id}


async def test_controls_survive_a_restart_of_the_hub(tmp_path: Path) -> None:
    """The second hub on the same store replays the operator_action events: trading stays
    paused (by whom, since when), an aggregator paused and one re-priced, a battery out of
    service before it is even seen again; a stored action that no longer applies is skipped."""
    settings = hub_settings(tmp_path)
    async with running_hub(settings) as hub:
        assert hub.registry is not None and hub.events is not None
        key = await api_key(hub, Role.OPERATOR, name="ops")
        hub.registry.seen(5, 0)
        hub.registry.seen(6, 0)
        for path, method, body in [
            ("/api/v1/trading/pause", "POST", None),
            (f"/api/v1/aggregators/{ADAPTIVE}/pause", "POST", None),
            (f"/api/v1/aggregators/{MARKET}/pause", "POST", None),
            (f"/api/v1/aggregators/{MARKET}/resume", "POST", None),
            (f"/api/v1/aggregators/{FIXED}", "PATCH", {"max_price_mc": 31_000,
                                                      "strategy_params": {"margin_bp": 700}}),
            ("/api/v1/batteries/5/out-of-service", "POST", None),
            ("/api/v1/batteries/6/out-of-service", "POST", None),
            ("/api/v1/batteries/6/in-service", "POST", None),
        ]:
            assert (await _call(hub, key, path, method, body))[0] == 200, path
        paused = (await _call(hub, key, "/api/v1/status", "GET"))[1]["trading"]
        hub.events.emit(EventKind.OPERATOR_ACTION, action="pause_aggregator",
                        by={"key_id": 1, "name": "gone"}, params={"aggregator_id": 999})
    async with running_hub(settings) as hub:
        assert hub.auctions is not None
        status = (await _call(hub, key, "/api/v1/status", "GET"))[1]
        assert status["trading"] == paused and paused["paused"] is True
        aggregators = {row["config"]["aggregator_id"]: row for row in
                       (await _call(hub, key, "/api/v1/aggregators", "GET"))[1]["items"]}
        assert {i: row["paused"] for i, row in aggregators.items()} == {
            FIXED: False, ADAPTIVE: True, MARKET: False}
        assert aggregators[FIXED]["config"]["max_price_mc"] == 31_000
        assert aggregators[FIXED]["config"]["strategy_params"]["margin_bp"] == 700
        assert hub.auctions.buyers.by_id[FIXED].strategy.margin_bp == 700  # type: ignore[attr-defined]
        assert set(hub.auctions.controls.out_of_service) == {5}
        assert hub.auctions.operator.battery_service(5)["out_of_service"]["by"]["name"] \
            == "ops-operator"
