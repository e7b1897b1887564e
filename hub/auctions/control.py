"""Operator controls of the market: pause trading, pause an aggregator, change its parameters
live, take a battery out of service. Pure state and validation (no I/O, no clock): the
scheduler and the buyers read it at their next tick, the driver records each command as an
`operator_action` event through the `record` callback it is handed.

The state lives in memory and its history in the event log: at start the driver replays the
stored `operator_action` events (`Operator.restore`), so a restarted hub keeps trading paused,
aggregators paused or re-parameterised and batteries out of service as the operators left them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from hub.buyers.aggregator import Aggregator
from hub.buyers.bidding import Buyers
from hub.devices import Registry

__all__ = [
    "LIVE_CONFIG_FIELDS",
    "ControlError",
    "InvalidChangeError",
    "Operator",
    "OperatorMark",
    "TradingControls",
    "UnknownTargetError",
    "validate_changes",
]

MAX_INT = 2**31 - 1  # prices, budgets and energies stay within the wire's signed 32 bits
# AggregatorConfig fields an operator may change while trading (identity and strategy stay)
LIVE_CONFIG_FIELDS = (
    "budget_mc",
    "energy_requirement_wh",
    "max_price_mc",
    "min_purchase_wh",
    "pace_step_wh",
)
# strategy parameters with a range narrower than "not negative": name -> (low, high)
_PARAM_RANGES: dict[str, tuple[float, float]] = {
    "target_success": (0.0, 1.0),
    "initial": (0.0, 1.0),
    "window": (1, 1000),
    "max_raise_steps": (0, 100),
    "patience_rounds": (0, 100),
    "margin_bp": (0, 100_000),
    "default_margin_bp": (0, 100_000),
    "falling_share_bp": (0, 10_000),
}


class ControlError(Exception):
    """An operator command that cannot be carried out."""


class UnknownTargetError(ControlError, LookupError):
    """The command names an aggregator or a battery this hub does not know."""


class InvalidChangeError(ControlError, ValueError):
    """A parameter change names an unknown or unchangeable parameter, or a bad value."""


@dataclass(frozen=True)
class OperatorMark:
    """Who set a control and since when (ms since the epoch)."""

    by: dict[str, Any]
    since_ms: int

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready view."""
        return {"by": self.by, "since_ms": self.since_ms}


class TradingControls:
    """What the scheduler obeys: the whole site paused, batteries out of service."""

    def __init__(self) -> None:
        self.paused: OperatorMark | None = None
        self.out_of_service: dict[int, OperatorMark] = {}
        # batteries quarantined for flooding (hub.devices.flood): device -> until ms
        self.quarantined: dict[int, int] = {}
        # hub workers: batteries being handed to another worker (no new auction here)
        self.draining: set[int] = set()

    def view(self) -> dict[str, Any]:
        """The site's trading state for /api/v1/status."""
        if self.paused is None:
            return {"paused": False, "by": None, "since_ms": None}
        return {"paused": True, **self.paused.as_dict()}


