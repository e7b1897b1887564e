"""SQLModel tables of the hub store and the plain row types the Store returns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

__all__ = [
    "AGGREGATOR_SHARES",
    "ALERTS",
    "ALERT_KINDS",
    "ALERT_SEVERITIES",
    "ALERT_STATES",
    "API_KEYS",
    "API_KEY_ROLES",
    "AUCTIONS",
    "AUCTION_CLOSED_STATUSES",
    "AUCTION_STATUSES",
    "BIDS",
    "BID_OUTCOMES",
    "DEVICES",
    "DEVICE_CREDENTIALS",
    "DEVICE_CREDENTIAL_STATES",
    "DEVICE_LEASES",
    "EVENTS",
    "EVENT_SEQUENCE",
    "HUB_WORKERS",
    "METRICS",
    "SETTLEMENTS",
    "SETTLEMENT_STATUSES",
    "TRADES",
    "TRADE_STATUSES",
    "WALLETS",
    "Alert",
    "AlertRow",
    "ApiKey",
    "ApiKeyRow",
    "Auction",
    "AuctionRow",
    "Bid",
    "BidRow",
    "Device",
    "DeviceCredential",
    "DeviceCredentialRow",
    "DeviceRow",
    "Event",
    "EventRow",
    "EventSequence",
    "Metric",
    "MetricRow",
    "Settlement",
    "SettlementRow",
    "StoreModel",
    "Trade",
    "TradeRow",
    "Wallet",
    "WalletRow",
    "alert_view",
]

AUCTION_STATUSES = ("open", "cleared", "no_sale", "terminated")
AUCTION_CLOSED_STATUSES = ("cleared", "no_sale", "terminated")
BID_OUTCOMES = ("sent", "accepted", "rejected", "confirmed")
# pending: waiting for the settlement worker; submitted: a ledger transaction was sent (its
# signature is stored, a worker restarting must check it); settled: final on the ledger;
# failed: given up (error says why). A settled trade's dispute: disputed (open), refunded (the
# buyer got a refund), upheld (found unfounded) (hub/settlement/disputes.py).
SETTLEMENT_STATUSES = (
    "pending", "submitted", "settled", "failed", "disputed", "refunded", "upheld"
)
# recorded: written before its BidConfirm leaves the hub, the battery's answer not in yet;
# verified: the battery acknowledged the confirm (or said it committed it when asked): the trade
# counts and its settlement is queued in the same transaction; unverified: the battery's answer
# never came, the hub asks it until it knows; void: the battery did not commit it.
TRADE_STATUSES = ("recorded", "verified", "unverified", "void")
# viewer: reads the site's state; operator: a viewer that may also change it (keys, later more).
API_KEY_ROLES = ("viewer", "operator")
# What an operator is alerted to (hub.alerts.rules raises them); open until acknowledged.
ALERT_KINDS = (
    "device_failure", "device_offline", "device_quarantined", "deadline_misses",
    "rejected_frames", "settlement_failed", "trade_unresolvable",
)
ALERT_SEVERITIES = ("critical", "warning")
ALERT_STATES = ("open", "acknowledged")
# A provisioned battery's credentials are active until revoked (then its frames are refused).
DEVICE_CREDENTIAL_STATES = ("active", "revoked")

# Row ids of high-volume tables are 64-bit on PostgreSQL; SQLite needs INTEGER for rowid aliases.
# Ids that come from the network (device, bidder, auction referenced by a bid) are u32 on the
# wire, so they are BIGINT; auction ids the store allocates itself fit INTEGER.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class StoreModel(SQLModel):
    """Base of the store's tables: its own MetaData, so Alembic sees only these tables."""

    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)


class Device(StoreModel, table=True):
    """Last known state of one battery (device ids are unique within a site)."""

    __tablename__ = "devices"

    site: str = Field(sa_column=sa.Column(sa.String(64), primary_key=True))
    device_id: int = Field(sa_column=sa.Column(sa.BigInteger(), primary_key=True))
    online: bool = Field(default=False)
    health: int | None = None
    energy_total_wh: int | None = Field(default=None, sa_type=sa.BigInteger())
    energy_remaining_wh: int | None = Field(default=None, sa_type=sa.BigInteger())
    reserve_mc: int | None = Field(default=None, sa_type=sa.BigInteger())
    pct_for_sale: int | None = None
    soc: int | None = None
    voltage_mv: int | None = None
    first_seen_ms: int = Field(sa_type=sa.BigInteger())
    last_seen_ms: int = Field(sa_type=sa.BigInteger())


