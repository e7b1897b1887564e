"""Persistence of the hub: SQLModel tables, Alembic migrations and the async Store."""

from hub.store.errors import (
    AuctionStateError,
    DeviceCredentialError,
    InvalidValueError,
    StoreClosedError,
    StoreError,
    StoreNotStartedError,
    StoreWriteError,
    UnknownAlertError,
    UnknownApiKeyError,
    UnknownAuctionError,
    UnknownTradeError,
)
from hub.store.migrate import current_revision, head_revision, upgrade_database
from hub.store.models import (
    ALERT_KINDS,
    API_KEY_ROLES,
    AlertRow,
    ApiKeyRow,
    AuctionRow,
    BidRow,
    DeviceCredentialRow,
    DeviceRow,
    EventRow,
    MetricRow,
    SettlementRow,
    TradeRow,
)
from hub.store.queries import InvalidQueryError, ListQuery, Page
from hub.store.store import Store
from hub.store.urls import database_url_for, resolve_database_url

__all__ = [
    "ALERT_KINDS",
    "API_KEY_ROLES",
    "AlertRow",
    "ApiKeyRow",
    "AuctionRow",
    "AuctionStateError",
    "BidRow",
    "DeviceCredentialError",
    "DeviceCredentialRow",
    "DeviceRow",
    "EventRow",
    "InvalidQueryError",
    "InvalidValueError",
    "ListQuery",
    "MetricRow",
    "Page",
    "SettlementRow",
    "Store",
    "StoreClosedError",
    "StoreError",
    "StoreNotStartedError",
    "StoreWriteError",
    "TradeRow",
    "UnknownAlertError",
    "UnknownApiKeyError",
    "UnknownAuctionError",
    "UnknownTradeError",
    "current_revision",
    "database_url_for",
    "head_revision",
    "resolve_database_url",
    "upgrade_database",
]
