"""`etp apikey create|list|revoke`: API keys of the HTTP gateway, stored hashed in the hub's
database (SQLite in the data dir, or ETP_DATABASE_URL), so this works with the hub running."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

import typer

from hub.auth import IssuedKey, Role, key_view
from hub.cli.db import DatabaseUrl, DataDir, resolve_url
from hub.store import ApiKeyRow

__all__ = ["app"]

_T = TypeVar("_T")

app = typer.Typer(
    help="API keys for the HTTP gateway. Call the API with 'Authorization: Bearer <key>' or "
    "'X-API-Key: <key>'. A viewer key reads /api/v1/*; an operator key may also manage keys. "
    "Keys are stored hashed: the secret is shown once, by `create`.",
    no_args_is_help=True,
)


def _fail(message: str) -> None:
    typer.echo("error: " + message, err=True)
    raise typer.Exit(1)


def _with_store(url: str, work: Callable[[Any], Awaitable[_T]]) -> _T:
    """Open the store (migrating it if needed), run `work(store)`, close it."""
    from hub.store import Store, StoreError

    async def run() -> _T:
        async with Store(url) as store:
            return await work(store)

    try:
        return asyncio.run(run())
    except StoreError as err:
        _fail(str(err))
        raise  # not reached: _fail exits


def _time(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


@app.command()
def create(
    name: Annotated[str, typer.Option("--name", help="Who or what uses the key (max 64 chars).")],
    role: Annotated[
        Role,
        typer.Option(
            "--role",
            help="viewer: read status, devices, events; operator: also manage API keys.",
            case_sensitive=False,
        ),
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (with the key).")] = False,
    database_url_option: DatabaseUrl = None,
    data_dir: DataDir = None,
) -> None:
    """Make a key and print it ONCE (only its hash is stored: save it now)."""
    from hub.auth import issue_api_key

    name = name.strip()
    if not name or len(name) > 64:
        _fail("--name must be 1 to 64 characters")
    url = resolve_url(database_url_option, data_dir)
    issued: IssuedKey = _with_store(url, lambda store: issue_api_key(store, name, role))
    if as_json:
        typer.echo(json.dumps({**key_view(issued.row), "key": issued.key}))
        return
    typer.echo(f"API key {issued.row.id} ({issued.row.role}, {issued.row.name}):")
    typer.echo(issued.key)
    typer.echo(
        "Shown once: store it now. Use it as 'Authorization: Bearer <key>' or 'X-API-Key: "
        f"<key>'; revoke it with `etp apikey revoke {issued.row.id}`."
    )


@app.command("list")
def list_keys(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    database_url_option: DatabaseUrl = None,
    data_dir: DataDir = None,
) -> None:
    """Show every key (id, name, role, created, last used, revoked); never secrets."""
    url = resolve_url(database_url_option, data_dir)
    rows: list[ApiKeyRow] = _with_store(url, lambda store: store.list_api_keys())
    if as_json:
        typer.echo(json.dumps([key_view(row) for row in rows], indent=2))
        return
    if not rows:
        typer.echo("no API keys (make one with `etp apikey create --name N --role viewer`)")
        return
    header = f"{'id':>4}  {'name':<20} {'role':<9} {'created':<20} {'last used':<20} state"
    typer.echo(header)
    for row in rows:
        state = f"revoked {_time(row.revoked_ms)}" if row.revoked else "active"
        typer.echo(
            f"{row.id:>4}  {row.name[:20]:<20} {row.role:<9} {_time(row.created_ms):<20} "
            f"{_time(row.last_used_ms):<20} {state}"
        )


@app.command()
def revoke(
    key_id: Annotated[
        int, typer.Argument(metavar="ID", help="The key's id (`etp apikey list`; etp_<ID>_...).")
    ],
    database_url_option: DatabaseUrl = None,
    data_dir: DataDir = None,
) -> None:
    """Revoke a key. A running hub refuses it within its cache time (ETP_API_KEY_CACHE_TTL_S,
    5 s); revoked through the hub's API it is refused at once."""
    from hub.store import UnknownApiKeyError

    url = resolve_url(database_url_option, data_dir)

    async def work(store: Any) -> ApiKeyRow | None:
        try:
            row: ApiKeyRow = await store.revoke_api_key(key_id)
            return row
        except UnknownApiKeyError:
            return None

    row = _with_store(url, work)
    if row is None:
        _fail(f"no API key has id {key_id} (see `etp apikey list`)")
        return
    typer.echo(f"revoked API key {row.id} ({row.role}, {row.name}) at {_time(row.revoked_ms)}")