class Auction(StoreModel, table=True):
    """One auction of one lot of a battery's energy."""

    __tablename__ = "auctions"
    __table_args__ = (
        sa.Index("ix_auctions_status", "status"),
        # list queries (hub.store.queries): time ranges and per-device pages, in key order
        sa.Index("ix_auctions_opened_ms_id", "opened_ms", "id"),
        sa.Index("ix_auctions_device_id_id", "device_id", "id"),
        {"sqlite_autoincrement": True},
    )

    id: int | None = Field(default=None, primary_key=True)
    device_id: int = Field(sa_type=sa.BigInteger())
    site: str = Field(sa_type=sa.String(64))
    mechanism: str = Field(sa_type=sa.String(32))
    lot_wh: int = Field(sa_type=sa.BigInteger())
    reserve_mc: int = Field(sa_type=sa.BigInteger())
    status: str = Field(default="open", sa_type=sa.String(16))
    clearing_price_mc: int | None = Field(default=None, sa_type=sa.BigInteger())
    winner_id: int | None = Field(default=None, sa_type=sa.BigInteger())
    energy_wh: int | None = Field(default=None, sa_type=sa.BigInteger())
    opened_ms: int = Field(sa_type=sa.BigInteger())
    closed_ms: int | None = Field(default=None, sa_type=sa.BigInteger())


class Bid(StoreModel, table=True):
    """One bid as seen by the hub (sent, accepted, rejected or confirmed); written in batches."""

    __tablename__ = "bids"
    __table_args__ = (sa.Index("ix_bids_auction_id", "auction_id"),)

    id: int | None = Field(
        default=None, sa_column=sa.Column(BigId, primary_key=True, autoincrement=True)
    )
    auction_id: int = Field(sa_type=sa.BigInteger())
    bidder_id: int = Field(sa_type=sa.BigInteger())
    price_mc: int = Field(sa_type=sa.BigInteger())
    energy_wh: int = Field(sa_type=sa.BigInteger())
    round: int
    outcome: str = Field(sa_type=sa.String(16))
    reason: int | None = None
    ts_ms: int = Field(sa_type=sa.BigInteger())


