"""The HIL cases, in order, against one board: flashed from a clean filesystem, then booted,
traded with, faulted, soft-reset, cut off from its broker and power-cut. Each case leaves the
board trading for the next; a case that needs an earlier one's result skips if it failed.

Figures come from the hub's own metrics (request -> response latency as the hub measures it),
the hub's store and event log, the board's console (its `stats` line: counters and heap after a
collection) and the board's audit trail read back with `etp firmware audit`.
"""

from __future__ import annotations

import ast
import asyncio
import json
import time
from collections import Counter
from typing import Any

import pytest
import pytest_asyncio

from hil_tests.rig import (
    CTRL_C,
    CTRL_D,
    KEPT_BY_WIPE,
    WIPE_SCRIPT,
    BoardUnderTest,
    HubRig,
    wait_for,
)
from hub.events import EventKind
from hub.metrics import percentile
from shared_etp.schema import (
    BID,
    BID_CONFIRM,
    DEADLINE_MS,
    DEVICE_FAILURE,
    QUERY,
    REASON_VOLTAGE_OUT_OF_RANGE,
    REGISTER,
    TYPE_NAMES,
)

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.slow, pytest.mark.micropython]

REQUESTS = {TYPE_NAMES[t]: t for t in (QUERY, BID, BID_CONFIRM)}  # the hub's metric names


@pytest.fixture(scope="session")
def passed() -> set[str]:
    """Names of the steps done so far (flashed, registered): later cases need them."""
    return set()


def need(passed: set[str], step: str) -> None:
    """Skip a case whose precondition (an earlier case) did not hold."""
    if step not in passed:
        pytest.skip(f"needs the board {step} (an earlier case failed)")


def device_id(board: BoardUnderTest) -> int:
    return board.options.device_id


async def trades_after(hub: HubRig, count: int, timeout_s: float, what: str) -> None:
    """Wait until the hub has `count` more verified trades than now."""
    base = hub.totals()["trades"]
    await wait_for(lambda: hub.totals()["trades"] >= base + count, timeout_s, what, 0.05)


async def timed(task: asyncio.Task[Any], began: float) -> float:
    """Await the task; the seconds from `began` (time.monotonic()) to its end."""
    await task
    return time.monotonic() - began


async def store_agrees_with_trail(
    hub: HubRig, board: BoardUnderTest, figures: dict[str, Any]
) -> list[dict[str, Any]]:
    """Pause trading at the hub (as an operator would), wait until every trade is decided,
    read the board's audit trail (`etp firmware audit`), reset the board, resume trading; then
    check the store holds exactly the trades the board committed (none lost, invented, doubled
    or changed) over the auctions the trail covers. Returns the trail's records."""
    assert hub.runtime.store is not None
    async with hub.trading_paused():
        trail = await board.audit()
        all_trades = await hub.runtime.store.list_trades()
        back = hub.expect_online(device_id(board))
        await board.reset()  # the audit read stopped the node
        await back
    figures["audit_records"] = trail["verified"]
    figures["torn_lines"] = trail["torn"]
    assert trail["gaps"] == 0, f"the audit trail has {trail['gaps']} sequence gaps"
    records = trail["records"]
    if not board.options.long:  # 16 x 16 KB: nothing rotated away, the trail of this flash
        assert records and records[0]["n"] == 0 and records[0]["k"] == "boot", records[:1]
    committed: dict[int, tuple[int, int, int]] = {}
    doubled = 0
    for record in records:
        if record.get("k") == "trade":
            doubled += record["auc"] in committed
            committed[record["auc"]] = (record["b"], record["p"], record["e"])
    first_auction = min((r["auc"] for r in records if "auc" in r), default=0)
    trades = [
        t for t in all_trades if t.device_id == device_id(board) and t.auction_id >= first_auction
    ]
    verified = {
        t.auction_id: (t.bidder_id, t.price_mc, t.energy_wh)
        for t in trades
        if t.status == "verified"
    }
    per_auction = Counter(t.auction_id for t in trades)
    checks = {
        "lost": len(set(committed) - set(verified)),
        "phantom": len(set(verified) - set(committed)),
        "doubled": doubled + sum(n - 1 for n in per_auction.values()),
        "mismatched": sum(1 for a in set(verified) & set(committed) if verified[a] != committed[a]),
        "undecided": sum(1 for t in trades if t.status in ("recorded", "unverified")),
    }
    figures["trades_board_vs_store"] = f"{len(committed)}/{len(verified)}"
    figures.update({k: v for k, v in checks.items() if v})
    assert checks == dict.fromkeys(checks, 0), checks
    return records


