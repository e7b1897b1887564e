"""Exceptions the store raises: one class per thing a caller can act on."""

from __future__ import annotations

__all__ = [
    "AuctionStateError",
    "DeviceCredentialError",
    "InvalidValueError",
    "StoreClosedError",
    "StoreError",
    "StoreNotStartedError",
    "StoreWriteError",
    "UnknownApiKeyError",
    "UnknownAuctionError",
    "UnknownTradeError",
]


class StoreError(Exception):
    """Base class of every error the store raises."""


class StoreNotStartedError(StoreError):
    """A database method was called before `await store.start()`."""


class StoreClosedError(StoreError):
    """The store was used after `await store.close()`."""


class StoreWriteError(StoreError):
    """A write could not be committed (database unreachable, locked too long, disk full...).

    Nothing of that transaction was written; queued bids/events/metrics stay queued and the
    flusher retries them.
    """


class InvalidValueError(StoreError, ValueError):
    """A caller passed a value the store does not accept (unknown status, bad payload)."""


class UnknownAuctionError(StoreError, LookupError):
    """No auction has the given id."""


class UnknownAlertError(StoreError, LookupError):
    """No alert has the given id."""


class UnknownApiKeyError(StoreError, LookupError):
    """No API key has the given id."""


class UnknownTradeError(StoreError, LookupError):
    """No trade (settlement outbox row) has the given id."""


class AuctionStateError(StoreError):
    """The auction is already closed with a different status."""


class DeviceCredentialError(StoreError):
    """A provisioning change that does not apply (already provisioned, unknown, revoked)."""
