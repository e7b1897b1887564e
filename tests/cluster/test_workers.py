"""Three hub workers share one site on Mosquitto + PostgreSQL; one is killed with -9 mid-run.

Every battery must keep trading (its leases move to the survivors within seconds), every trade
a battery committed must be in the store exactly once and verified, none the batteries did not
commit, every trade settled once; the event log's seq stays strictly increasing across workers,
and every worker's gateway serves the same events.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

import pytest

from hub.auth import Role
from hub.settings import load_master_secret
from hub.store import Store
from hub.tools.pg import postgres_missing_reason, postgres_server
from hub.tools.sim.fleet import SimConfig, SimFleet
from hub.tools.sim.workers import WorkerSite
from tests.brokers import MosquittoProcess, mosquitto_available
from tests.hub.helpers import get_json, make_api_key

pytestmark = [
    pytest.mark.skipif(postgres_missing_reason() is not None,
                       reason=str(postgres_missing_reason())),
    pytest.mark.skipif(not mosquitto_available(), reason="mosquitto is not installed"),
]

BATTERIES = 24


def _site(tmp_path: Path, mqtt_url: str, database_url: str, *, settlement: str,
          lease_ms: int) -> WorkerSite:
    """Workers trading fast (an auction every 300 ms per battery), buyers that keep buying."""
    return WorkerSite(
        tmp_path, mqtt_url, database_url,
        ETP_AUCTION_INTERVAL_MS="300", ETP_AGGREGATOR_DEMAND_SCALE="1000",
        ETP_SETTLEMENT_NETWORK=settlement, ETP_WORKER_LEASE_MS=str(lease_ms),
    )


def _fleet(site: WorkerSite, mqtt_url: str, count: int) -> SimFleet:
    """Simulated batteries 1..count with packs large enough to sell through the whole test."""
    return SimFleet(SimConfig(
        mqtt_url=mqtt_url, site="site1",
        master_secret=load_master_secret(site.data_dir / "master.key"),
        count=count, overrides={"delivery_s": 36000, "floor_wh": 0},
        capacity_wh=(400_000, 800_000),
    ))


async def _owned(site: WorkerSite) -> list[int | None]:
    statuses = [await worker.astatus() if worker.running else {} for worker in site.workers]
    return [(s.get("cluster") or {}).get("batteries_owned") for s in statuses]


async def _until(predicate, timeout_s: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s: {what}")
        await asyncio.sleep(0.25)


async def test_three_workers_one_killed_every_battery_keeps_trading(tmp_path: Path) -> None:
    with postgres_server() as database_url:
        broker = MosquittoProcess(tmp_path)
        await broker.start()
        site = _site(tmp_path, broker.url, database_url, settlement="embedded", lease_ms=3000)
        fleet: SimFleet | None = None
        try:
            await site.prepare()
            for _ in range(3):
                site.add()
            await site.wait_ready()
            fleet = _fleet(site, broker.url, BATTERIES)
            await fleet.start()

            async def shared_out() -> bool:
                owned = await _owned(site)
                return all(owned) and sum(owned) == BATTERIES  # type: ignore[arg-type]

            await _until(shared_out, 30, "the batteries shared out among 3 workers")
            await asyncio.sleep(4)  # trading on all three
            statuses = [await worker.astatus() for worker in site.workers]
            assert all(s["market"]["trades"] > 0 for s in statuses), statuses
            leaders = [s["cluster"]["worker"] for s in statuses if s["cluster"]["leader"]]
            assert len(leaders) == 1, statuses
            # kill the leader: its batteries and the site's singletons (settlement) move
            victim = next(w for w, s in zip(site.workers, statuses, strict=True)
                          if s["cluster"]["leader"])
            victim.kill()
            killed_ms = int(time.time() * 1000)

            async def moved() -> bool:
                owned = await _owned(site)
                alive = [n for n in owned if n is not None]
                return len(alive) == 2 and sum(alive) == BATTERIES

            started = time.monotonic()
            await _until(moved, 20, "the killed worker's batteries taken over")
            move_s = time.monotonic() - started
            await asyncio.sleep(8)  # trading on two workers, the dead one's trades decided
            survivors = [w for w in site.workers if w.running]
            statuses = [await worker.astatus() for worker in survivors]
            assert sum(1 for s in statuses if s["cluster"]["leader"]) == 1, statuses
            # both gateways serve the same events, in one strictly increasing order
            pages = [get_json(f"http://127.0.0.1:{w.http_port}/api/v1/events?limit=500",
                              site.api_key)[1] for w in survivors]
            seqs = [[item["seq"] for item in page] for page in pages]
            assert seqs[0] == seqs[1] and len(seqs[0]) == 500, seqs
            # a dispute sent to a worker that does not run settlement says where it runs
            follower = next(w for w, s in zip(survivors, statuses, strict=True)
                            if not s["cluster"]["leader"])
            leader = next(w for w in survivors if w is not follower)
            operator = make_api_key(database_url, Role.OPERATOR)
            code, body = get_json(
                f"http://127.0.0.1:{follower.http_port}/api/v1/settlements/1/dispute",
                operator, method="POST", body={"by": "buyer"})
            assert code == 503 and f":{leader.http_port}" in str(body), (code, body)
            # each gateway lists the site's batteries, with the worker that owns each
            for worker in survivors:
                listed = get_json(f"http://127.0.0.1:{worker.http_port}/api/v1/batteries",
                                  site.api_key)[1]["items"]
                assert [row["device_id"] for row in listed] == list(range(1, BATTERIES + 1))
                owners = {row["worker"] for row in listed}
                assert owners == {f"worker-{w.index}" for w in survivors}, owners
        finally:
            await site.stop()
            if fleet is not None:
                fleet.expect_disconnect = True
                await fleet.stop()
            broker.stop()
        assert all(worker.proc is not None and worker.proc.returncode in (0, -9)
                   for worker in site.workers), [w.proc.returncode for w in site.workers]
        async with Store(database_url) as store:
            trades = await store.list_trades()
            settlements = await store.list_settlements()
            events = await store.list_events(0, limit=1_000_000)
    committed = fleet.committed_trades()
    stored = {t.auction_id: (t.device_id, t.bidder_id, t.price_mc, t.energy_wh)
              for t in trades if t.status == "verified"}
    assert Counter(t.status for t in trades) == Counter(verified=len(trades)), "undecided trades"
    assert stored == committed  # none lost, none extra, same terms: exactly the batteries'
    assert len(committed) > 3 * BATTERIES
    traded_after = {t.device_id for t in trades if t.confirmed_ms > killed_ms + 3000 + 4000}
    assert traded_after == set(range(1, BATTERIES + 1)), "a battery stopped trading"
    assert Counter(s.status for s in settlements) == Counter(settled=len(trades))
    assert sorted({s.trade_id for s in settlements}) == sorted(t.id for t in trades)
    seq = [event.seq for event in events]
    assert seq == sorted(set(seq)), "event seq not strictly increasing"
    print(f"moved in {move_s:.1f} s; {len(committed)} trades; {len(events)} events")


async def test_rolling_restart_hands_batteries_over_without_loss(tmp_path: Path) -> None:
    """The upgrade procedure (docs/deployment.md): the database migrated first, a new worker
    started beside the old one, then the old one stopped (SIGINT): its batteries go to the new
    one at once (leases given up, not left to expire), nothing lost or doubled."""
    with postgres_server() as database_url:
        broker = MosquittoProcess(tmp_path)
        await broker.start()
        site = _site(tmp_path, broker.url, database_url, settlement="off", lease_ms=10000)
        fleet: SimFleet | None = None
        try:
            await site.prepare()  # `etp db upgrade` before any worker starts
            old = site.add()
            await site.wait_ready()
            fleet = _fleet(site, broker.url, 12)
            await fleet.start()
            await _until(lambda: _has(site, [12]), 20, "12 batteries on the old worker")
            await asyncio.sleep(2)
            new = site.add()
            await site.wait_ready()
            await _until(lambda: _both_own(site), 20, "the new worker given its share")
            # `etp doctor` on this site sees both workers alive
            from hub.ops.doctor import CheckStatus, check_workers
            from hub.settings import Settings

            checks = await check_workers(Settings(worker=True, mqtt_url=broker.url,
                                                  database_url=database_url), 3.0)
            assert [c.status for c in checks] == [CheckStatus.OK], checks
            assert "2 live" in checks[0].detail and "worker-0, worker-1" in checks[0].detail
            assert await old.stop() == 0
            stopped_ms = int(time.time() * 1000)
            started = time.monotonic()
            await _until(lambda: _has(site, [None, 12]), 20, "all batteries on the new worker")
            handover_s = time.monotonic() - started
            # well inside the 10 s lease: the old worker gave its leases up when it stopped
            assert handover_s < 5, handover_s
            await asyncio.sleep(3)
            assert new.running
        finally:
            await site.stop()
            if fleet is not None:
                fleet.expect_disconnect = True
                await fleet.stop()
            broker.stop()
        async with Store(database_url) as store:
            trades = await store.list_trades()
    committed = fleet.committed_trades()
    assert Counter(t.status for t in trades) == Counter(verified=len(trades))
    assert {t.auction_id: (t.device_id, t.bidder_id, t.price_mc, t.energy_wh)
            for t in trades} == committed
    after = {t.device_id for t in trades if t.confirmed_ms > stopped_ms}
    assert after == set(range(1, 13)), "a battery stopped trading after the handover"
    print(f"handover in {handover_s:.1f} s; {len(committed)} trades")


async def _has(site: WorkerSite, owned: list[int | None]) -> bool:
    return await _owned(site) == owned


async def _both_own(site: WorkerSite) -> bool:
    owned = await _owned(site)
    return len(owned) == 2 and all(owned) and sum(owned) == 12  # type: ignore[arg-type]