def auction_on_board(records: list[dict[str, Any]], auction_id: int) -> str:
    """What the board's trail says of one auction: held (an accepted bid) and sold or not."""
    kinds = [
        r["k"]
        for r in records
        if r.get("auc") == auction_id and (r["k"] != "bid" or r.get("r") == 0)
    ]
    held = "held" if "bid" in kinds else "never held"
    return f"{held}, {'sold' if 'trade' in kinds else 'not sold'} ({' '.join(kinds) or '-'})"


# ---- cases -------------------------------------------------------------------------------


@pytest.mark.case("flash from a clean filesystem")
async def test_flash_from_a_clean_filesystem(
    board: BoardUnderTest, hub: HubRig, figures: dict[str, Any], passed: set[str]
) -> None:
    """Wipe the flash (a real board keeps its boot.py), `etp firmware flash` the image and a
    config naming the rig's broker; the files are there."""
    wiped = (await board.mpremote("exec", WIPE_SCRIPT)).strip().splitlines()[-1]
    assert set(ast.literal_eval(wiped)) <= KEPT_BY_WIPE, wiped
    key, notice_key = hub.keys(device_id(board))
    # a test bench's battery: energy for 1,000 auctions, 16 x 16 KB of trail, slow delivery
    sets = ["capacity_wh=1000000", "audit_files=16", "delivery_s=36000", *board.options.flash_set]
    began = time.monotonic()
    await board.etp(
        "firmware",
        "flash",
        "--device-id",
        str(device_id(board)),
        "--key-hex",
        key,
        "--notice-key-hex",
        notice_key,
        "--site",
        hub.settings.site,
        "--mqtt-url",
        hub.board_url,
        *(arg for item in sets for arg in ("--set", item)),
        "--no-reset",
    )
    figures["flash_s"] = round(time.monotonic() - began, 1)
    listing = await board.mpremote("fs", "ls")
    for name in ("main.py", "etp_config.json", "firmware/", "shared_etp/"):
        assert name in listing, listing
    assert "audit/" not in listing, listing  # a used board's old trail went with the wipe
    config = json.loads(await board.mpremote("fs", "cat", "etp_config.json"))
    assert config["device_id"] == device_id(board) and config["mqtt_url"] == hub.board_url
    passed.add("flashed")


@pytest.mark.case("boot and register (Register deadline 5000 ms)")
async def test_boot_and_register_within_the_deadline(
    board: BoardUnderTest, hub: HubRig, figures: dict[str, Any], passed: set[str]
) -> None:
    """A hard reset (`mpremote reset`): the node boots, connects and its Register reaches the
    hub within the protocol's Register deadline, counted from the reset command's start."""
    need(passed, "flashed")
    registered = hub.expect_online(device_id(board))
    began = time.monotonic()
    await board.reset()
    await registered
    elapsed_ms = (time.monotonic() - began) * 1000
    figures["reset_to_registered_ms"] = round(elapsed_ms)
    assert elapsed_ms < DEADLINE_MS[REGISTER], f"registered after {elapsed_ms:.0f} ms"
    passed.add("registered")


@pytest_asyncio.fixture(loop_scope="session", scope="session")
async def trading_run(board: BoardUnderTest, hub: HubRig, passed: set[str]) -> dict[str, Any]:
    """N auctions with the board (150; 1,000 with --long): the hub's latencies, deadline misses
    and trades, and the board's stats lines meanwhile."""
    need(passed, "registered")
    metrics = hub.runtime.metrics
    marks = hub.latency_marks()
    misses = dict(metrics.deadline_misses)
    timeouts = dict(metrics.timeouts)
    before = hub.totals()
    assert board.console is not None
    stats_before = len(board.console.of("stats"))
    n = board.options.auctions

    def closed() -> int:
        totals = hub.totals()
        return sum(
            totals[k] - before[k]
            for k in ("auctions_cleared", "auctions_no_sale", "auctions_terminated")
        )

    began = time.monotonic()
    await wait_for(lambda: closed() >= n, n * 1.0 + 30, f"{n} auctions", 0.05)
    seconds = time.monotonic() - began
    auctions, after, latency = closed(), hub.totals(), hub.latency_since(marks)
    missed = {k: v - misses.get(k, 0) for k, v in metrics.deadline_misses.items()}
    timed_out = {k: v - timeouts.get(k, 0) for k, v in metrics.timeouts.items()}
    ended_ms = time.time() * 1000
    console = board.console
    # a stats line printed after the last auction (the node prints one every 5 s)
    await wait_for(
        lambda: any(s["_host_ms"] > ended_ms for s in console.of("stats")),
        12,
        "the board's stats line",
        0.1,
    )
    return {
        "auctions": auctions,
        "seconds": seconds,
        "trades": after["trades"] - before["trades"],
        "latency": latency,
        "misses": {k: v for k, v in missed.items() if v},
        "timeouts": {k: v for k, v in timed_out.items() if v},
        "stats": board.console.of("stats")[stats_before:],
    }