class Trade(StoreModel, table=True):
    """A trade: at most one per auction, written before BidConfirm is sent; it counts only once
    the battery proved it (status 'verified', see TRADE_STATUSES)."""

    __tablename__ = "trades"
    __table_args__ = (
        sa.UniqueConstraint("auction_id"),
        sa.Index("ix_trades_status", "status"),
        # list queries (hub.store.queries): time ranges, per-device and per-bidder pages
        sa.Index("ix_trades_confirmed_ms_id", "confirmed_ms", "id"),
        sa.Index("ix_trades_device_id_id", "device_id", "id"),
        sa.Index("ix_trades_bidder_id_id", "bidder_id", "id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    auction_id: int = Field(foreign_key="auctions.id")
    device_id: int = Field(sa_type=sa.BigInteger())
    bidder_id: int = Field(sa_type=sa.BigInteger())
    price_mc: int = Field(sa_type=sa.BigInteger())
    energy_wh: int = Field(sa_type=sa.BigInteger())
    reserve_mc: int = Field(sa_type=sa.BigInteger())
    confirmed_ms: int = Field(sa_type=sa.BigInteger())
    status: str = Field(default="recorded", sa_type=sa.String(16))
    # the signed frames that verified it: the hub's BidConfirm (or Terminate asking) and the
    # battery's BidAccept, as sent and received (a dispute checks them against its audit trail)
    evidence_request: bytes | None = Field(default=None, sa_type=sa.LargeBinary())
    evidence_answer: bytes | None = Field(default=None, sa_type=sa.LargeBinary())


class Settlement(StoreModel, table=True):
    """Settlement outbox: one row per trade, drained by the settlement worker."""

    __tablename__ = "settlements"
    __table_args__ = (sa.Index("ix_settlements_status", "status"),)

    trade_id: int = Field(
        sa_column=sa.Column(
            sa.Integer(), sa.ForeignKey("trades.id"), primary_key=True, autoincrement=False
        )
    )
    status: str = Field(default="pending", sa_type=sa.String(16))
    attempts: int = 0
    signature: str | None = Field(default=None, sa_type=sa.String(128))
    error: str | None = Field(default=None, sa_type=sa.Text())
    updated_ms: int = Field(sa_type=sa.BigInteger())


class Event(StoreModel, table=True):
    """An audit event (anything the dashboard shows in its log); written in batches."""

    __tablename__ = "events"
    __table_args__ = (
        # "after seq N" reads: all kinds through ix_events_seq, some kinds through this one
        sa.Index("ix_events_kind_seq", "kind", "seq"),
        sa.Index("ix_events_seq", "seq", unique=True),
        # list queries (hub.store.queries): time ranges and per-device pages, in seq order
        sa.Index("ix_events_ts_ms_seq", "ts_ms", "seq"),
        sa.Index("ix_events_device_id_seq", "device_id", "seq"),
    )

    id: int | None = Field(
        default=None, sa_column=sa.Column(BigId, primary_key=True, autoincrement=True)
    )
    # Site-wide sequence number: strictly increasing in the order events were emitted by one
    # hub, never reused (blocks are reserved in event_sequence before use; gaps are allowed).
    seq: int = Field(sa_column=sa.Column(sa.BigInteger(), nullable=False))
    kind: str = Field(sa_type=sa.String(64))
    device_id: int | None = Field(default=None, sa_type=sa.BigInteger())
    auction_id: int | None = Field(default=None, sa_type=sa.BigInteger())
    payload: dict[str, Any] | None = Field(default=None, sa_type=sa.JSON())
    ts_ms: int = Field(sa_type=sa.BigInteger())


class EventSequence(StoreModel, table=True):
    """Highest event sequence number reserved so far (one row per sequence, name 'events').

    Written, and committed, before any number of a reserved block is handed out: a restart
    (even after kill -9) starts above it, so a number a client may have seen is never reused.
    """

    __tablename__ = "event_sequence"

    name: str = Field(sa_column=sa.Column(sa.String(32), primary_key=True))
    reserved_through: int = Field(sa_column=sa.Column(sa.BigInteger(), nullable=False))


class Metric(StoreModel, table=True):
    """One sample of a named metric with optional labels; written in batches."""

    __tablename__ = "metrics"
    __table_args__ = (sa.Index("ix_metrics_name_ts_ms", "name", "ts_ms"),)

    id: int | None = Field(
        default=None, sa_column=sa.Column(BigId, primary_key=True, autoincrement=True)
    )
    name: str = Field(sa_type=sa.String(128))
    value: float
    labels: dict[str, Any] | None = Field(default=None, sa_type=sa.JSON())
    ts_ms: int = Field(sa_type=sa.BigInteger())


class ApiKey(StoreModel, table=True):
    """An API key of the HTTP gateway: its secret is never stored, only its SHA-256."""

    __tablename__ = "api_keys"
    __table_args__ = ({"sqlite_autoincrement": True},)  # ids of revoked keys are never reused

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(sa_type=sa.String(64))
    role: str = Field(sa_type=sa.String(16))
    key_hash: str = Field(sa_type=sa.String(64))  # hex SHA-256 of the key's secret part
    created_ms: int = Field(sa_type=sa.BigInteger())
    revoked_ms: int | None = Field(default=None, sa_type=sa.BigInteger())
    last_used_ms: int | None = Field(default=None, sa_type=sa.BigInteger())


class DeviceCredential(StoreModel, table=True):
    """A provisioned battery: which generation of its HMAC key is current, the hash of its
    broker password (never the password), its owner and its state (active | revoked)."""

    __tablename__ = "device_credentials"

    site: str = Field(sa_column=sa.Column(sa.String(64), primary_key=True))
    device_id: int = Field(sa_column=sa.Column(sa.BigInteger(), primary_key=True))
    state: str = Field(sa_type=sa.String(16))
    key_generation: int = Field(sa_type=sa.Integer())
    broker_password_hash: str = Field(sa_type=sa.String(256))
    owner: str | None = Field(default=None, sa_type=sa.String(64))  # base58 Solana pubkey
    created_ms: int = Field(sa_type=sa.BigInteger())
    rotated_ms: int | None = Field(default=None, sa_type=sa.BigInteger())
    revoked_ms: int | None = Field(default=None, sa_type=sa.BigInteger())


class Alert(StoreModel, table=True):
    """Something an operator must look at. One open alert per `dedup_key`: a repeat while it
    is open counts (`count`, `last_ms`) instead of adding a row; acknowledged, it stays as a
    record and the next occurrence opens a new one."""

    __tablename__ = "alerts"
    __table_args__ = (
        sa.Index("ix_alerts_state_id", "state", "id"),
        sa.Index("ix_alerts_kind_id", "kind", "id"),
        sa.Index("ix_alerts_dedup_key_state", "dedup_key", "state"),
        {"sqlite_autoincrement": True},
    )

    id: int | None = Field(default=None, primary_key=True)
    kind: str = Field(sa_type=sa.String(32))
    severity: str = Field(sa_type=sa.String(16))
    dedup_key: str = Field(sa_type=sa.String(96))
    device_id: int | None = Field(default=None, sa_type=sa.BigInteger())
    message: str = Field(sa_type=sa.String(256))
    detail: dict[str, Any] | None = Field(default=None, sa_type=sa.JSON())
    raised_ms: int = Field(sa_type=sa.BigInteger())
    last_ms: int = Field(sa_type=sa.BigInteger())
    count: int = Field(default=1)
    state: str = Field(sa_type=sa.String(16))
    acknowledged_ms: int | None = Field(default=None, sa_type=sa.BigInteger())
    acknowledged_by_key_id: int | None = Field(default=None)
    acknowledged_by_name: str | None = Field(default=None, sa_type=sa.String(64))


# Rows handed out by the Store: plain immutable values, safe to keep after the session ends.


@dataclass(frozen=True, slots=True)
class DeviceRow:
    """A device as stored (None: never reported)."""

    device_id: int
    site: str
    online: bool
    health: int | None
    energy_total_wh: int | None
    energy_remaining_wh: int | None
    reserve_mc: int | None
    pct_for_sale: int | None
    soc: int | None
    voltage_mv: int | None
    first_seen_ms: int
    last_seen_ms: int


@dataclass(frozen=True, slots=True)
class AuctionRow:
    """An auction as stored; status is one of AUCTION_STATUSES."""

    id: int
    device_id: int
    site: str
    mechanism: str
    lot_wh: int
    reserve_mc: int
    status: str
    clearing_price_mc: int | None
    winner_id: int | None
    energy_wh: int | None
    opened_ms: int
    closed_ms: int | None


@dataclass(frozen=True, slots=True)
class BidRow:
    """A bid as stored; outcome is one of BID_OUTCOMES."""

    id: int
    auction_id: int
    bidder_id: int
    price_mc: int
    energy_wh: int
    round: int
    outcome: str
    reason: int | None
    ts_ms: int


@dataclass(frozen=True, slots=True)
class TradeRow:
    """A trade; status is one of TRADE_STATUSES (only 'verified' ones count)."""

    id: int
    auction_id: int
    device_id: int
    bidder_id: int
    price_mc: int
    energy_wh: int
    reserve_mc: int
    confirmed_ms: int
    status: str = "recorded"
    evidence_request: bytes | None = None
    evidence_answer: bytes | None = None


@dataclass(frozen=True, slots=True)
class SettlementRow:
    """The settlement state of one trade; status is one of SETTLEMENT_STATUSES."""

    trade_id: int
    status: str
    attempts: int
    signature: str | None
    error: str | None
    updated_ms: int


@dataclass(frozen=True, slots=True)
class EventRow:
    """An audit event; payload is a JSON object (empty dict when none was given)."""

    id: int
    seq: int
    kind: str
    device_id: int | None
    auction_id: int | None
    payload: dict[str, Any]
    ts_ms: int


@dataclass(frozen=True, slots=True)
class MetricRow:
    """One metric sample."""

    id: int
    name: str
    value: float
    labels: dict[str, Any]
    ts_ms: int


@dataclass(frozen=True, slots=True)
class ApiKeyRow:
    """An API key as stored (the hash of its secret, never the secret); role is one of
    API_KEY_ROLES; revoked_ms is None while the key is valid."""

    id: int
    name: str
    role: str
    key_hash: str
    created_ms: int
    revoked_ms: int | None
    last_used_ms: int | None

    @property
    def revoked(self) -> bool:
        """True once the key was revoked (it is refused from then on)."""
        return self.revoked_ms is not None


class Wallet(StoreModel, table=True):
    """The ledger wallet (a public key, base58) of a party the hub settles for: an aggregator
    (`role` aggregator, `party_id` its bidder id) or a battery's owner (`role` battery,
    `party_id` its device id). Only public keys: the parties hold their own secret keys."""

    __tablename__ = "wallets"

    site: str = Field(sa_type=sa.String(64), primary_key=True)
    role: str = Field(sa_type=sa.String(16), primary_key=True)
    party_id: int = Field(sa_type=sa.BigInteger(), primary_key=True)
    pubkey: str = Field(sa_type=sa.String(44))
    updated_ms: int = Field(sa_type=sa.BigInteger())


class HubWorker(StoreModel, table=True):
    """A hub worker process of a site (`etp hub --worker`): its heartbeat. A worker whose
    `seen_ms` is older than the lease time is gone, and its batteries move (hub/cluster)."""

    __tablename__ = "hub_workers"

    worker_id: str = Field(sa_type=sa.String(64), primary_key=True)
    site: str = Field(sa_type=sa.String(64))
    started_ms: int = Field(sa_type=sa.BigInteger())
    seen_ms: int = Field(sa_type=sa.BigInteger())
    http_url: str | None = Field(default=None, sa_type=sa.String(256), nullable=True)


class DeviceLease(StoreModel, table=True):
    """Which worker owns a battery until `expires_ms`: taken and renewed with one conditional
    statement, so at most one worker holds a live lease on a battery (hub/cluster)."""

    __tablename__ = "device_leases"

    site: str = Field(sa_type=sa.String(64), primary_key=True)
    device_id: int = Field(sa_type=sa.BigInteger(), primary_key=True)
    worker_id: str = Field(sa_type=sa.String(64))
    expires_ms: int = Field(sa_type=sa.BigInteger())


class AggregatorShare(StoreModel, table=True):
    """One worker's part of an aggregator's trading period (spent, bought, won, lost): every
    worker adds the others' parts to its own, so budgets hold across workers (hub/cluster)."""

    __tablename__ = "aggregator_shares"

    site: str = Field(sa_type=sa.String(64), primary_key=True)
    period: int = Field(sa_type=sa.BigInteger(), primary_key=True)
    aggregator_id: int = Field(sa_type=sa.BigInteger(), primary_key=True)
    worker_id: str = Field(sa_type=sa.String(64), primary_key=True)
    spent_mc: int = Field(sa_type=sa.BigInteger())
    bought_wh: int = Field(sa_type=sa.BigInteger())
    wins: int = Field(sa_type=sa.BigInteger())
    losses: int = Field(sa_type=sa.BigInteger())
    updated_ms: int = Field(sa_type=sa.BigInteger())


@dataclass(frozen=True, slots=True)
class WalletRow:
    """A registered wallet: see Wallet."""

    site: str
    role: str
    party_id: int
    pubkey: str
    updated_ms: int


@dataclass(frozen=True, slots=True)
class DeviceCredentialRow:
    """A provisioned battery's credentials as stored (see DeviceCredential)."""

    site: str
    device_id: int
    state: str
    key_generation: int
    broker_password_hash: str
    owner: str | None
    created_ms: int
    rotated_ms: int | None
    revoked_ms: int | None

    @property
    def active(self) -> bool:
        """True until the device is revoked."""
        return self.state == "active"


@dataclass(frozen=True, slots=True)
class AlertRow:
    """An alert as stored (see Alert); `view()` is what the API and the event log show."""

    id: int
    kind: str
    severity: str
    dedup_key: str
    device_id: int | None
    message: str
    detail: dict[str, Any] | None
    raised_ms: int
    last_ms: int
    count: int
    state: str
    acknowledged_ms: int | None
    acknowledged_by_key_id: int | None
    acknowledged_by_name: str | None

    def view(self) -> dict[str, Any]:
        """JSON-ready: the acknowledging key as {"key_id", "name"} (or None)."""
        return alert_view(lambda name: getattr(self, name))


def alert_view(column: Any) -> dict[str, Any]:
    """An alert's API shape from a column getter (a row's attribute or a mapping's item)."""
    by_id = column("acknowledged_by_key_id")
    return {
        "id": column("id"),
        "kind": column("kind"),
        "severity": column("severity"),
        "device_id": column("device_id"),
        "message": column("message"),
        "raised_ms": column("raised_ms"),
        "last_ms": column("last_ms"),
        "count": column("count"),
        "state": column("state"),
        "acknowledged_ms": column("acknowledged_ms"),
        "acknowledged_by": (
            None if by_id is None else {"key_id": by_id, "name": column("acknowledged_by_name")}
        ),
        "detail": column("detail") or {},
    }


# Core tables of the models above (what the store's statements are built on).
DEVICES = StoreModel.metadata.tables["devices"]
AUCTIONS = StoreModel.metadata.tables["auctions"]
BIDS = StoreModel.metadata.tables["bids"]
TRADES = StoreModel.metadata.tables["trades"]
SETTLEMENTS = StoreModel.metadata.tables["settlements"]
EVENTS = StoreModel.metadata.tables["events"]
EVENT_SEQUENCE = StoreModel.metadata.tables["event_sequence"]
METRICS = StoreModel.metadata.tables["metrics"]
API_KEYS = StoreModel.metadata.tables["api_keys"]
DEVICE_CREDENTIALS = StoreModel.metadata.tables["device_credentials"]
ALERTS = StoreModel.metadata.tables["alerts"]
WALLETS = StoreModel.metadata.tables["wallets"]
HUB_WORKERS = StoreModel.metadata.tables["hub_workers"]
DEVICE_LEASES = StoreModel.metadata.tables["device_leases"]
AGGREGATOR_SHARES = StoreModel.metadata.tables["aggregator_shares"]
