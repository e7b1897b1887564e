"""A market on a real network, run the way devnet and mainnet are: its authority creates it
with `etp settle market init` (a USDC-like token with 6 decimals), aggregators and battery
owners register and fund themselves with their own keypairs (`etp wallet register|fund`),
the operator tells the hub their public keys (`etp wallet add`), and the hub, holding only the
settler key, pays every verified trade by exactly its amount. A battery whose owner is not
ready has its trades wait (with the reason in /api/v1/status) until it is, then they settle.

The cluster is a TEST DOUBLE: no Solana validator can run on these machines, so
tests/settlement/rpc_double.py serves Solana's JSON-RPC over HTTP on loopback from a LiteSVM
that runs the real etp_settlement program. The token issuer's part (minting USDC to the
aggregators) is done by writing their token accounts on the double's ledger."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from solders.account import Account
from solders.keypair import Keypair
from solders.pubkey import Pubkey
from solders.token import ID as TOKEN_PROGRAM
from typer.testing import CliRunner

from hub.buyers.aggregator import FIRST_AGGREGATOR_ID
from hub.cli.main import app
from hub.settlement.embedded import EmbeddedCluster
from hub.settlement.ledger import associated_token_address, load_or_create_keypair
from hub.settlement.program import read_program
from tests.hub.helpers import hub_settings, running_hub, sim_fleet, wait_for
from tests.settlement.rpc_double import RpcDouble
from tests.settlement.test_rpc import _mint_data, _token_account_data

pytestmark = pytest.mark.slow

DECIMALS = 6  # 10 base units per milli-cent
DEPOSIT_TOKENS = 1_000  # each aggregator's escrow, in tokens


def _keyfile(path: Path) -> Keypair:
    return load_or_create_keypair(path)


class Cli:
    """`etp ...` as a user runs it, in a thread (the double answers on the test's loop)."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.runner = CliRunner()

    async def __call__(self, *args: str, ok: bool = True) -> str:
        result = await asyncio.to_thread(self.runner.invoke, app, list(args), env=self.env)
        output = result.stdout + result.stderr
        assert (result.exit_code == 0) == ok, f"etp {' '.join(args)}: {output}"
        return output


async def test_a_registered_market_settles_only_ready_parties_by_exact_amounts(
    tmp_path: Path, program_file: Path
) -> None:
    ledger = EmbeddedCluster(read_program(program_file))
    svm = ledger.svm
    double = RpcDouble(svm)
    url = await double.start()
    try:
        # the token: a USDC-like mint (6 decimals) the test issues
        mint = Keypair().pubkey()
        svm.set_account(mint, Account(10**9, _mint_data(DECIMALS, 10**15), TOKEN_PROGRAM))
        authority_file = tmp_path / "authority.json"
        authority = _keyfile(authority_file)
        svm.airdrop(authority.pubkey(), 10 * 10**9)
        settings = hub_settings(
            tmp_path / "hub", aggregators=2, settlement_network="devnet",
            settlement_rpc_url=url, settlement_program_id=str(ledger.program_id),
        )
        settler = _keyfile(settings.settler_key_path())
        svm.airdrop(settler.pubkey(), 100 * 10**9)  # the operator funds the settler
        cli = Cli({"ETP_SETTLEMENT_PROGRAM_ID": str(ledger.program_id),
                   "ETP_DATA_DIR": str(settings.data_dir), "ETP_SITE": settings.site})

        # the market authority, with its own key, names the hub's settler
        out = await cli("settle", "market", "init", "--authority-keypair", str(authority_file),
                        "--mint", str(mint), "--settler", str(settler.pubkey()),
                        "--dispute-window", "2d", "--rpc-url", url, "--json")
        market = json.loads(out[out.index("{"):])
        assert market["settler"] == str(settler.pubkey())
        assert market["mint_decimals"] == DECIMALS and market["dispute_window_seconds"] == 172800
        address = market["market"]
        on_market = ("--market", address, "--rpc-url", url)
        await cli("settle", "market", "init", "--authority-keypair", str(authority_file),
                  "--mint", str(mint), "--settler", str(settler.pubkey()), "--rpc-url", url)

        # aggregators register and fund their escrows themselves
        agg_keys: dict[int, Keypair] = {}
        for bidder in (FIRST_AGGREGATOR_ID + 1, FIRST_AGGREGATOR_ID + 2):  # the hub's two
            path = tmp_path / f"aggregator-{bidder}.json"
            agg_keys[bidder] = key = _keyfile(path)
            svm.airdrop(key.pubkey(), 10**9)
            ata = associated_token_address(key.pubkey(), mint, TOKEN_PROGRAM)
            data = _token_account_data(mint, key.pubkey(), 5_000 * 10**DECIMALS)
            svm.set_account(ata, Account(2_039_280, data, TOKEN_PROGRAM))
            await cli("wallet", "register", "--keypair", str(path), "--aggregator", *on_market)
            out = await cli("wallet", "fund", "--keypair", str(path), "--amount",
                            str(DEPOSIT_TOKENS), *on_market)
            assert f"escrow holds {DEPOSIT_TOKENS:.{DECIMALS}f}" in out
            await cli("wallet", "add", "aggregator", str(bidder), str(key.pubkey()))
        # one owner with batteries 1 and 2 registers; battery 3's owner does not, yet
        owner_file = tmp_path / "owner-a.json"
        owner = _keyfile(owner_file)
        late_file = tmp_path / "owner-b.json"
        late = _keyfile(late_file)
        for key in (owner, late):
            svm.airdrop(key.pubkey(), 10**9)
        await cli("wallet", "register", "--keypair", str(owner_file), "--device", "1",
                  "--device", "2", *on_market)
        for device in (1, 2):
            await cli("wallet", "add", "battery", str(device), str(owner.pubkey()))
        await cli("wallet", "add", "battery", "3", str(late.pubkey()))
        # mistakes get one-line errors
        assert "not a base58" in await cli("wallet", "add", "battery", "4", "nope", ok=False)
        assert "--aggregator, or --device" in await cli(
            "wallet", "register", "--keypair", str(late_file), *on_market, ok=False)

        settings = settings.model_copy(update={"settlement_market": address})
        async with running_hub(settings) as hub:
            service = hub.settlement
            assert service is not None and hub.auctions is not None
            engine = hub.auctions
            async with sim_fleet(settings, hub.mqtt_url, count=3):
                await wait_for(lambda: engine.totals.trades >= 12, 90, "12 trades")
                await engine.stop()
            assert hub.store is not None
            trades = await hub.store.list_trades("verified")
            by_device = Counter(t.device_id for t in trades)
            assert by_device[3] >= 1, f"battery 3 sold nothing: {by_device}"

            async def settled() -> set[int]:
                rows = await hub.store.list_settlements()
                return {row.trade_id for row in rows if row.status == "settled"}

            ready = {t.id for t in trades if t.device_id != 3}
            deadline = time.monotonic() + 60
            while not ready <= await settled():
                assert time.monotonic() < deadline, "ready parties' trades did not settle"
                await asyncio.sleep(0.2)
            await wait_for(lambda: bool(hub.status()["settlement"]["waiting"]), 10, "waiting")
            waiting = hub.status()["settlement"]["waiting"]
            (reason,) = waiting
            assert "battery 3's owner" in reason and "not ready on the ledger" in reason
            assert waiting[reason] == by_device[3]
            assert not (await settled()) & {t.id for t in trades if t.device_id == 3}

            # battery 3's owner registers: its trades settle too
            await cli("wallet", "register", "--keypair", str(late_file), "--device", "3",
                      *on_market)
            everything = {t.id for t in trades}
            deadline = time.monotonic() + 60
            while not everything <= await settled():
                assert time.monotonic() < deadline, "battery 3's trades did not settle"
                await asyncio.sleep(0.2)

            # exactly the traded amounts moved, in base units of the 6-decimal token
            amount = {t.id: t.price_mc * 10 * t.energy_wh // 1000 for t in trades}
            cluster: Any = service.cluster
            for key, devices in ((owner, (1, 2)), (late, (3,))):
                earned = sum(amount[t.id] for t in trades if t.device_id in devices)
                ata = associated_token_address(key.pubkey(), mint, TOKEN_PROGRAM)
                assert await cluster.token_balance(ata) == earned
            for bidder, key in agg_keys.items():
                paid = sum(amount[t.id] for t in trades if t.bidder_id == bidder)
                vault = service.site.idl.vault_address(Pubkey.from_string(address), key.pubkey())
                assert await cluster.token_balance(vault) == DEPOSIT_TOKENS * 10**DECIMALS - paid
            idl = service.site.idl
            record = svm.get_account(idl.trade_record_address(
                Pubkey.from_string(address), trades[0].auction_id, trades[0].id))
            assert record is not None
            _, fields = idl.decode_account(bytes(record.data))
            assert fields["price_per_kwh"] == trades[0].price_mc * 10
            assert fields["seller"] in (owner.pubkey(), late.pubkey())
        # the hub never needed the authority's or the parties' keys
        assert not any(p.name.startswith(("aggregator", "owner", "authority"))
                       for p in settings.data_dir.iterdir())
    finally:
        await double.stop()


async def test_devnet_without_a_market_says_what_to_do(tmp_path: Path) -> None:
    settings = hub_settings(tmp_path, settlement_network="devnet",
                            settlement_rpc_url="http://127.0.0.1:9")
    async with running_hub(settings) as hub:
        status = hub.status()["settlement"]
        assert status["network"] == "devnet" and status["cluster"] == "devnet"
        assert "ETP_SETTLEMENT_MARKET" in status["last_error"]
        assert "etp settle market init" in status["last_error"]


def test_the_market_commands_explain_a_missing_endpoint_and_market(tmp_path: Path) -> None:
    runner = CliRunner()
    key = tmp_path / "k.json"
    key.write_text(json.dumps(list(bytes(Keypair()))))
    result = runner.invoke(app, ["wallet", "fund", "--keypair", str(key), "--amount", "1"],
                           env={"ETP_DATA_DIR": str(tmp_path)})
    assert result.exit_code == 1 and "--rpc-url" in result.stderr
    result = runner.invoke(app, ["wallet", "fund", "--keypair", str(key), "--amount", "1",
                                 "--rpc-url", "http://127.0.0.1:9"],
                           env={"ETP_DATA_DIR": str(tmp_path)})
    assert result.exit_code == 1 and "--market" in result.stderr
