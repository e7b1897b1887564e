"""Store API for devices: one upsert statement per change, the fleet as a list."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from hub.store.models import DEVICES, DeviceRow
from hub.store.parts import StoreParts
from hub.store.validate import check_ints, check_text, to_row

__all__ = ["DeviceStore"]


class DeviceStore(StoreParts):
    """Devices (batteries) of every site: their last known state."""

    async def upsert_device(
        self,
        device_id: int,
        site: str,
        *,
        online: bool | None = None,
        health: int | None = None,
        energy_total_wh: int | None = None,
        energy_remaining_wh: int | None = None,
        reserve_mc: int | None = None,
        pct_for_sale: int | None = None,
        soc: int | None = None,
        voltage_mv: int | None = None,
        seen_ms: int,
    ) -> None:
        """Insert or update a device; fields left as None keep their stored value."""
        check_text("site", site, 64)
        check_ints(
            device_id=device_id,
            energy_total_wh=energy_total_wh,
            energy_remaining_wh=energy_remaining_wh,
            reserve_mc=reserve_mc,
            seen_ms=seen_ms,
        )
        check_ints(32, health=health, pct_for_sale=pct_for_sale, soc=soc, voltage_mv=voltage_mv)
        given = {
            "online": online,
            "health": health,
            "energy_total_wh": energy_total_wh,
            "energy_remaining_wh": energy_remaining_wh,
            "reserve_mc": reserve_mc,
            "pct_for_sale": pct_for_sale,
            "soc": soc,
            "voltage_mv": voltage_mv,
        }
        changed = {name: value for name, value in given.items() if value is not None}
        values: dict[str, Any] = {
            "site": site,
            "device_id": device_id,
            "first_seen_ms": seen_ms,
            "last_seen_ms": seen_ms,
            **given,
            "online": bool(online),
        }
        statement = self._db.insert(DEVICES).values(values)
        update = {name: statement.excluded[name] for name in (*changed, "last_seen_ms")}
        statement = statement.on_conflict_do_update(
            index_elements=["site", "device_id"], set_=update
        )
        async with self._db.transaction() as connection:
            await connection.execute(statement)

    async def list_devices(self) -> list[DeviceRow]:
        """Every known device, by site then id."""
        rows = await self._db.fetch(
            sa.select(DEVICES).order_by(DEVICES.c.site, DEVICES.c.device_id)
        )
        return [to_row(DeviceRow, row) for row in rows]
