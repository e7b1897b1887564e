"""A circuit breaker for a Solana cluster: after repeated ClusterUnavailableError it stops
sending requests for a cool-down that grows while the cluster stays down, then lets one probe
through; the state is pure (the clock is passed in) and a thin async wrapper applies it."""

from __future__ import annotations

import enum
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.transaction import VersionedTransaction

from hub.settlement.cluster import (
    AccountInfo,
    Blockhash,
    Cluster,
    ClusterUnavailableError,
    SignatureState,
)

__all__ = [
    "BreakerPolicy",
    "BreakerState",
    "CircuitBreaker",
    "CircuitOpenError",
    "GuardedCluster",
]

T = TypeVar("T")


class BreakerState(enum.Enum):
    """CLOSED: calls go through. OPEN: calls are refused until the cool-down ends.
    HALF_OPEN: one probe call is in flight; its outcome closes or re-opens the breaker."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitOpenError(ClusterUnavailableError):
    """Refused without sending anything: the breaker is open (or its one probe is in flight)."""

    def __init__(self, next_try: float | None) -> None:
        super().__init__(
            "cluster calls suspended after repeated failures"
            + (f"; next attempt at clock {next_try:.3f}" if next_try is not None else "")
        )
        self.next_try = next_try


@dataclass(frozen=True)
class BreakerPolicy:
    """When to open, and for how long: the n-th consecutive opening lasts
    base_cooldown_s * multiplier**(n-1) seconds, at most max_cooldown_s."""

    failure_threshold: int = 5
    base_cooldown_s: float = 1.0
    multiplier: float = 2.0
    max_cooldown_s: float = 60.0

    def __post_init__(self) -> None:
        if self.failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        if self.base_cooldown_s <= 0 or self.max_cooldown_s < self.base_cooldown_s:
            raise ValueError("need 0 < base_cooldown_s <= max_cooldown_s")
        if self.multiplier < 1:
            raise ValueError("multiplier must be at least 1")

    def cooldown_s(self, opening: int) -> float:
        """The cool-down of the `opening`-th consecutive opening (1-based)."""
        exponent = max(0, opening - 1)
        # Cap the exponent first: a cluster down for days must not overflow a float.
        cooldown = self.base_cooldown_s * self.multiplier ** min(exponent, 64)
        return min(cooldown, self.max_cooldown_s)


class CircuitBreaker:
    """Counts consecutive ClusterUnavailableError outcomes and decides whether the next call
    may be sent. No I/O, no tasks: `clock` (seconds, monotonic) is passed in, so tests drive
    time by hand.

    Usage: `if breaker.allow(): ...call...; breaker.record_success()/record_failure()`, or
    `await breaker.guarded(lambda: cluster.send(tx))`.
    """

    def __init__(
        self, policy: BreakerPolicy | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.policy = policy or BreakerPolicy()
        self._clock = clock
        self._state = BreakerState.CLOSED
        self.failures = 0  # consecutive failures since the last success
        self.openings = 0  # consecutive openings since the breaker last closed
        self.opened_at: float | None = None
        self.next_try: float | None = None
        self.probe_in_flight = False
        # Totals, for metrics.
        self.total_failures = 0
        self.total_openings = 0
        self.total_refused = 0

    @property
    def state(self) -> BreakerState:
        """The state now (an OPEN breaker whose cool-down has ended reports HALF_OPEN: the
        next call is the probe)."""
        if (
            self._state is BreakerState.OPEN
            and self.next_try is not None
            and self._clock() >= self.next_try
        ):
            return BreakerState.HALF_OPEN
        return self._state

    def allow(self) -> bool:
        """Whether a call may be sent now; False counts as a refused call. In HALF_OPEN the
        first caller gets True (the probe) and others False until the probe's outcome is
        recorded."""
        state = self.state
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.HALF_OPEN and not self.probe_in_flight:
            self._state = BreakerState.HALF_OPEN
            self.probe_in_flight = True
            return True
        self.total_refused += 1
        return False

    def record_success(self) -> None:
        """The cluster answered: close the breaker and forget past failures."""
        self._state = BreakerState.CLOSED
        self.failures = 0
        self.openings = 0
        self.opened_at = None
        self.next_try = None
        self.probe_in_flight = False

    def record_failure(self) -> None:
        """The cluster was unavailable: open after `failure_threshold` in a row, or at once
        if this was the half-open probe (with a longer cool-down)."""
        self.failures += 1
        self.total_failures += 1
        probe_failed = self._state is BreakerState.HALF_OPEN
        self.probe_in_flight = False
        if probe_failed or (
            self._state is BreakerState.CLOSED and self.failures >= self.policy.failure_threshold
        ):
            self._open()

    def record_abandoned(self) -> None:
        """The call ended without telling anything about the cluster (e.g. it was cancelled):
        free the probe slot so the next caller can probe."""
        self.probe_in_flight = False

    def _open(self) -> None:
        now = self._clock()
        self.openings += 1
        self.total_openings += 1
        self._state = BreakerState.OPEN
        self.opened_at = now
        self.next_try = now + self.policy.cooldown_s(self.openings)

    def snapshot(self) -> dict[str, object]:
        """The counters, for logs and metrics."""
        return {
            "state": self.state.value,
            "failures": self.failures,
            "openings": self.openings,
            "opened_at": self.opened_at,
            "next_try": self.next_try,
            "total_failures": self.total_failures,
            "total_openings": self.total_openings,
            "total_refused": self.total_refused,
        }

    async def guarded(self, call: Callable[[], Awaitable[T]]) -> T:
        """Run `call` if the breaker allows it, and record its outcome. Raises CircuitOpenError
        (a ClusterUnavailableError) at once, without calling, while the breaker is open. Any
        other exception means the cluster answered (e.g. a refused request): it counts as a
        success for the breaker and is re-raised."""
        if not self.allow():
            raise CircuitOpenError(self.next_try)
        try:
            result = await call()
        except ClusterUnavailableError:
            self.record_failure()
            raise
        except Exception:
            self.record_success()
            raise
        except BaseException:
            self.record_abandoned()
            raise
        self.record_success()
        return result


class GuardedCluster:
    """A Cluster whose every call goes through a CircuitBreaker (e.g. around an RpcCluster)."""

    def __init__(self, cluster: Cluster, breaker: CircuitBreaker) -> None:
        self.cluster = cluster
        self.breaker = breaker
        self.name = cluster.name

    async def latest_blockhash(self) -> Blockhash:
        return await self.breaker.guarded(self.cluster.latest_blockhash)

    async def block_height(self) -> int:
        return await self.breaker.guarded(self.cluster.block_height)

    async def send(self, transaction: VersionedTransaction) -> Signature:
        return await self.breaker.guarded(lambda: self.cluster.send(transaction))

    async def simulate(self, transaction: VersionedTransaction) -> tuple[object | None, int]:
        return await self.breaker.guarded(lambda: self.cluster.simulate(transaction))

    async def signature_states(self, signatures: Sequence[Signature]) -> list[SignatureState]:
        return await self.breaker.guarded(lambda: self.cluster.signature_states(signatures))

    async def accounts_exist(self, addresses: Sequence[Pubkey]) -> list[bool]:
        return await self.breaker.guarded(lambda: self.cluster.accounts_exist(addresses))

    async def slot(self) -> int:
        return await self.breaker.guarded(self.cluster.slot)

    async def get_accounts(self, addresses: Sequence[Pubkey]) -> list[AccountInfo | None]:
        return await self.breaker.guarded(lambda: self.cluster.get_accounts(addresses))

    async def token_balance(self, token_account: Pubkey) -> int:
        return await self.breaker.guarded(lambda: self.cluster.token_balance(token_account))

    async def priority_fee(self, writable: Sequence[Pubkey]) -> int:
        return await self.breaker.guarded(lambda: self.cluster.priority_fee(writable))

    async def close(self) -> None:
        await self.cluster.close()
