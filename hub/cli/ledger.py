"""What `etp wallet` and `etp settle market` share: the ledger endpoint from options or
settings, key files, amounts, and one way to report a failure."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

__all__ = [
    "KeypairFile",
    "MarketAddress",
    "RpcUrl",
    "fail",
    "parse_amount",
    "parse_pubkey",
    "run_on_ledger",
]

_T = TypeVar("_T")

RpcUrl = Annotated[
    str | None,
    typer.Option(
        "--rpc-url",
        help="JSON-RPC endpoint of the cluster (default: ETP_SETTLEMENT_RPC_URL, else the "
        "public endpoint of ETP_SETTLEMENT_NETWORK: localnet, devnet or mainnet).",
        show_default=False,
    ),
]
MarketAddress = Annotated[
    str | None,
    typer.Option(
        "--market",
        help="The market's address (default: ETP_SETTLEMENT_MARKET).",
        show_default=False,
    ),
]
KeypairFile = Annotated[
    Path,
    typer.Option(
        "--keypair",
        help="A keypair file (JSON array of 64 bytes, as `solana-keygen new` writes it). It "
        "signs here and is never sent or logged.",
        exists=True,
        dir_okay=False,
    ),
]


def fail(message: str) -> None:
    typer.echo("error: " + message, err=True)
    raise typer.Exit(1)


def parse_pubkey(text: str, what: str) -> Any:
    from solders.pubkey import Pubkey

    try:
        return Pubkey.from_string(text)
    except ValueError:
        fail(f"{what} {text!r} is not a base58 public key (32 bytes)")


def parse_amount(text: str, decimals: int) -> int:
    """'12.5' tokens -> base units of a token with `decimals` decimals (exactly)."""
    try:
        value = Decimal(text)
    except InvalidOperation:
        fail(f"amount {text!r} is not a number")
    units = value * (Decimal(10) ** decimals)
    if value <= 0 or units != units.to_integral_value():
        fail(f"amount {text!r} must be positive with at most {decimals} decimals")
    return int(units)


def run_on_ledger(
    rpc_url: str | None,
    market: str | None,
    work: Callable[[Any, Any, Any], Awaitable[_T]],
    *,
    need_market: bool = True,
) -> _T:
    """Run `work(cluster, idl, market_address or None)` against the cluster; every ledger
    failure becomes a one-line error."""
    from hub.settings import Settings
    from hub.settlement.cluster import ClusterUnavailableError
    from hub.settlement.ledger import KeyFileError, SiteSetupError
    from hub.settlement.program import load_idl
    from hub.settlement.rpc import RpcCluster, safe_endpoint

    settings = Settings()
    if (
        settings.settlement_network == "embedded"
        and rpc_url is None
        and settings.settlement_rpc_url is None
    ):
        fail(
            "the embedded ledger lives inside the running hub; these commands are for a "
            "cluster over JSON-RPC: give --rpc-url or set ETP_SETTLEMENT_NETWORK"
        )
    url = rpc_url or settings.settlement_rpc_endpoint() or "http://127.0.0.1:8899"
    market = market or settings.settlement_market
    if need_market and not market:
        fail("which market? give --market ADDRESS or set ETP_SETTLEMENT_MARKET")
    address = parse_pubkey(market, "market") if market else None
    program = settings.settlement_program_id
    idl = load_idl(parse_pubkey(program, "program id") if program else None)

    async def run() -> _T:
        name = (
            settings.settlement_network if settings.settlement_network != "embedded" else "localnet"
        )
        cluster = RpcCluster(url, name=name)
        try:
            return await work(cluster, idl, address)
        finally:
            await cluster.close()

    try:
        return asyncio.run(run())
    except ClusterUnavailableError as exc:
        fail(f"the ledger at {safe_endpoint(url)} does not answer: {exc}")
    except (SiteSetupError, KeyFileError) as exc:
        fail(str(exc))
    raise AssertionError("unreachable")
