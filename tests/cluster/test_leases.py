"""Leases and shared budgets of hub workers, on a real database (SQLite here; the worker tests
run the same statements on PostgreSQL): at most one worker holds a battery, a silent worker's
batteries move after the lease time, a worker that left hands its batteries over at once, and
an aggregator's spending at one worker counts at the others."""

from __future__ import annotations

from pathlib import Path

from hub.buyers.aggregator import Aggregator, default_aggregators
from hub.buyers.bidding import Buyers
from hub.cluster import LEADER, AggregatorShares, Cluster, ClusterConfig, owner_of
from hub.store import Store


class Clock:
    def __init__(self) -> None:
        self.ms = 1_000_000

    def __call__(self) -> int:
        return self.ms


def _cluster(store: Store, name: str, clock: Clock, busy: set[int] | None = None,
             healthy: list[bool] | None = None) -> Cluster:
    events: list[tuple[str, object]] = []
    cluster = Cluster(
        ClusterConfig(site="site1", worker_id=name, lease_ms=4000, renew_ms=1000,
                      margin_ms=1000),
        store,
        on_acquire=lambda d: events.append(("acquire", set(d))),
        on_release=lambda d: events.append(("release", set(d))),
        on_leader=lambda on: events.append(("leader", on)),
        busy=lambda d: d in (busy or set()),
        healthy=lambda: healthy is None or healthy[0],
        clock=clock,
    )
    cluster.events = events  # type: ignore[attr-defined]
    return cluster


def test_owner_of_is_stable_and_moves_only_the_leavers_share() -> None:
    three = ["a", "b", "c"]
    before = {d: owner_of(d, three) for d in range(1000)}
    after = {d: owner_of(d, ["a", "c"]) for d in range(1000)}
    assert {d for d in before if before[d] != after[d]} == {d for d in before if before[d] == "b"}
    assert 250 < sum(1 for o in before.values() if o == "b") < 420  # a fair share
    assert owner_of(5, []) is None


async def test_leases_are_exclusive_and_move_when_a_worker_falls_silent(tmp_path: Path) -> None:
    clock = Clock()
    async with Store(f"sqlite+aiosqlite:///{tmp_path}/etp.db") as store:
        a, b = _cluster(store, "a", clock), _cluster(store, "b", clock)
        for cluster in (a, b):
            cluster.known.update(range(1, 41))
        await a.tick()  # alone: takes everything
        assert a.owned == set(range(1, 41)) and a.leader
        await b.tick()  # joins: wants its share, still held by a
        assert b.owned == set()
        clock.ms += 1000
        await a.tick()  # a sees b: hands b's share over at once
        await b.tick()
        assert a.owned and b.owned and not a.owned & b.owned
        assert a.owned | b.owned == set(range(1, 41))
        assert a.leader != b.leader
        owners = await store.lease_owners("site1", clock.ms)
        assert {d for d, w in owners.items() if w == "b"} - {LEADER} == b.owned
        # a falls silent (killed): b may not take a's batteries before the lease ends
        for _ in range(2):
            clock.ms += 1000
            await b.tick()
            assert not b.owned & a.owned
        assert a.owns(next(iter(a.owned)))  # still a's, for a second more
        clock.ms += 1000
        assert not any(a.owns(d) for d in a.owned)  # a stops trusting its leases first...
        await b.tick()
        assert not b.owned & a.owned  # ...a second before they expire
        clock.ms += 1100  # a's heartbeat and leases are now older than the lease time
        await b.tick()
        assert b.owned == set(range(1, 41)) and b.leader
        assert ("leader", True) in b.events  # type: ignore[attr-defined]


async def test_a_busy_battery_is_handed_over_after_its_auction(tmp_path: Path) -> None:
    clock = Clock()
    busy: set[int] = set()
    async with Store(f"sqlite+aiosqlite:///{tmp_path}/etp.db") as store:
        a, b = _cluster(store, "a", clock, busy), _cluster(store, "b", clock)
        for cluster in (a, b):
            cluster.known.update(range(1, 21))
        await a.tick()
        await b.tick()
        moving = {d for d in range(1, 21) if owner_of(d, ["a", "b"]) == "b"}
        busy.update(moving)
        clock.ms += 1000
        await a.tick()
        assert a.owned >= moving and a.draining == moving  # no new auction for them at a
        busy.clear()
        clock.ms += 1000
        await a.tick()
        await b.tick()
        assert b.owned == moving and not a.draining


