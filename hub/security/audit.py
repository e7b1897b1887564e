"""The security audit log: which events it lists, how floods of rejections become few events,
and the listing `etp audit security` and GET /api/v1/audit/security read from the store.

Security events are ordinary events of the site's log (hub.events): rejected frames (by
device and reason), failed logins seen by the gateway, API keys created and revoked, devices
provisioned, revoked, rotated or quarantined, operator actions and alerts. None carries a
secret: an API key is named by its public part (`etp_<id>`), never by its secret or hash.

Keys made or revoked through the hub's API are events at once (naming the operator's key);
those made or revoked by `etp apikey` (another process writing the store) are found by the hub,
which reads the key table every 5 s and at start (so a change made while it was down is audited
when it starts), and numbers them in its own sequence like every other event.

A flood must not flood the log: `SecurityAudit` turns rejections and failed logins into at
most one event per key (device and reason, or client address) per window (10 s). The first
one of a quiet key is an event at once (count 1); those that follow within the window are
counted and summed into one event when the window ends (count N, window_s), and so on while
they go on.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import sqlalchemy as sa
import structlog

from hub.auth.keys import Principal
from hub.events.kinds import EventKind
from hub.store.models import EVENTS, ApiKeyRow, DeviceCredentialRow
from shared_etp.topics import parse_device_topic

__all__ = [
    "SECURITY_KINDS",
    "AuditRow",
    "SecurityAudit",
    "WindowedCounts",
    "api_key_payload",
    "list_security_events",
    "public_key_id",
]

# What the audit lists (stored kind names).
_DEVICE_KINDS: tuple[str, ...] = (
    EventKind.DEVICE_PROVISIONED, EventKind.DEVICE_REVOKED, EventKind.DEVICE_ROTATED,
)
SECURITY_KINDS: tuple[str, ...] = (
    EventKind.FRAMES_REJECTED,
    EventKind.LOGIN_FAILED,
    EventKind.API_KEY_CREATED,
    EventKind.API_KEY_REVOKED,
    *_DEVICE_KINDS,
    EventKind.DEVICE_QUARANTINED,
    EventKind.OPERATOR_ACTION,
    EventKind.ALERT_RAISED,
)

WINDOW_S = 10
log = structlog.get_logger(__name__)

MAX_KEYS = 10_000  # open windows kept; past it new keys share one overflow key per reason


def public_key_id(key_id: int | None) -> str | None:
    """The public name of an API key (`etp_<id>`), as logs and `etp apikey list` show it."""
    return None if key_id is None else f"etp_{key_id}"


Emit = Callable[..., None]  # emit(kind, *, device_id=..., **payload), as HubRuntime._emit


@dataclass
class _Window:
    started_ms: int
    pending: int
    detail: dict[str, Any]
    reasons: dict[str, int]


class WindowedCounts:
    """Counts occurrences per key and says when to report them: the first of a quiet key at
    once, then the rest of each `window_ms` in one report at its end (pure: clock passed in).
    """

    def __init__(self, window_ms: int, clock: Callable[[], int], max_keys: int = MAX_KEYS):
        self.window_ms = window_ms
        self._clock = clock
        self._max_keys = max_keys
        self._open: dict[Any, _Window] = {}

    def note(self, key: Any, detail: dict[str, Any], reason: str | None = None) -> Any:
        """Count one occurrence. Returns the key to report at once (count 1) when it was
        quiet, else None: it is counted for its window's report. Past `max_keys` open
        windows a new key is counted under the key `("overflow", reason)`."""
        window = self._open.get(key)
        if window is None:
            if len(self._open) >= self._max_keys:
                key = ("overflow", reason)
                window = self._open.get(key)
            if window is None:
                self._open[key] = _Window(self._clock(), 0, detail, {})
                return key
        window.pending += 1
        if reason:
            window.reasons[reason] = window.reasons.get(reason, 0) + 1
        return None

    def due(
        self, *, everything: bool = False
    ) -> list[tuple[Any, int, dict[str, Any], dict[str, int]]]:
        """Reports of windows that ended (all pending ones with `everything`): (key, count,
        detail of the window's first occurrence, counts by reason). A window with nothing
        pending closes; one with counts reports them and a new window starts."""
        now = self._clock()
        reports = []
        for key, window in list(self._open.items()):
            if not everything and now - window.started_ms < self.window_ms:
                continue
            if window.pending:
                reports.append((key, window.pending, window.detail, window.reasons))
                self._open[key] = _Window(now, 0, window.detail, {})
            else:
                del self._open[key]
        return reports

    def __len__(self) -> int:
        return len(self._open)


def api_key_payload(row: ApiKeyRow, source: str, by: Principal | None) -> dict[str, Any]:
    """An API key event's payload: its public id, name and role, never its secret or hash."""
    return {
        "key_id": public_key_id(row.id),
        "name": row.name,
        "role": row.role,
        "source": source,
        "by": None if by is None else {"key_id": public_key_id(by.key_id), "name": by.name},
    }


def _device(key: tuple[Any, str]) -> int | None:
    """The device of a frames key ((device, reason), or ("overflow", reason): none)."""
    return key[0] if isinstance(key[0], int) else None


def _client(key: Any) -> str:
    """The client address of a logins key (an overflow key: "other clients")."""
    return "other clients" if isinstance(key, tuple) else str(key)


def _monotonic_ms() -> int:
    return int(time.monotonic() * 1000)


class SecurityAudit:
    """Turns the hub's rejected frames and failed logins into few frames_rejected and
    login_failed events (see the module's docstring); `run()` ends the windows on time."""

    def __init__(
        self,
        emit: Emit,
        *,
        window_s: int = WINDOW_S,
        clock: Callable[[], int] = _monotonic_ms,
        keys: KeyEventStore | None = None,
        keys_interval_s: float = 5.0,
    ) -> None:
        self._emit = emit
        self.window_s = window_s
        self._frames = WindowedCounts(window_s * 1000, clock)
        self._logins = WindowedCounts(window_s * 1000, clock)
        self._keys = keys
        self.keys_interval_s = keys_interval_s  # how often the key table is read
        self.keys_settle_ms = 2000  # a change younger than this waits for the next read
        self._key_changes: set[tuple[int, str]] = set()  # (key id, created|revoked) audited
        self._keys_mark_ms: int | None = None
        self._device_changes: set[tuple[int, str, int]] = set()  # (device, kind, at_ms)
        self._devices_mark_ms: int | None = None
        # hub workers: only the leader turns table changes (keys, devices) into events
        self.watch_store = True

    def lead(self, leading: bool) -> None:
        """Hub workers: this one became (or stopped being) the leader; a new leader starts
        from the last change audited in the store, whoever audited it."""
        self.watch_store = leading
        self._keys_mark_ms = self._devices_mark_ms = None

    def frame_rejected(self, reason: str, topic: str) -> None:
        """A frame from the network was dropped for `reason` (hub.metrics counts it too)."""
        parsed = parse_device_topic(topic)
        device_id = parsed[1] if parsed is not None else None
        key = self._frames.note((device_id, reason), {}, reason)
        if key is not None:
            self._emit(
                EventKind.FRAMES_REJECTED,
                device_id=_device(key),
                reason=reason,
                count=1,
                window_s=self.window_s,
            )

    def login_failed(self, client: str | None, reason: str, key_id: int | None) -> None:
        """The gateway refused a request or a WebSocket for want of a valid key or ticket."""
        address = client or "unknown"
        detail = {"reason": reason, "key_id": public_key_id(key_id)}
        key = self._logins.note(address, detail, reason)
        if key is not None:
            self._emit(
                EventKind.LOGIN_FAILED,
                client=_client(key),
                count=1,
                window_s=self.window_s,
                reasons={reason: 1},
                **detail,
            )

    def api_key_changed(self, change: str, row: ApiKeyRow, by: Principal | None) -> None:
        """A key made or revoked through the hub's API (`by`: the operator's key)."""
        self._key_changes.add((row.id, change))
        kind = EventKind.API_KEY_CREATED if change == "created" else EventKind.API_KEY_REVOKED
        at_ms = row.created_ms if change == "created" else row.revoked_ms
        self._emit(kind, **api_key_payload(row, "api", by), at_ms=at_ms)

    async def check_api_keys(self) -> None:
        """Audit the keys made or revoked by another process (`etp apikey` writes the store
        directly, with the hub running or not): each change newer than the last audited one
        and not made through this hub becomes an event (`source` "database", `at_ms` the
        change's time), numbered and published by this hub like every other event."""
        if self._keys is None:
            return
        if self._keys_mark_ms is None:
            last = await list_security_events(
                self._keys, kinds=("api_key_created", "api_key_revoked"), limit=1
            )
            self._keys_mark_ms = int(last[0].payload.get("at_ms") or last[0].ts_ms) if last else -1
        mark = self._keys_mark_ms
        settled = int(time.time() * 1000) - self.keys_settle_ms
        for row in await self._keys.list_api_keys():
            for change, at_ms in (("created", row.created_ms), ("revoked", row.revoked_ms)):
                if at_ms is None or not mark < at_ms <= settled:
                    continue
                if (row.id, change) in self._key_changes:
                    continue
                self._key_changes.add((row.id, change))
                kind = (
                    EventKind.API_KEY_CREATED if change == "created" else EventKind.API_KEY_REVOKED
                )
                self._emit(kind, **api_key_payload(row, "database", None), at_ms=at_ms)

    async def check_devices(self, rows: Sequence[DeviceCredentialRow]) -> None:
        """Audit provisioning: `etp device add|rotate|revoke` writes the credentials table
        (with the hub running or not); the hub, which reads it at start and whenever it
        changed, turns each change newer than the last audited one into a device_provisioned,
        _rotated or _revoked event, numbered and published by this hub like every other
        event (a second process writing events would take sequence numbers out of order).
        `key_generation` is the battery's when the hub sees the change (within a second while
        it runs); two rotations of one device while no hub ran are one event."""
        if not self.watch_store:
            return
        if self._devices_mark_ms is None:
            last = (await list_security_events(self._keys, kinds=_DEVICE_KINDS, limit=1)
                    if self._keys is not None else [])
            self._devices_mark_ms = (
                int(last[0].payload.get("at_ms") or last[0].ts_ms) if last else -1
            )
        changes = sorted(
            (at_ms, row.device_id, kind, row)
            for row in rows
            for kind, at_ms in (
                (EventKind.DEVICE_PROVISIONED, row.created_ms),
                (EventKind.DEVICE_ROTATED, row.rotated_ms),
                (EventKind.DEVICE_REVOKED, row.revoked_ms),
            )
            if at_ms is not None and at_ms > self._devices_mark_ms
        )
        for at_ms, device_id, kind, row in changes:
            if (device_id, str(kind), at_ms) in self._device_changes:
                continue
            self._device_changes.add((device_id, str(kind), at_ms))
            self._emit(kind, device_id=device_id, key_generation=row.key_generation,
                       owner=row.owner, at_ms=at_ms)

    def tick(self, *, everything: bool = False) -> None:
        """Report the windows that ended (every pending count with `everything`)."""
        for key, count, _detail, _reasons in self._frames.due(everything=everything):
            self._emit(
                EventKind.FRAMES_REJECTED,
                device_id=_device(key),
                reason=key[1],
                count=count,
                window_s=self.window_s,
            )
        for key, count, detail, reasons in self._logins.due(everything=everything):
            self._emit(
                EventKind.LOGIN_FAILED,
                client=_client(key),
                count=count,
                window_s=self.window_s,
                reasons=reasons,
                reason=max(reasons, key=reasons.__getitem__) if reasons else detail["reason"],
                key_id=detail["key_id"],
            )

    async def run(self, interval_s: float = 1.0) -> None:
        """End windows on time, and read the key table every `keys_interval_s`, until
        cancelled. A failed read is logged and tried again."""
        next_keys = 0.0
        while True:
            self.tick()
            now = time.monotonic()
            if self._keys is not None and self.watch_store and now >= next_keys:
                next_keys = now + self.keys_interval_s
                try:
                    await self.check_api_keys()
                except Exception as exc:  # the database away for a while: next time
                    log.warning("API keys not audited this time", error=str(exc))
            await asyncio.sleep(min(interval_s, self.keys_interval_s))


# ---- the listing ------------------------------------------------------------------------


class EventStore(Protocol):
    """The part of hub.store.Store the audit reads."""

    async def flush(self) -> None: ...

    @property
    def sql(self) -> Any: ...


class KeyEventStore(EventStore, Protocol):
    """The store as the API key watcher reads it: keys and events."""

    async def list_api_keys(self, *, include_revoked: bool = True) -> list[ApiKeyRow]: ...


@dataclass(frozen=True, slots=True)
class AuditRow:
    """One security event as listed."""

    seq: int
    ts_ms: int
    kind: str
    device_id: int | None
    payload: dict[str, Any]

    @property
    def subject(self) -> str:
        """The device or client the event is about ("-": the site)."""
        if self.device_id is not None:
            return f"device {self.device_id}"
        client = self.payload.get("client")
        if client:
            return f"client {client}"
        key_id = self.payload.get("key_id")
        return str(key_id) if key_id else "-"

    @property
    def detail(self) -> str:
        """A one-line summary of the payload (it never holds secrets)."""
        p = self.payload
        if self.kind == "frames_rejected":
            return f"{p.get('reason')} x{p.get('count')}"
        if self.kind == "login_failed":
            reasons = p.get("reasons") or {p.get("reason"): p.get("count", 1)}
            text = f"{p.get('count', 1)} refused: " + ", ".join(
                f"{reason} {n}" for reason, n in sorted(reasons.items(), key=lambda i: -i[1])
            )
            return text + (f" (first: key {p['key_id']})" if p.get("key_id") else "")
        if self.kind in ("api_key_created", "api_key_revoked"):
            maker = p.get("by")
            if isinstance(maker, dict) and maker.get("key_id"):
                who = f"by key {maker['key_id']} ({maker.get('name')})"
            elif p.get("source") == "database":
                who = "by another process (etp apikey)"
            else:
                who = "through the hub"
            return f"{p.get('name')} ({p.get('role')}) {who}"
        if self.kind == "operator_action":
            actor = p.get("by")
            who = (
                f"key {public_key_id(actor.get('key_id'))} ({actor.get('name')})"
                if isinstance(actor, dict)
                else str(actor)
            )
            params = p.get("params") or {}
            extra = f" {params}" if params else ""
            return f"{p.get('action')}{extra} by {who}"
        if self.kind == "device_quarantined":
            return f"flooding: dropped {p.get('dropped')}, quarantined {p.get('quarantine_s')} s"
        if self.kind == "alert_raised":
            return f"{p.get('severity')} {p.get('kind')}: {p.get('message')}"
        return ", ".join(f"{key}={value}" for key, value in sorted(p.items()))

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "seq": self.seq,
            "ts_ms": self.ts_ms,
            "kind": self.kind,
            "device_id": self.device_id,
            "payload": self.payload,
        }


async def list_security_events(
    store: EventStore,
    *,
    since_ms: int | None = None,
    device_id: int | None = None,
    kinds: Iterable[str] = SECURITY_KINDS,
    limit: int = 200,
) -> list[AuditRow]:
    """The most recent `limit` security events (at or after `since_ms`, of one device if
    given), oldest first, by time (events written by other processes sort in by their time)."""
    await store.flush()
    statement = sa.select(EVENTS).where(EVENTS.c.kind.in_(sorted(set(kinds))))
    if since_ms is not None:
        statement = statement.where(EVENTS.c.ts_ms >= since_ms)
    if device_id is not None:
        statement = statement.where(EVENTS.c.device_id == device_id)
    statement = statement.order_by(EVENTS.c.ts_ms.desc(), EVENTS.c.seq.desc()).limit(limit)
    async with store.sql.connect() as connection:
        rows = (await connection.execute(statement)).all()
    return [
        AuditRow(row.seq, row.ts_ms, row.kind, row.device_id, row.payload or {})
        for row in reversed(rows)
    ]