@pytest.mark.case("Query/Bid/Confirm answered within 500 ms")
async def test_requests_answered_within_their_deadlines(
    trading_run: dict[str, Any], figures: dict[str, Any]
) -> None:
    """Over the real link, every request of the trading run was answered in time; p50/p99 of
    request -> response latency as the hub measured it."""
    latency = trading_run["latency"]
    for name, request_type in REQUESTS.items():
        samples = latency.get(name, [])
        assert len(samples) >= 20, f"only {len(samples)} {name} answers"
        p50, p99 = percentile(samples, 0.5), percentile(samples, 0.99)
        figures[name] = f"n {len(samples)} p50 {p50:.1f} ms p99 {p99:.1f} ms max {max(samples):.1f}"
        assert p99 < DEADLINE_MS[request_type], (name, p99)
    figures["deadline_misses"] = sum(trading_run["misses"].values())
    figures["over"] = "the trading case's auctions"
    assert not trading_run["timeouts"], trading_run["timeouts"]
    assert not trading_run["misses"], trading_run["misses"]


@pytest.mark.case("trade N auctions, heap under the limit")
async def test_trades_auctions_with_the_heap_under_the_limit(
    trading_run: dict[str, Any], board: BoardUnderTest, figures: dict[str, Any]
) -> None:
    """The run's auctions traded (the board sells in most of them), no frame dropped, and the
    node's live heap (its own counters after a collection) stayed under --heap-limit."""
    figures["auctions"] = trading_run["auctions"]
    figures["trades"] = trading_run["trades"]
    figures["seconds"] = round(trading_run["seconds"], 1)
    figures["auctions_per_s"] = round(trading_run["auctions"] / trading_run["seconds"], 1)
    stats = trading_run["stats"]
    allocs = [s["heap"]["alloc"] for s in stats]
    frees = [s["heap"]["free"] for s in stats]
    figures["heap_alloc_max"] = f"{max(allocs) / 1024:.1f} KB"
    figures["heap_free_min"] = f"{min(frees) / 1024:.1f} KB"
    figures["heap_alloc_first_last"] = f"{allocs[0] / 1024:.1f}/{allocs[-1] / 1024:.1f} KB"
    assert trading_run["trades"] >= trading_run["auctions"] // 2
    assert max(allocs) < board.options.heap_limit_bytes, allocs
    last = stats[-1]
    assert not last["core"]["dropped"], last["core"]  # no frame lost (to the heap or else)
    figures["board_trades_since_boot"] = last["core"]["trades"]
    figures["stats_lines"] = len(stats)


@pytest.mark.case("injected fault -> DeviceFailure at the hub within 200 ms")
async def test_injected_fault_reaches_the_hub_as_device_failure(
    board: BoardUnderTest, hub: HubRig, figures: dict[str, Any], passed: set[str]
) -> None:
    """An undervolt (sim: the fault file on flash; real: --fault-cmd): the board publishes
    DeviceFailure and the hub fails it within the protocol's 200 ms; clearing it brings the
    board back (a new birth)."""
    need(passed, "registered")
    if not board.options.simulated and not board.options.fault_cmd:
        pytest.skip("a real board's fault needs --fault-cmd (see README: fault wiring)")
    failed = hub.expect(
        {EventKind.DEVICE_FAILURE}, lambda e: e.device_id == device_id(board), 10, "DeviceFailure"
    )
    injected_ms = time.time() * 1000
    await asyncio.to_thread(board.inject_fault, "undervolt")
    event = await failed
    latency_ms = event.ts_ms - injected_ms
    figures["fault_to_hub_ms"] = round(latency_ms)
    # the board's own DeviceFailure (voltage out of range), not its will (link lost)
    assert event.payload.get("reason") == REASON_VOLTAGE_OUT_OF_RANGE, event.payload
    figures["reason"] = "voltage_out_of_range"
    back = hub.expect_online(device_id(board))
    began = time.monotonic()
    await asyncio.to_thread(board.inject_fault, "clear")
    figures["recovered_s"] = round(await timed(back, began), 2)
    assert latency_ms < DEADLINE_MS[DEVICE_FAILURE], f"{latency_ms:.0f} ms"
    await trades_after(hub, 2, 30, "trading after the fault cleared")