async def test_a_worker_leaving_gives_its_batteries_up_at_once(tmp_path: Path) -> None:
    clock = Clock()
    async with Store(f"sqlite+aiosqlite:///{tmp_path}/etp.db") as store:
        a, b = _cluster(store, "a", clock), _cluster(store, "b", clock)
        for cluster in (a, b):
            cluster.known.update(range(1, 21))
        await a.tick()
        await b.tick()
        clock.ms += 1000
        await a.tick()
        await b.tick()
        await a.stop()
        assert ("release", set()) not in a.events  # type: ignore[attr-defined]
        clock.ms += 1000  # well inside a's lease time
        await b.tick()
        assert b.owned == set(range(1, 21))
        assert LEADER not in b.owned and b.leader


async def test_an_aggregators_spending_counts_at_every_worker(tmp_path: Path) -> None:
    async with Store(f"sqlite+aiosqlite:///{tmp_path}/etp.db") as store:
        configs = default_aggregators(2, seed=1, demand_scale=10)
        workers = []
        for name in ("a", "b"):
            buyers = Buyers([Aggregator(config) for config in configs])
            shares = AggregatorShares(store, "site1", name, buyers, period_ms=3_600_000)
            shares.new_period()
            workers.append((buyers, shares))
        (buyers_a, shares_a), (buyers_b, shares_b) = workers
        first_a, first_b = buyers_a.aggregators[0].state, buyers_b.aggregators[0].state
        first_a.record_win(20_000, 1000)  # 20 cents per kWh, 1 kWh
        first_b.record_win(30_000, 2000)
        first_b.record_loss()
        for shares in (shares_a, shares_b, shares_a):
            await shares.sync()
        for state in (first_a, first_b):
            assert state.spent_mc == 20_000 + 60_000
            assert state.energy_bought_wh == 3000
            assert (state.wins, state.losses) == (2, 1)
        first_a.record_win(10_000, 1000)  # bought at a after the sync: kept, then shared
        for shares in (shares_b, shares_a, shares_b):
            await shares.sync()
        assert first_a.spent_mc == first_b.spent_mc == 90_000
        assert first_a.energy_bought_wh == first_b.energy_bought_wh == 4000
        assert buyers_a.aggregators[1].state.spent_mc == 0  # the other aggregator untouched


async def test_a_worker_that_lost_its_broker_lets_its_batteries_go(tmp_path: Path) -> None:
    clock = Clock()
    link_up = [True]
    async with Store(f"sqlite+aiosqlite:///{tmp_path}/etp.db") as store:
        a = _cluster(store, "a", clock, healthy=link_up)
        b = _cluster(store, "b", clock)
        for cluster in (a, b):
            cluster.known.update(range(1, 11))
        await a.tick()
        await b.tick()
        clock.ms += 1000
        await a.tick()
        await b.tick()
        mine = set(a.owned)
        assert mine
        link_up[0] = False  # a cannot reach its batteries any more: no renewal
        for _ in range(5):
            clock.ms += 1000
            await a.tick()
            await b.tick()
        assert a.owned == set() and ("release", mine) in a.events  # type: ignore[attr-defined]
        assert b.owned == set(range(1, 11))


def test_a_worker_without_the_sites_broker_or_postgresql_says_what_to_set(
    tmp_path: Path,
) -> None:
    # a child process: `etp hub` configures logging on its own stderr
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("ETP_")}

    def etp(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "hub.cli.main", *args], env=env,
                              capture_output=True, text=True, timeout=60)

    alone = etp("hub", "--worker", "--data-dir", str(tmp_path))
    assert alone.returncode == 1 and "ETP_MQTT_URL" in alone.stderr
    sqlite = etp("hub", "--worker", "--data-dir", str(tmp_path),
                 "--mqtt-url", "mqtt://127.0.0.1:1")
    assert sqlite.returncode == 1 and "ETP_DATABASE_URL" in sqlite.stderr
