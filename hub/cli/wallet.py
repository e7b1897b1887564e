"""`etp wallet add|remove|list|register|fund`: the wallets of the aggregators and battery
owners the hub settles for on a real network. The hub keeps only their public keys (its
database); each party registers and funds itself with its own keypair."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any

import typer

from hub.cli.db import DatabaseUrl, DataDir, resolve_url
from hub.cli.ledger import (
    KeypairFile,
    MarketAddress,
    RpcUrl,
    fail,
    parse_amount,
    parse_pubkey,
    run_on_ledger,
)

__all__ = ["app"]

app = typer.Typer(
    help="Wallets of the parties the hub settles for on devnet / mainnet. The hub pays a "
    "trade only once its buyer (aggregator) and seller (battery owner) are known here by "
    "public key AND registered on the ledger: `add` tells the hub; `register` and `fund` "
    "are what the party itself runs with its own keypair.",
    no_args_is_help=True,
)

Role = Annotated[str, typer.Argument(help="aggregator (by bidder id) or battery (by device id)")]
PartyId = Annotated[int, typer.Argument(min=1, max=2**31 - 1, help="aggregator or device id")]


def _role(role: str) -> str:
    from hub.store.wallets import WALLET_ROLES

    if role not in WALLET_ROLES:
        fail(f"role must be one of {', '.join(WALLET_ROLES)}, not {role!r}")
    return role


def _store_call(database_url: str | None, data_dir: Any, work: Any) -> Any:
    from hub.settings import Settings
    from hub.store import Store, StoreError

    url = resolve_url(database_url, data_dir)
    site = Settings().site

    async def run() -> Any:
        async with Store(url) as store:
            return await work(store, site)

    try:
        return asyncio.run(run())
    except StoreError as exc:
        fail(str(exc))


@app.command()
def add(
    role: Role,
    party_id: PartyId,
    pubkey: Annotated[str, typer.Argument(help="the party's wallet (base58 public key)")],
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Tell the hub whose wallet pays (aggregator) or is paid (battery owner).

    Takes effect in a running hub within 5 s; its waiting trades then settle once the party
    registered."""
    _role(role)
    parse_pubkey(pubkey, "wallet")

    async def work(store: Any, site: str) -> None:
        await store.set_wallet(site, role, party_id, pubkey)

    _store_call(database_url, data_dir, work)
    typer.echo(f"{role} {party_id}: wallet {pubkey}")


@app.command()
def remove(
    role: Role, party_id: PartyId, data_dir: DataDir = None, database_url: DatabaseUrl = None
) -> None:
    """Forget a party's wallet (its trades then wait; nothing on the ledger changes)."""
    _role(role)

    async def work(store: Any, site: str) -> bool:
        return bool(await store.remove_wallet(site, role, party_id))

    if not _store_call(database_url, data_dir, work):
        fail(f"{role} {party_id} has no wallet registered")
    typer.echo(f"{role} {party_id}: wallet removed")


@app.command("list")
def list_cmd(
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """The wallets the hub knows, by role and id."""

    async def work(store: Any, site: str) -> list[Any]:
        return list(await store.list_wallets(site))

    rows = _store_call(database_url, data_dir, work)
    views = [
        {"role": r.role, "id": r.party_id, "pubkey": r.pubkey, "updated_ms": r.updated_ms}
        for r in rows
    ]
    if as_json:
        typer.echo(json.dumps(views, indent=2))
        return
    if not views:
        typer.echo("no wallets: `etp wallet add aggregator|battery ID PUBKEY`")
    for view in views:
        typer.echo(f"{view['role']:<10} {view['id']:>6}  {view['pubkey']}")


@app.command()
def register(
    keypair: KeypairFile,
    aggregator: Annotated[
        bool, typer.Option("--aggregator", help="Register as an aggregator (opens its escrow).")
    ] = False,
    device: Annotated[
        list[int] | None,
        typer.Option(
            "--device",
            min=1,
            max=2**31 - 1,
            help="Register as the owner of this battery (repeat for up to 8).",
        ),
    ] = None,
    max_price: Annotated[
        str | None,
        typer.Option(
            help="Aggregator: the highest price per kWh its escrow pays, in tokens (default: no "
            "practical cap).",
            show_default=False,
        ),
    ] = None,
    market: MarketAddress = None,
    rpc_url: RpcUrl = None,
) -> None:
    """Join the market with your own keypair (you pay the rent of your accounts): a battery
    owner with its device ids gets a token account to be paid into; an aggregator gets an
    escrow its payments come from. Running it again does nothing."""
    from hub.settlement.ledger import load_keypair
    from hub.settlement.onboard import DEFAULT_MAX_PRICE_PER_KWH, read_market
    from hub.settlement.onboard import register as register_party

    devices = list(device or [])
    if aggregator == bool(devices):
        fail("say who registers: --aggregator, or --device N (the battery owner's devices)")
    if len(devices) > 8 or len(set(devices)) != len(devices):
        fail("a battery owner registers 1 to 8 distinct device ids")
    owner = load_keypair(keypair)

    async def work(cluster: Any, idl: Any, address: Any) -> Any:
        found = await read_market(cluster, idl, address)
        cap = parse_amount(max_price, found.decimals) if max_price else DEFAULT_MAX_PRICE_PER_KWH
        return await register_party(
            cluster, found, owner, aggregator=aggregator, device_ids=devices, max_price_per_kwh=cap
        )

    party = run_on_ledger(rpc_url, market, work)
    role = "aggregator" if aggregator else "battery owner"
    typer.echo(f"registered {party.owner} as {role}; token account {party.token_account}")
    if aggregator:
        typer.echo(f"escrow {party.escrow}: deposit with `etp wallet fund --keypair ...`")
    ids = " ".join(f"`etp wallet add battery {d} {party.owner}`" for d in devices) or (
        f"`etp wallet add aggregator ID {party.owner}`"
    )
    typer.echo(f"the hub operator then runs {ids}")


@app.command()
def fund(
    keypair: KeypairFile,
    amount: Annotated[str, typer.Option(help="Tokens to deposit, e.g. 250 or 12.5.")],
    market: MarketAddress = None,
    rpc_url: RpcUrl = None,
) -> None:
    """Aggregator: move tokens from your token account into your escrow; settlements are paid
    from it and only ever by a trade's amount."""
    from hub.settlement.ledger import load_keypair
    from hub.settlement.onboard import deposit, read_market

    owner = load_keypair(keypair)

    async def work(cluster: Any, idl: Any, address: Any) -> tuple[int, int]:
        found = await read_market(cluster, idl, address)
        units = parse_amount(amount, found.decimals)
        return await deposit(cluster, found, owner, units), found.decimals

    balance, decimals = run_on_ledger(rpc_url, market, work)
    typer.echo(f"escrow holds {balance / 10**decimals:.{decimals}f} tokens")