@pytest.mark.case("soft reset during a hold")
async def test_soft_reset_while_holding_a_bid(
    board: BoardUnderTest, hub: HubRig, figures: dict[str, Any], passed: set[str]
) -> None:
    """Ctrl-C then Ctrl-D on the console the moment the board holds a bid: the node reboots;
    the hold is not turned into a sale, and the hub's store agrees with the board's trail."""
    need(passed, "registered")
    hold = await hub.expect(
        {EventKind.BID_ACCEPTED}, lambda e: e.device_id == device_id(board), 20, "a held bid"
    )
    back = hub.expect_online(device_id(board))
    began = time.monotonic()
    await board.type_keys(CTRL_C, b">>> ")  # the node stops: a REPL
    await board.type_keys(CTRL_D, b"soft reboot")  # soft reset: main.py runs again
    figures["held_auction"] = hold.auction_id
    figures["reregistered_s"] = round(await timed(back, began), 2)
    await trades_after(hub, 2, 30, "trading after the soft reset")
    records = await store_agrees_with_trail(hub, board, figures)
    figures["held_auction_on_board"] = auction_on_board(records, hold.auction_id)
    assert hub.runtime.store is not None
    held = [t for t in await hub.runtime.store.list_trades() if t.auction_id == hold.auction_id]
    figures["held_auction_in_store"] = ", ".join(t.status for t in held) or "no trade"
    sold = any(r.get("k") == "trade" and r.get("auc") == hold.auction_id for r in records)
    assert sold == any(t.status == "verified" for t in held), (records[-20:], held)


@pytest.mark.case("broker loss and reconnect")
async def test_broker_loss_and_reconnect(
    board: BoardUnderTest, hub: HubRig, figures: dict[str, Any], passed: set[str]
) -> None:
    """The rig's broker stops for 2 s and starts again on the same port: the board and the
    hub reconnect by themselves and trade again."""
    need(passed, "registered")
    link = hub.runtime.link
    assert link is not None
    await trades_after(hub, 1, 20, "trading before the outage")
    await hub.broker_down()
    await wait_for(lambda: not link.connected.is_set(), 10, "the hub's link down")
    await asyncio.sleep(2.0)
    back = hub.expect_online(device_id(board), 40)
    began = time.monotonic()
    await hub.broker_up()
    await wait_for(link.connected.is_set, 20, "the hub's link up")
    figures["hub_reconnect_s"] = round(time.monotonic() - began, 2)
    figures["board_registered_s"] = round(await timed(back, began), 2)
    await trades_after(hub, 2, 30, "trading after the broker came back")
    figures["next_trades_s"] = round(time.monotonic() - began, 2)


@pytest.mark.case("power cut mid-trade")
async def test_power_cut_mid_trade(
    board: BoardUnderTest, hub: HubRig, figures: dict[str, Any], passed: set[str]
) -> None:
    """Power cut the moment the board holds a bid (sim: its process killed; real:
    --power-cmd), power back after 0.5 s: the audit trail is intact and the hub's store holds
    exactly the trades the board committed."""
    need(passed, "registered")
    if not board.options.simulated and not board.options.power_cmd:
        pytest.skip("a real board's power cut needs --power-cmd (see README: power relay)")
    hold = await hub.expect(
        {EventKind.BID_ACCEPTED}, lambda e: e.device_id == device_id(board), 20, "a held bid"
    )
    await board.power_off()
    figures["cut_in_auction"] = hold.auction_id
    await asyncio.sleep(0.5)
    back = hub.expect_online(device_id(board))
    began = time.monotonic()
    await board.power_on()
    figures["power_on_to_registered_s"] = round(await timed(back, began), 2)
    await trades_after(hub, 2, 30, "trading after the power cut")
    records = await store_agrees_with_trail(hub, board, figures)
    figures["cut_auction_on_board"] = auction_on_board(records, hold.auction_id)
