"""Store API for operators' alerts: raise (one open row per dedup key, repeats counted),
acknowledge (who and when, once), count the open ones. Lists go through queries.py."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from hub.store.errors import InvalidValueError, UnknownAlertError
from hub.store.models import ALERT_KINDS, ALERT_SEVERITIES, ALERTS, AlertRow
from hub.store.parts import StoreParts
from hub.store.validate import check_ints, check_json, check_text, now_ms, to_row

__all__ = ["AlertStore"]


class AlertStore(StoreParts):
    """Alerts, written at once (one transaction each: they are rare and must not be lost)."""

    async def raise_alert(
        self,
        kind: str,
        severity: str,
        dedup_key: str,
        message: str,
        *,
        device_id: int | None = None,
        detail: dict[str, Any] | None = None,
        at_ms: int | None = None,
    ) -> tuple[AlertRow, bool]:
        """Open an alert, or count a repeat of the open one with the same `dedup_key` (its
        message and detail become the latest). Returns the row and True when it is new."""
        if kind not in ALERT_KINDS:
            raise InvalidValueError(f"alert kind must be one of {ALERT_KINDS}, not {kind!r}")
        if severity not in ALERT_SEVERITIES:
            raise InvalidValueError(f"severity must be one of {ALERT_SEVERITIES}")
        check_text("dedup_key", dedup_key, 96)
        check_text("message", message, 256)
        check_ints(device_id=device_id, at_ms=at_ms)
        check_json("detail", detail)
        when = now_ms() if at_ms is None else at_ms
        async with self._db.transaction() as connection:
            open_row = (
                await connection.execute(
                    sa.select(ALERTS.c.id)
                    .where(ALERTS.c.dedup_key == dedup_key, ALERTS.c.state == "open")
                    .order_by(ALERTS.c.id.desc())
                    .limit(1)
                )
            ).first()
            if open_row is not None:
                result = await connection.execute(
                    ALERTS.update()
                    .where(ALERTS.c.id == open_row.id)
                    .values(count=ALERTS.c.count + 1, last_ms=when, message=message,
                            detail=detail)
                    .returning(*ALERTS.c)
                )
                return to_row(AlertRow, result.one()), False
            result = await connection.execute(
                ALERTS.insert()
                .values(kind=kind, severity=severity, dedup_key=dedup_key, device_id=device_id,
                        message=message, detail=detail, raised_ms=when, last_ms=when, count=1,
                        state="open")
                .returning(*ALERTS.c)
            )
            return to_row(AlertRow, result.one()), True

    async def acknowledge_alert(
        self, alert_id: int, key_id: int, name: str, *, at_ms: int | None = None
    ) -> tuple[AlertRow, bool]:
        """Mark an alert acknowledged by an API key; returns it and True if this call did it
        (an acknowledged alert keeps its first acknowledgement). UnknownAlertError if none."""
        check_ints(alert_id=alert_id, key_id=key_id, at_ms=at_ms)
        check_text("name", name, 64)
        when = now_ms() if at_ms is None else at_ms
        async with self._db.transaction() as connection:
            changed = await connection.execute(
                ALERTS.update()
                .where(ALERTS.c.id == alert_id, ALERTS.c.state == "open")
                .values(state="acknowledged", acknowledged_ms=when,
                        acknowledged_by_key_id=key_id, acknowledged_by_name=name)
            )
            rows = (
                await connection.execute(sa.select(ALERTS).where(ALERTS.c.id == alert_id))
            ).fetchall()
        if not rows:
            raise UnknownAlertError(f"no alert has id {alert_id}")
        return to_row(AlertRow, rows[0]), changed.rowcount == 1

    async def count_open_alerts(self) -> int:
        """How many alerts wait for an acknowledgement."""
        rows = await self._db.fetch(
            sa.select(sa.func.count()).select_from(ALERTS).where(ALERTS.c.state == "open")
        )
        return int(rows[0][0])
