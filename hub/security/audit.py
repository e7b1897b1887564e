"""The security audit log: which events it lists, how floods of rejections become few events,
and the listing `etp audit security` and GET /api/v1/audit/security read from the store.

Security events are ordinary events of the site's log (hub.events): rejected frames (by
device and reason), failed logins seen by the gateway, API keys created and revoked, devices
provisioned, revoked, rotated or quarantined, operator actions and alerts. None carries a
secret: an API key is named by its public part (`etp_<id>`), never by its secret or hash.

A flood must not flood the log: `SecurityAudit` turns rejections and failed logins into at
most one event per key (device and reason, or client address) per window (10 s). The first
one of a quiet key is an event at once (count 1); those that follow within the window are
counted and summed into one event when the window ends (count N, window_s), and so on while
they go on.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import sqlalchemy as sa

from hub.auth.keys import Principal
from hub.events.kinds import EventKind
from hub.store.models import EVENTS, ApiKeyRow
from shared_etp.topics import parse_device_topic

__all__ = [
    "SECURITY_KINDS",
    "AuditRow",
    "SecurityAudit",
    "WindowedCounts",
    "api_key_payload",
    "list_security_events",
    "public_key_id",
    "record_out_of_process",
]

# What the audit lists. Plain strings: the device credentials' kinds are defined by the
# devices area (hub.security.devices) and stored rows of kinds this hub does not know are
# listed all the same.
SECURITY_KINDS: tuple[str, ...] = (
    "frames_rejected",
    "login_failed",
    "api_key_created",
    "api_key_revoked",
    "device_provisioned",
    "device_revoked",
    "device_rotated",
    "device_quarantined",
    "operator_action",
    "alert_raised",
)

WINDOW_S = 10
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
    ) -> None:
        self._emit = emit
        self.window_s = window_s
        self._frames = WindowedCounts(window_s * 1000, clock)
        self._logins = WindowedCounts(window_s * 1000, clock)

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
        kind = EventKind.API_KEY_CREATED if change == "created" else EventKind.API_KEY_REVOKED
        self._emit(kind, **api_key_payload(row, "api", by))

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
        """End windows on time until cancelled."""
        while True:
            await asyncio.sleep(interval_s)
            self.tick()


# ---- the CLI's events and the listing ---------------------------------------------------


class EventStore(Protocol):
    """The part of hub.store.Store the audit writes and reads."""

    def record_event(
        self,
        kind: str,
        *,
        device_id: int | None = None,
        auction_id: int | None = None,
        payload: dict[str, Any] | None = None,
        ts_ms: int,
    ) -> int: ...

    async def flush(self) -> None: ...

    @property
    def sql(self) -> Any: ...


def record_out_of_process(
    store: EventStore, kind: EventKind, *, device_id: int | None = None, **payload: Any
) -> int:
    """Write an event from a process other than the hub (a CLI command), into the same log:
    its seq comes from a block this process reserves (unique, above the hub's current block);
    the store writes it on `flush`/`close`. A running hub does not publish it to its
    subscribers; the log and `etp audit security` have it."""
    return store.record_event(
        kind.value, device_id=device_id, payload=payload or None, ts_ms=int(time.time() * 1000)
    )


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
            text = f"{p.get('reason')} x{p.get('count', 1)}"
            return text + (f" (key {p['key_id']})" if p.get("key_id") else "")
        if self.kind in ("api_key_created", "api_key_revoked"):
            maker = p.get("by")
            who = (
                f"key {maker.get('key_id')} ({maker.get('name')})"
                if isinstance(maker, dict)
                else "CLI"
            )
            return f"{p.get('key_id')} {p.get('name')} ({p.get('role')}) by {who}"
        if self.kind == "operator_action":
            actor = p.get("by") or {}
            return f"{p.get('action')} by {actor.get('name') if isinstance(actor, dict) else actor}"
        if self.kind == "device_quarantined":
            return f"dropped {p.get('dropped')}, {p.get('quarantine_s')} s"
        if self.kind == "alert_raised":
            return f"{p.get('kind') or p.get('rule')}: {p.get('message') or p.get('title') or ''}"
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
