"""The hub settling over JSON-RPC (ETP_SETTLEMENT_NETWORK=localnet): a trading hub pays every
verified trade once, by exactly its amount, through RpcCluster and the circuit breaker.

The cluster is a TEST DOUBLE: no Solana validator can run on these machines, so
tests/settlement/rpc_double.py serves Solana's JSON-RPC over HTTP on loopback from a LiteSVM
that runs the real etp_settlement program (deployed through the upgradeable loader by
EmbeddedCluster). The operator's part on a real localnet (deploy the program, fund the
settler and the market authority with SOL) is done here on the double's ledger."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from hub.settlement.breaker import GuardedCluster
from hub.settlement.embedded import EmbeddedCluster
from hub.settlement.program import read_program
from hub.settlement.rpc import RpcCluster
from hub.settlement.site import load_or_create_keypair
from tests.hub.helpers import hub_settings, running_hub, sim_fleet, wait_for
from tests.settlement.rpc_double import RpcDouble
from tests.settlement.test_hub_settles import _check_ledger, _report, _wait_all_settled

pytestmark = pytest.mark.slow


async def test_a_hub_on_localnet_settles_every_verified_trade_over_json_rpc(
    tmp_path: Path, program_file: Path
) -> None:
    ledger = EmbeddedCluster(read_program(program_file))  # the program, deployed
    double = RpcDouble(ledger.svm)
    url = await double.start()
    try:
        settings = hub_settings(
            tmp_path, aggregators=3, settlement_network="localnet", settlement_rpc_url=url,
            settlement_program_id=str(ledger.program_id),
        )
        for path in (settings.settler_key_path(), settings.authority_key_path()):
            double.svm.airdrop(load_or_create_keypair(path).pubkey(), 1_000 * 10**9)
        async with running_hub(settings) as hub:
            assert hub.settlement is not None
            assert isinstance(hub.settlement.cluster, GuardedCluster)
            assert isinstance(hub.settlement.cluster.cluster, RpcCluster)
            assert hub.status()["settlement"]["network"] == "localnet"
            started = time.monotonic()
            async with sim_fleet(settings, hub.mqtt_url, count=4):
                assert hub.auctions is not None
                engine = hub.auctions
                await wait_for(lambda: engine.totals.trades >= 10, 60, "10 trades")
                await engine.stop()
            trades = await _wait_all_settled(hub, 60)
            elapsed = time.monotonic() - started

            def account_data(address: object) -> bytes | None:
                account = double.svm.get_account(address)  # type: ignore[arg-type]
                return None if account is None else bytes(account.data)

            await _check_ledger(hub, trades, account_data)
            _report("localnet (JSON-RPC test double)", len(trades), elapsed, hub)
        assert double.calls["sendTransaction"] >= 1 and double.calls["getSignatureStatuses"] >= 1
    finally:
        await double.stop()
