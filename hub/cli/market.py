"""`etp settle market init|show|rotate-settler`: a market on a real network, made and run
by its authority with the authority's own key (the hub holds only the settler key)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from hub.cli.ledger import MarketAddress, RpcUrl, fail, parse_pubkey, run_on_ledger

__all__ = ["app"]

app = typer.Typer(
    help="The market on a real network (devnet, mainnet): its authority creates it once, "
    "naming the payment token and the hub's settler key; the hub then settles in it "
    "(ETP_SETTLEMENT_NETWORK=devnet|mainnet, ETP_SETTLEMENT_MARKET=<address>).",
    no_args_is_help=True,
)

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _duration(text: str) -> int:
    try:
        if text[-1:] in _UNITS:
            return int(text[:-1]) * _UNITS[text[-1]]
        return int(text)
    except ValueError:
        fail(f"dispute window {text!r} must look like 3600, 90m, 48h or 7d")
    raise AssertionError("unreachable")


def _hub_settler(settler: str | None) -> Any:
    """The settler named, else the public key of this hub's settler key file (made if new)."""
    from hub.settings import Settings
    from hub.settlement.ledger import load_or_create_keypair

    if settler:
        return parse_pubkey(settler, "settler")
    return load_or_create_keypair(Settings().settler_key_path()).pubkey()


def _view(market: Any, fields: dict[str, Any]) -> dict[str, Any]:
    return {
        "market": str(market),
        **{
            k: str(v) if not isinstance(v, int | bool) else v
            for k, v in fields.items()
            if k != "bump"
        },
    }


@app.command()
def init(
    authority_keypair: Annotated[
        Path,
        typer.Option(
            "--authority-keypair",
            exists=True,
            dir_okay=False,
            help="The market authority's keypair file: it pays, and alone may resolve disputes, "
            "pause the market and change its settler. Keep it offline; the hub never needs it.",
        ),
    ],
    mint: Annotated[
        str,
        typer.Option(
            help="The payment token's mint (SPL Token or Token-2022, at least 5 decimals, e.g. "
            "USDC's)."
        ),
    ],
    settler: Annotated[
        str | None,
        typer.Option(
            help="The settler's public key (default: this hub's, from its settler key file).",
            show_default=False,
        ),
    ] = None,
    dispute_window: Annotated[
        str, typer.Option(help="How long after settlement a buyer or seller may dispute a trade.")
    ] = "7d",
    rpc_url: RpcUrl = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Create the market (once; running it again shows the existing one)."""
    from hub.settlement.ledger import load_keypair
    from hub.settlement.onboard import init_market, market_view

    authority = load_keypair(authority_keypair)
    mint_key = parse_pubkey(mint, "mint")
    settler_key = _hub_settler(settler)
    window = _duration(dispute_window)

    async def work(cluster: Any, idl: Any, _: Any) -> dict[str, Any]:
        made = await init_market(cluster, idl, authority, mint_key, settler_key, window)
        return _view(made.address, await market_view(cluster, idl, made.address))

    view = run_on_ledger(rpc_url, None, work, need_market=False)
    if as_json:
        typer.echo(json.dumps(view, indent=2))
        return
    typer.echo(
        f"market {view['market']}  (settler {view['settler']}, token "
        f"{view['payment_mint']}, {view['mint_decimals']} decimals)"
    )
    typer.echo(f"run the hub with ETP_SETTLEMENT_MARKET={view['market']}")


@app.command()
def show(
    market: MarketAddress = None,
    rpc_url: RpcUrl = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """The market's authority, settler, token, dispute window, totals and whether paused."""
    from hub.settlement.onboard import market_view

    async def work(cluster: Any, idl: Any, address: Any) -> dict[str, Any]:
        return _view(address, await market_view(cluster, idl, address))

    view = run_on_ledger(rpc_url, market, work)
    if as_json:
        typer.echo(json.dumps(view, indent=2))
        return
    for key, value in view.items():
        typer.echo(f"{key:>24}  {value}")


@app.command("rotate-settler")
def rotate_settler_cmd(
    authority_keypair: Annotated[
        Path,
        typer.Option(
            "--authority-keypair",
            exists=True,
            dir_okay=False,
            help="The market authority's keypair file.",
        ),
    ],
    settler: Annotated[
        str | None,
        typer.Option(
            help="The new settler's public key (default: this hub's).", show_default=False
        ),
    ] = None,
    market: MarketAddress = None,
    rpc_url: RpcUrl = None,
) -> None:
    """Hand settlement to another hub key (e.g. after the old one leaked)."""
    from hub.settlement.ledger import load_keypair
    from hub.settlement.onboard import read_market, rotate_settler

    authority = load_keypair(authority_keypair)
    new_settler = _hub_settler(settler)

    async def work(cluster: Any, idl: Any, address: Any) -> None:
        found = await read_market(cluster, idl, address)
        if found.authority != authority.pubkey():
            fail(
                f"the market's authority is {found.authority}, not this keypair's "
                f"{authority.pubkey()}"
            )
        await rotate_settler(cluster, found, authority, new_settler)

    run_on_ledger(rpc_url, market, work)
    typer.echo(f"settler is now {new_settler}")
