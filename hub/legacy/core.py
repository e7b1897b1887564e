"""The firmware's NodeCore as a bridged legacy battery's protocol logic, with the legacy commit
put between a BidConfirm's checks and its commit.

Everything a battery does in the ETP flow (register, answer queries, evaluate and hold bids,
expire holds, answer Terminates from the audit trail, report status, turn a fault into a
DeviceFailure) is the firmware's own code (firmware/etp_node/core.py, evaluator.py,
ledger.py); this subclass changes two things only:

- what may be sold is the bridge's budget for the legacy battery (LegacyPack.offered_wh), not
  a share of the pack, so the core never holds or commits beyond what the battery offered;
- a Bid for energy the prototype cannot write (its kWh field has two decimals: 10 Wh steps)
  is refused insufficient_energy, since the legacy battery could not commit it as traded;
- a BidConfirm the core would commit is parked in `pending_confirms` instead: the bridge
  commits it on the legacy battery first, then calls `finish_confirm` (the core commits and
  answers BidAccept as usual) or `refuse_confirm` (the hold is released, BidReject).
"""

from __future__ import annotations

from typing import Any

from firmware.etp_node import core as firmware_core
from firmware.etp_node.core import NodeCore
from hub.legacy.pack import ENERGY_STEP_WH, LegacyPack
from shared_etp.schema import BID_REJECT, REASON_INSUFFICIENT_ENERGY

__all__ = ["BridgeCore"]

# Indices into a ledger hold (firmware/etp_node/ledger.py): [bidder, price_mc, energy_wh, ...]
_BIDDER, _PRICE, _ENERGY = 0, 1, 2


class BridgeCore(NodeCore):  # type: ignore[misc]
    """NodeCore over a LegacyPack whose confirms wait for the legacy battery's commit."""

    def __init__(self, config: dict[str, Any], pack: LegacyPack, audit: Any = None) -> None:
        super().__init__(config, pack, audit)
        self.pack = pack
        self.pending_confirms: list[dict[str, int]] = []
        self._committing = False

    def max_sellable_wh(self) -> int:
        """What the legacy battery offered less what was sold through the bridge."""
        return self.pack.offered_wh()

    def sync_offer(self) -> None:
        """Adopt the reserve and share the battery last reported (reserve: the evaluator's
        static reserve, as a board's configured one)."""
        self.evaluator.reserve_mc = self.pack.reserve_mc
        self.pct_for_sale = self.pack.pct_for_sale

    def _reject(self, msg: dict[str, int], reason: int) -> Any:
        """BidReject `reason`, counted as the core counts its own (the firmware inlines its
        rejections to spare a board's heap, so the bridge has its own)."""
        stats: Any = self.stats
        stats["rejected"] += 1
        reasons = stats["reject_reasons"]
        reasons[str(reason)] = reasons.get(str(reason), 0) + 1
        fields = (firmware_core._K_AUC, msg["auc"], firmware_core._K_REASON, reason)
        return self._reply(msg, BID_REJECT, fields)

    def _on_bid(self, msg: dict[str, int]) -> Any:
        if msg["ereq"] % ENERGY_STEP_WH:
            return self._reject(msg, REASON_INSUFFICIENT_ENERGY)
        return super()._on_bid(msg)

    def _on_confirm(self, msg: dict[str, int]) -> Any:
        if self._committing:
            return super()._on_confirm(msg)
        hold = self.ledger.holds.get(msg["auc"])
        if (
            not self.faulted
            and hold is not None
            and hold[_BIDDER] == msg["src"]
            and hold[_PRICE] == msg["price"]
            and hold[_ENERGY] == msg["ereq"]
            and hold[_ENERGY] <= self.pack.remaining_wh()
        ):
            self.pending_confirms.append(msg)  # the core would commit: the legacy battery first
            return None
        return super()._on_confirm(msg)  # repeats and refusals: answered as a board does

    def finish_confirm(self, msg: dict[str, int]) -> Any:
        """The legacy battery committed the sale: commit it here and answer (topic, frame)
        (BidAccept; None if the audit record could not be written, as on a board)."""
        self._committing = True
        try:
            return super()._on_confirm(msg)
        finally:
            self._committing = False

    def refuse_confirm(self, msg: dict[str, int], reason: int) -> Any:
        """The legacy battery did not take the sale: release the hold, answer BidReject."""
        auction = msg["auc"]
        if self.ledger.release(auction, "fault") is not None:
            self._audit({"k": "confirm", "auc": auction, "b": msg["src"], "r": reason})
        return self._reject(msg, reason)
