"""Checks of values at the store's API, so that a bad value fails its call, not a later batch."""

from __future__ import annotations

import json
import time
from typing import Any

import sqlalchemy as sa

from hub.store.errors import InvalidValueError

__all__ = ["INT32", "INT64", "check_ints", "check_json", "check_text", "now_ms", "to_row"]

INT64 = 1 << 63
INT32 = 1 << 31


def now_ms() -> int:
    """Wall-clock milliseconds (for rows whose caller gave no time)."""
    return time.time_ns() // 1_000_000


def to_row(cls: Any, row: sa.Row[Any]) -> Any:
    """Build a plain row type (AuctionRow, TradeRow...) from a result row of the same columns."""
    return cls(**row._mapping)


def check_ints(bits: int = 64, **values: int | None) -> None:
    """Refuse a value that is not an int or does not fit its column (at the call, not later
    in a batch where one bad row would fail the whole write). None is allowed."""
    limit = INT64 if bits == 64 else INT32
    for name, value in values.items():
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool):
            raise InvalidValueError(f"{name} must be an int, not {type(value).__name__}")
        if not -limit <= value < limit:
            raise InvalidValueError(f"{name}={value} does not fit a {bits}-bit column")


def check_text(name: str, value: object, max_length: int) -> None:
    """Refuse anything but a non-empty str of at most `max_length` characters."""
    if not isinstance(value, str) or not value or len(value) > max_length:
        raise InvalidValueError(f"{name} must be a non-empty str of at most {max_length} chars")


_JSON_SCALARS = frozenset((str, int, float, bool, type(None)))


def check_json(what: str, value: dict[str, Any] | None) -> None:
    """Refuse a value that is not None or a JSON-encodable dict."""
    if value is None:
        return
    if not isinstance(value, dict):
        raise InvalidValueError(f"{what} must be a dict, not {type(value).__name__}")
    # Fast path for the usual flat payload (an event on the trading path): ~4x cheaper than
    # encoding it; anything else is checked by encoding it.
    if all(type(key) is str for key in value) and all(
        type(item) in _JSON_SCALARS for item in value.values()
    ):
        return
    try:
        json.dumps(value)
    except (TypeError, ValueError) as err:
        raise InvalidValueError(f"{what} is not JSON-encodable: {err}") from err
