"""Store API for provisioned batteries' credentials: add, rotate, revoke, list, and a cheap
fingerprint a running hub polls to notice a change made by another process."""

from __future__ import annotations

import sqlalchemy as sa

from hub.store.errors import DeviceCredentialError
from hub.store.models import DEVICE_CREDENTIALS, DeviceCredentialRow
from hub.store.parts import StoreParts
from hub.store.validate import check_ints, check_text, now_ms, to_row

__all__ = ["CredentialStore"]

_C = DEVICE_CREDENTIALS.c


class CredentialStore(StoreParts):
    """Device credentials per (site, device): the current key generation, the broker password
    hash (the password itself is never stored), the owner, active or revoked."""

    async def provision_device(
        self,
        site: str,
        device_id: int,
        *,
        password_hash: str,
        owner: str | None = None,
        at_ms: int | None = None,
    ) -> DeviceCredentialRow:
        """Record a battery as provisioned (key generation 0). A revoked battery is provisioned
        again with the next generation (its revoked key stays refused); an active one raises
        DeviceCredentialError (rotate it instead)."""
        check_text("site", site, 64)
        check_text("password_hash", password_hash, 256)
        check_ints(device_id=device_id, at_ms=at_ms)
        if owner is not None:
            check_text("owner", owner, 64)
        when = now_ms() if at_ms is None else at_ms
        key = (_C.site == site, _C.device_id == device_id)
        async with self._db.transaction() as connection:
            rows = (await connection.execute(sa.select(DEVICE_CREDENTIALS).where(*key))).fetchall()
            if not rows:
                await connection.execute(
                    DEVICE_CREDENTIALS.insert().values(
                        site=site,
                        device_id=device_id,
                        state="active",
                        key_generation=0,
                        broker_password_hash=password_hash,
                        owner=owner,
                        created_ms=when,
                    )
                )
            elif rows[0].state == "active":
                raise DeviceCredentialError(
                    f"device {device_id} is already provisioned (generation "
                    f"{rows[0].key_generation}); use `etp device rotate {device_id}` for a new key"
                )
            else:
                await connection.execute(
                    DEVICE_CREDENTIALS.update()
                    .where(*key)
                    .values(
                        state="active",
                        key_generation=rows[0].key_generation + 1,
                        broker_password_hash=password_hash,
                        owner=owner,
                        created_ms=when,
                        rotated_ms=None,
                        revoked_ms=None,
                    )
                )
            row = (await connection.execute(sa.select(DEVICE_CREDENTIALS).where(*key))).one()
        return to_row(DeviceCredentialRow, row)  # type: ignore[no-any-return]

    async def rotate_device_credentials(
        self, site: str, device_id: int, *, password_hash: str, at_ms: int | None = None
    ) -> DeviceCredentialRow:
        """Next key generation and a new broker password hash for an active battery."""
        check_text("site", site, 64)
        check_text("password_hash", password_hash, 256)
        check_ints(device_id=device_id, at_ms=at_ms)
        when = now_ms() if at_ms is None else at_ms
        key = (_C.site == site, _C.device_id == device_id)
        async with self._db.transaction() as connection:
            result = await connection.execute(
                DEVICE_CREDENTIALS.update()
                .where(*key, _C.state == "active")
                .values(
                    key_generation=_C.key_generation + 1,
                    broker_password_hash=password_hash,
                    rotated_ms=when,
                )
            )
            rows = (await connection.execute(sa.select(DEVICE_CREDENTIALS).where(*key))).fetchall()
        if not rows:
            raise DeviceCredentialError(
                f"device {device_id} is not provisioned on site {site} (see `etp device list`)"
            )
        if result.rowcount == 0:
            raise DeviceCredentialError(
                f"device {device_id} is revoked; provision it again with `etp device add "
                f"{device_id}`"
            )
        return to_row(DeviceCredentialRow, rows[0])  # type: ignore[no-any-return]

    async def revoke_device_credentials(
        self, site: str, device_id: int, *, at_ms: int | None = None
    ) -> tuple[DeviceCredentialRow, bool]:
        """Revoke a battery: (its row, True if this call revoked it). Revoking it again keeps
        the first time; an unknown battery raises DeviceCredentialError."""
        check_text("site", site, 64)
        check_ints(device_id=device_id, at_ms=at_ms)
        when = now_ms() if at_ms is None else at_ms
        key = (_C.site == site, _C.device_id == device_id)
        async with self._db.transaction() as connection:
            result = await connection.execute(
                DEVICE_CREDENTIALS.update()
                .where(*key, _C.state == "active")
                .values(state="revoked", revoked_ms=when)
            )
            rows = (await connection.execute(sa.select(DEVICE_CREDENTIALS).where(*key))).fetchall()
        if not rows:
            raise DeviceCredentialError(
                f"device {device_id} is not provisioned on site {site} (see `etp device list`)"
            )
        return to_row(DeviceCredentialRow, rows[0]), result.rowcount == 1

    async def list_device_credentials(self, site: str | None = None) -> list[DeviceCredentialRow]:
        """Every provisioned battery (of one site, or all), by site then id."""
        query = sa.select(DEVICE_CREDENTIALS).order_by(_C.site, _C.device_id)
        if site is not None:
            query = query.where(_C.site == site)
        return [to_row(DeviceCredentialRow, row) for row in await self._db.fetch(query)]

    async def device_credentials_fingerprint(self, site: str) -> tuple[int, ...]:
        """A few aggregates of a site's credentials that change with every add, rotation and
        revocation: one cheap query a running hub polls (it re-reads the rows on a change)."""
        revoked = sa.func.sum(sa.case((_C.state == "revoked", 1), else_=0))
        query = sa.select(
            sa.func.count(),
            sa.func.coalesce(sa.func.sum(_C.key_generation), 0),
            sa.func.coalesce(revoked, 0),
            sa.func.coalesce(sa.func.max(_C.created_ms), 0),
            sa.func.coalesce(sa.func.max(_C.rotated_ms), 0),
            sa.func.coalesce(sa.func.max(_C.revoked_ms), 0),
        ).where(_C.site == site)
        row = (await self._db.fetch(query))[0]
        return tuple(int(value) for value in row)