def _check_number(label: str, value: Any, current: Any) -> int | float:
    """`value` if it has the type of `current` (an int where an int is, a number where a
    float is) and lies in its range; else InvalidChangeError saying what is allowed."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidChangeError(f"{label} must be a number, got {value!r}")
    if isinstance(current, int) and not isinstance(value, int):
        if not float(value).is_integer():
            raise InvalidChangeError(f"{label} must be a whole number, got {value!r}")
        value = int(value)
    if isinstance(current, float):
        value = float(value)
    low, high = _PARAM_RANGES.get(label.rpartition(".")[2], (0, MAX_INT))
    if not low <= value <= high:
        raise InvalidChangeError(f"{label} must be in {low}..{high}, got {value!r}")
    return value


def validate_changes(agg: Aggregator, changes: Mapping[str, Any]) -> dict[str, Any]:
    """The checked (and normalised) changes for `agg`: only LIVE_CONFIG_FIELDS (ints > 0) and
    `strategy_params` holding parameters of its strategy (numbers in range). Raises
    InvalidChangeError naming the first bad one."""
    if not changes:
        raise InvalidChangeError(
            f"nothing to change: send any of {', '.join(LIVE_CONFIG_FIELDS)} or strategy_params"
        )
    checked: dict[str, Any] = {}
    for name, value in changes.items():
        if name == "strategy_params":
            checked[name] = _validate_params(agg, value)
            continue
        if name not in LIVE_CONFIG_FIELDS:
            raise InvalidChangeError(
                f"{name!r} cannot be changed live; changeable: {', '.join(LIVE_CONFIG_FIELDS)}, "
                "strategy_params"
            )
        number = _check_number(name, value, 0)
        if number <= 0:
            raise InvalidChangeError(f"{name} must be > 0, got {value!r}")
        checked[name] = number
    return checked


def _validate_params(agg: Aggregator, params: Any) -> dict[str, Any]:
    strategy = agg.strategy
    if not isinstance(params, dict) or not params:
        raise InvalidChangeError("strategy_params must be a non-empty object")
    known: dict[str, Any] = {
        field.name: getattr(strategy, field.name)
        for field in dataclasses.fields(strategy)  # type: ignore[arg-type]
        if field.name != "name"
    } if dataclasses.is_dataclass(strategy) else {}
    checked = {}
    for name, value in params.items():
        if name not in known:
            raise InvalidChangeError(
                f"strategy {agg.config.strategy!r} has no parameter {name!r}; its parameters: "
                f"{', '.join(sorted(known)) or 'none'}"
            )
        checked[name] = _check_number(f"strategy_params.{name}", value, known[name])
    return checked


def _apply(agg: Aggregator, checked: Mapping[str, Any]) -> None:
    """Apply validated changes to the live aggregator (its next bid reads them; budget and
    requirement due are recomputed at the scheduler's next pacing)."""
    for name, value in checked.items():
        if name == "strategy_params":
            for param, number in value.items():
                setattr(agg.strategy, param, number)
            agg.config.strategy_params = {**agg.config.strategy_params, **value}
        else:
            setattr(agg.config, name, value)


class Operator:
    """Carries out operator commands against the market's live state and records each one.

    `record(action, device_id, by, params)` writes the operator_action event."""

    def __init__(
        self,
        controls: TradingControls,
        buyers: Buyers,
        registry: Registry,
        record: Callable[[str, int | None, dict[str, Any], dict[str, Any]], None],
    ) -> None:
        self.controls = controls
        self.buyers = buyers
        self.registry = registry
        self.record = record

    # ---- the site ------------------------------------------------------------------------
    def pause_trading(self, by: dict[str, Any], now_ms: int) -> dict[str, Any]:
        """No new auctions from the next scheduler tick (open ones finish)."""
        if self.controls.paused is None:
            self.controls.paused = OperatorMark(by, now_ms)
        self.record("pause_trading", None, by, {})
        return self.controls.view()

    def resume_trading(self, by: dict[str, Any]) -> dict[str, Any]:
        """Auctions open again from the next scheduler tick."""
        self.controls.paused = None
        self.record("resume_trading", None, by, {})
        return self.controls.view()

    # ---- aggregators ---------------------------------------------------------------------
    def aggregator(self, aggregator_id: int) -> Aggregator:
        """The live aggregator, or UnknownTargetError."""
        agg = self.buyers.by_id.get(aggregator_id)
        if agg is None:
            raise UnknownTargetError(f"no aggregator {aggregator_id} at this site")
        return agg

    def aggregator_view(self, agg: Aggregator) -> dict[str, Any]:
        """An aggregator as /api/v1/aggregators shows it."""
        return {
            "config": dataclasses.asdict(agg.config),
            "standing": agg.state.snapshot(),
            "paused": agg.aggregator_id in self.buyers.paused,
        }

    def pause_aggregator(self, by: dict[str, Any], aggregator_id: int) -> dict[str, Any]:
        """The aggregator places no bids from now on (its held bids stand)."""
        agg = self.aggregator(aggregator_id)
        self.buyers.paused.add(aggregator_id)
        self.record("pause_aggregator", None, by, {"aggregator_id": aggregator_id})
        return self.aggregator_view(agg)

    def resume_aggregator(self, by: dict[str, Any], aggregator_id: int) -> dict[str, Any]:
        """The aggregator bids again."""
        agg = self.aggregator(aggregator_id)
        self.buyers.paused.discard(aggregator_id)
        self.record("resume_aggregator", None, by, {"aggregator_id": aggregator_id})
        return self.aggregator_view(agg)

    def update_aggregator(
        self, by: dict[str, Any], aggregator_id: int, changes: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Change live parameters (see validate_changes); all or nothing."""
        agg = self.aggregator(aggregator_id)
        checked = validate_changes(agg, changes)
        _apply(agg, checked)
        self.record("update_aggregator", None, by, {"aggregator_id": aggregator_id, **checked})
        return self.aggregator_view(agg)

    # ---- batteries -----------------------------------------------------------------------
    def set_in_service(
        self, by: dict[str, Any], device_id: int, in_service: bool, now_ms: int
    ) -> dict[str, Any]:
        """Out of service: the scheduler opens no auction for the battery (its current one
        finishes); in service: it is auctioned again."""
        if device_id not in self.registry.devices:
            raise UnknownTargetError(f"no battery {device_id} known at this site")
        if in_service:
            self.controls.out_of_service.pop(device_id, None)
        elif device_id not in self.controls.out_of_service:
            self.controls.out_of_service[device_id] = OperatorMark(by, now_ms)
        action = "battery_in_service" if in_service else "battery_out_of_service"
        self.record(action, device_id, by, {"device_id": device_id})
        return self.battery_service(device_id)

    def restore(
        self, action: str, device_id: int | None, by: dict[str, Any], params: dict[str, Any],
        at_ms: int,
    ) -> None:
        """Apply one stored operator_action again, as it was when given, without recording
        it. A battery need not be known yet (it comes back online later). Raises ControlError
        when it cannot apply (the aggregator is gone, a parameter no longer fits)."""
        aggregator_id = int(params.get("aggregator_id") or 0)
        if action == "pause_trading":
            self.controls.paused = self.controls.paused or OperatorMark(by, at_ms)
        elif action == "resume_trading":
            self.controls.paused = None
        elif action in ("pause_aggregator", "resume_aggregator"):
            self.aggregator(aggregator_id)  # known?
            if action == "pause_aggregator":
                self.buyers.paused.add(aggregator_id)
            else:
                self.buyers.paused.discard(aggregator_id)
        elif action == "update_aggregator":
            agg = self.aggregator(aggregator_id)
            changes = {k: v for k, v in params.items() if k != "aggregator_id"}
            _apply(agg, validate_changes(agg, changes))
        elif action == "battery_out_of_service" and device_id is not None:
            self.controls.out_of_service.setdefault(device_id, OperatorMark(by, at_ms))
        elif action == "battery_in_service" and device_id is not None:
            self.controls.out_of_service.pop(device_id, None)
        else:
            raise InvalidChangeError(f"unknown operator action {action!r}")

    def battery_service(self, device_id: int) -> dict[str, Any]:
        """`in_service` of one battery (and who took it out, since when)."""
        mark = self.controls.out_of_service.get(device_id)
        if mark is None:
            return {"device_id": device_id, "in_service": True}
        return {"device_id": device_id, "in_service": False, "out_of_service": mark.as_dict()}
