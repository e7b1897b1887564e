"""Disputes of settled trades: `open_dispute` signed with the key of the party the hub holds
(in the demo it derives aggregators' and battery owners' keys), `resolve_dispute` signed with
the market authority's key; each change updates the outbox row and is a settlement_changed
event (hub/settlement/README.md, "Disputes")."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Literal

import sqlalchemy as sa
import structlog
from solders.instruction import Instruction
from solders.keypair import Keypair
from solders.message import Message
from solders.signature import Signature
from solders.transaction import VersionedTransaction

from hub.events import EventKind
from hub.settlement.cluster import Cluster, ClusterUnavailableError
from hub.settlement.ledger import (
    Party,
    PartyNotReady,
    SiteSetupError,
    associated_token_address,
    execute,
)
from hub.settlement.onboard import create_token_account
from hub.settlement.site import MarketSite, Site
from hub.store import Store, TradeRow
from hub.store.models import SETTLEMENTS, TRADES
from hub.store.validate import to_row

__all__ = ["ON_LEDGER_STATUSES", "DisputeError", "Disputes"]

log = structlog.get_logger(__name__)

# outbox statuses of a trade paid on the ledger (a dispute changes the row, not the payment)
ON_LEDGER_STATUSES = ("settled", "disputed", "refunded", "upheld")

Side = Literal["buyer", "seller"]


class DisputeError(Exception):
    """A dispute step that cannot be done; `status` is the HTTP status the gateway answers
    (404 unknown trade, 409 refused in this state or by the program, 503 ledger away)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Disputes:
    """Opens and resolves disputes on the site's ledger, one at a time."""

    def __init__(
        self, store: Store, cluster: Cluster, site: MarketSite, emit: Callable[..., None]
    ) -> None:
        self.store = store
        self.cluster = cluster
        self.site = site
        self._emit = emit
        self._lock = asyncio.Lock()
        self._messages = {e["code"]: e.get("msg", "") for e in site.idl.document["errors"]}

    async def open(
        self,
        trade_id: int,
        by: Side,
        reason: str | None = None,
        actor: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """`by` (the trade's buyer or seller) disputes the trade: the hub signs open_dispute
        with that party's key, which it must hold."""
        async with self._lock:
            trade, record = await self._settled_trade(trade_id)
            party = await self._party(trade, by)
            expected = record["buyer"] if by == "buyer" else record["seller"]
            if party is None or party.keypair is None or party.owner != expected:
                raise DisputeError(
                    409,
                    f"the hub holds no key for the {by} of trade {trade_id} ({expected}): "
                    "that party signs open_dispute with its own wallet",
                )
            instruction = self.site.idl.instruction(
                "open_dispute",
                {
                    "disputer": party.pubkey,
                    "market": self.site.market,
                    "trade_record": self._record_address(trade),
                    "disputer_reputation": party.reputation,
                },
            )
            signature = await self._run([instruction], party.keypair)
            await self._changed(trade, "disputed", signature, by=by, reason=reason, actor=actor)
            log.info("dispute opened", trade_id=trade_id, by=by)
            return {
                "trade_id": trade_id,
                "status": "disputed",
                "by": by,
                "reason": reason,
                "signature": str(signature),
                "dispute_deadline": record["dispute_deadline"],
            }

    async def resolve(
        self, trade_id: int, refund_mc: int | None, actor: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """The market authority resolves the open dispute: `refund_mc` > 0 refunds the buyer
        that much (the seller was at fault), 0 finds the dispute unfounded (the disputer is
        penalised), None refunds the trade's whole amount."""
        async with self._lock:
            trade, record = await self._settled_trade(trade_id)
            site = self.site
            if not isinstance(site, Site):  # a market its authority made (RegisteredSite)
                raise DisputeError(
                    409,
                    "the hub does not hold this market's authority key: the market authority "
                    f"signs resolve_dispute for trade {trade_id} itself",
                )
            scale = site.price_scale  # token base units per milli-cent
            amount = int(record["amount"])
            refund = amount if refund_mc is None else refund_mc * scale
            if refund < 0:
                raise DisputeError(409, "a refund cannot be negative")
            idl, market, authority = site.idl, site.market, site.authority
            buyer, seller = record["buyer"], record["seller"]
            source = associated_token_address(authority.pubkey(), site.mint, site.token_program)
            steps = [create_token_account(site.view, authority.pubkey(), authority.pubkey())]
            if 0 < refund <= amount:
                # the refund comes from the authority's own tokens (the program never takes
                # them back from the seller); the hub made the demo's mint, so it mints them
                held = await self._ledger(self.cluster.token_balance(source))
                if held < refund:
                    steps.append(site.mint_instruction(source, refund - held))
            steps.append(
                idl.instruction(
                    "resolve_dispute",
                    {
                        "authority": authority.pubkey(),
                        "market": market,
                        "trade_record": self._record_address(trade),
                        "buyer_reputation": idl.reputation_address(market, buyer),
                        "seller_reputation": idl.reputation_address(market, seller),
                        "buyer_escrow": idl.escrow_address(market, buyer),
                        "buyer_vault": idl.vault_address(market, buyer),
                        "authority_token_account": source,
                        "payment_mint": site.mint,
                        "token_program": site.token_program,
                    },
                    {"refund_amount": refund},
                )
            )
            signature = await self._run(steps, authority)
            status = "refunded" if refund > 0 else "upheld"
            disputer = {1: "buyer", 2: "seller"}.get(int(record["disputed_by"]))
            penalised = "seller" if refund > 0 else disputer
            await self._changed(
                trade,
                status,
                signature,
                refund_mc=refund // scale,
                penalised=penalised,
                actor=actor,
            )
            log.info(
                "dispute resolved", trade_id=trade_id, status=status, refund_mc=refund // scale
            )
            return {
                "trade_id": trade_id,
                "status": status,
                "refund_mc": refund // scale,
                "amount_mc": amount // scale,
                "penalised": penalised,
                "signature": str(signature),
            }

    async def record_of(self, trade_id: int) -> dict[str, Any]:
        """The trade's TradeRecord on the ledger, decoded (DisputeError if there is none)."""
        return (await self._settled_trade(trade_id))[1]

    # ---- internals -------------------------------------------------------------------------

    def _record_address(self, trade: TradeRow) -> Any:
        return self.site.idl.trade_record_address(self.site.market, trade.auction_id, trade.id)

    async def _settled_trade(self, trade_id: int) -> tuple[TradeRow, dict[str, Any]]:
        """The trade and its record, if it was paid on this ledger."""
        async with self.store.sql.connect() as connection:
            trade_row = (
                await connection.execute(sa.select(TRADES).where(TRADES.c.id == trade_id))
            ).first()
            outbox = (
                await connection.execute(
                    sa.select(SETTLEMENTS.c.status).where(SETTLEMENTS.c.trade_id == trade_id)
                )
            ).first()
        if trade_row is None:
            raise DisputeError(404, f"no trade {trade_id}")
        trade = to_row(TradeRow, trade_row)
        if outbox is None:
            raise DisputeError(
                409,
                f"trade {trade_id} is {trade.status}: only verified trades are settled, "
                "and only settled trades can be disputed",
            )
        if outbox.status not in ON_LEDGER_STATUSES:
            raise DisputeError(
                409,
                f"trade {trade_id} is not settled yet (settlement {outbox.status}); a "
                "trade can be disputed once it is paid on the ledger",
            )
        if not self.site.ready:
            raise DisputeError(503, "the ledger is not set up yet; try again in a moment")
        (account,) = await self._ledger(self.cluster.get_accounts([self._record_address(trade)]))
        if account is None:
            raise DisputeError(
                409,
                f"trade {trade_id} has no record on this ledger: it was paid on an "
                "earlier embedded ledger, which ended with the hub process that ran it",
            )
        _, record = self.site.idl.decode_account(account.data)
        return trade, record

    async def _party(self, trade: TradeRow, by: Side) -> Party | None:
        """The trade's buyer's or seller's accounts as the site knows them (None: not known)."""
        try:
            if by == "buyer":
                return await self.site.ensure_aggregator(trade.bidder_id)
            return await self.site.ensure_battery(trade.device_id)
        except PartyNotReady:
            return None
        except SiteSetupError as exc:
            raise DisputeError(503, f"the {by}'s wallet could not be checked: {exc}") from None

    async def _ledger(self, call: Any) -> Any:
        try:
            return await call
        except ClusterUnavailableError as exc:
            raise DisputeError(503, f"the ledger is not reachable: {exc}") from None

    def _refusal(self, err: object) -> str:
        from hub.settlement.service import custom_error_code

        code = custom_error_code(err)
        name = self.site.idl.errors.get(code) if code is not None else None
        if name is None:
            return f"the ledger refused the transaction: {err}"
        return f"the program refused: {name} ({code}): {self._messages.get(code, '')}"

    async def _run(self, instructions: list[Instruction], payer: Keypair) -> Signature:
        """Simulate (a refusal names the program's error), then send and wait until it lands
        (hub.settlement.ledger.execute)."""
        recent = await self._ledger(self.cluster.latest_blockhash())
        message = Message.new_with_blockhash(instructions, payer.pubkey(), recent.blockhash)
        err, _ = await self._ledger(
            self.cluster.simulate(VersionedTransaction(message, [payer]))
        )
        if err is not None:
            raise DisputeError(409, self._refusal(err))
        try:
            return await self._ledger(execute(self.cluster, instructions, payer))
        except SiteSetupError as exc:
            if exc.err is not None:
                raise DisputeError(409, self._refusal(exc.err)) from None
            raise DisputeError(503, f"{exc} (the dispute was not recorded)") from None

    async def _changed(
        self, trade: TradeRow, status: str, signature: Signature, **payload: Any
    ) -> None:
        """Outbox row (its settlement signature kept) and settlement_changed event."""
        await self.store.mark_settlement(trade.id, status=status)
        self._emit(
            EventKind.SETTLEMENT_CHANGED,
            device_id=trade.device_id,
            auction_id=trade.auction_id,
            trade_id=trade.id,
            status=status,
            signature=str(signature),
            error=None,
            **{key: value for key, value in payload.items() if value is not None},
        )
