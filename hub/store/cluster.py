"""Store API of hub workers sharing a site: heartbeats, battery leases, aggregator shares.

Every statement is one atomic step the database orders: a lease is taken only if it is free,
expired or already ours (INSERT ... ON CONFLICT DO UPDATE ... WHERE), so two workers never hold
a live lease on the same battery.
"""

from __future__ import annotations

from collections.abc import Iterable

import sqlalchemy as sa

from hub.store.models import AGGREGATOR_SHARES, DEVICE_LEASES, HUB_WORKERS
from hub.store.parts import StoreParts

__all__ = ["ClusterStore", "Share", "live_workers_query"]

Share = tuple[int, int, int, int]  # spent_mc, bought_wh, wins, losses


def live_workers_query(site: str, since_ms: int) -> sa.Select[tuple[str, str | None]]:
    """The site's workers seen since `since_ms`, by id (also read by `etp doctor`, which
    must not open a Store: opening one migrates)."""
    return (
        sa.select(HUB_WORKERS.c.worker_id, HUB_WORKERS.c.http_url)
        .where(HUB_WORKERS.c.site == site, HUB_WORKERS.c.seen_ms >= since_ms)
        .order_by(HUB_WORKERS.c.worker_id)
    )


class ClusterStore(StoreParts):
    """Heartbeats (`hub_workers`), leases (`device_leases`), shares (`aggregator_shares`)."""

    async def worker_heartbeat(
        self, worker_id: str, site: str, *, started_ms: int, now_ms: int, http_url: str | None
    ) -> None:
        """Say this worker is alive at `now_ms` (creates its row on the first call)."""
        statement = self._db.insert(HUB_WORKERS).values(
            worker_id=worker_id, site=site, started_ms=started_ms, seen_ms=now_ms,
            http_url=http_url,
        )
        statement = statement.on_conflict_do_update(
            index_elements=["worker_id"], set_={"seen_ms": now_ms, "http_url": http_url}
        )
        async with self._db.transaction() as connection:
            await connection.execute(statement)

    async def live_workers(self, site: str, since_ms: int) -> list[tuple[str, str | None]]:
        """(worker id, gateway URL) of the site's workers seen since `since_ms`, by id."""
        rows = await self._db.fetch(live_workers_query(site, since_ms))
        return [(row.worker_id, row.http_url) for row in rows]

    async def drop_worker(self, worker_id: str) -> None:
        """A worker leaving on purpose: its row and its leases go at once."""
        async with self._db.transaction() as connection:
            await connection.execute(
                sa.delete(DEVICE_LEASES).where(DEVICE_LEASES.c.worker_id == worker_id)
            )
            await connection.execute(
                sa.delete(HUB_WORKERS).where(HUB_WORKERS.c.worker_id == worker_id)
            )

    async def claim_leases(
        self, site: str, worker_id: str, device_ids: Iterable[int], *, now_ms: int,
        expires_ms: int,
    ) -> set[int]:
        """Take or renew the leases on `device_ids` that are free, expired or ours; returns
        the devices this worker holds until `expires_ms`."""
        ids = sorted(set(device_ids))
        if not ids:
            return set()
        table = DEVICE_LEASES
        statement = self._db.insert(table).values(
            [{"site": site, "device_id": d, "worker_id": worker_id, "expires_ms": expires_ms}
             for d in ids]
        )
        statement = statement.on_conflict_do_update(
            index_elements=["site", "device_id"],
            set_={"worker_id": worker_id, "expires_ms": expires_ms},
            where=sa.or_(table.c.worker_id == worker_id, table.c.expires_ms < now_ms),
        ).returning(table.c.device_id)
        async with self._db.transaction() as connection:
            result = await connection.execute(statement)
            return {int(row[0]) for row in result.fetchall()}

    async def release_leases(self, site: str, worker_id: str, device_ids: Iterable[int]) -> None:
        """Give up leases at once (a handover: the next owner need not wait for expiry)."""
        ids = sorted(set(device_ids))
        if not ids:
            return
        table = DEVICE_LEASES
        async with self._db.transaction() as connection:
            await connection.execute(
                sa.update(table)
                .where(table.c.site == site, table.c.worker_id == worker_id,
                       table.c.device_id.in_(ids))
                .values(expires_ms=0)
            )

    async def lease_owners(self, site: str, now_ms: int) -> dict[int, str]:
        """device id -> the worker holding a live lease on it."""
        table = DEVICE_LEASES
        rows = await self._db.fetch(
            sa.select(table.c.device_id, table.c.worker_id)
            .where(table.c.site == site, table.c.expires_ms >= now_ms)
        )
        return {int(row.device_id): row.worker_id for row in rows}

    async def put_aggregator_shares(
        self, site: str, period: int, worker_id: str, shares: dict[int, Share], *, now_ms: int
    ) -> None:
        """This worker's totals of the period so far, per aggregator (replaces the last)."""
        if not shares:
            return
        table = AGGREGATOR_SHARES
        statement = self._db.insert(table).values(
            [{"site": site, "period": period, "aggregator_id": agg, "worker_id": worker_id,
              "spent_mc": s[0], "bought_wh": s[1], "wins": s[2], "losses": s[3],
              "updated_ms": now_ms} for agg, s in sorted(shares.items())]
        )
        excluded = statement.excluded
        statement = statement.on_conflict_do_update(
            index_elements=["site", "period", "aggregator_id", "worker_id"],
            set_={name: excluded[name]
                  for name in ("spent_mc", "bought_wh", "wins", "losses", "updated_ms")},
        )
        async with self._db.transaction() as connection:
            await connection.execute(statement)

    async def others_aggregator_shares(
        self, site: str, period: int, worker_id: str
    ) -> dict[int, Share]:
        """Per aggregator, the sum of the other workers' totals of the period."""
        table = AGGREGATOR_SHARES
        rows = await self._db.fetch(
            sa.select(
                table.c.aggregator_id, sa.func.sum(table.c.spent_mc),
                sa.func.sum(table.c.bought_wh), sa.func.sum(table.c.wins),
                sa.func.sum(table.c.losses),
            )
            .where(table.c.site == site, table.c.period == period,
                   table.c.worker_id != worker_id)
            .group_by(table.c.aggregator_id)
        )
        shares: dict[int, Share] = {}
        for row in rows:
            agg, spent, bought, wins, losses = (int(value or 0) for value in tuple(row))
            shares[agg] = (spent, bought, wins, losses)
        return shares
