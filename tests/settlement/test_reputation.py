"""Bidder reputation read back from the ledger: the rule (monotone, the hub's figure without a
lost dispute), and a live hub whose aggregator loses a dispute: the battery sees a lower
reputation on the retained, signed notice; an unreadable ledger falls back to the hub's figure."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

import pytest

from hub.auth import Role
from hub.settlement.embedded import EmbeddedCluster
from hub.settlement.reputation import ChainStanding, chain_factor, combined_reputation
from hub.settlement.wiring import settlement_status
from shared_etp.compat import now_ms
from tests.hub.helpers import api_key, get_json, hub_settings, running_hub, sim_fleet, wait_for


def test_chain_factor_is_monotone_and_neutral_without_lost_disputes() -> None:
    assert all(chain_factor(trades, 0) == 10_000 for trades in (0, 1, 50, 10**6))
    for lost in range(0, 5):
        row = [chain_factor(trades, lost) for trades in range(0, 200)]
        assert row == sorted(row), "more settled trades never lower it"
    for trades in (0, 3, 40, 1000):
        column = [chain_factor(trades, lost) for lost in range(0, 6)]
        assert all(a > b for a, b in itertools.pairwise(column)), column
    assert chain_factor(9, 1) == 5_000  # 10 trades against one lost dispute: half
    standing = ChainStanding(trades=9, score=-1, disputes_opened=1, disputes_lost=1)
    assert combined_reputation(8_000, standing) == 4_000
    assert combined_reputation(8_000, None) == 8_000  # no account on the ledger: the hub's


def test_status_says_hub_figure_when_settlement_is_off() -> None:
    status = settlement_status("off", None, None)
    assert status["reputation"] == {"source": "hub"}
    assert status["disputed"] == status["refunded"] == status["upheld"] == 0


@pytest.mark.slow
async def test_lost_dispute_lowers_the_reputation_a_battery_sees(
    tmp_path: Path, program_file: Path
) -> None:
    settings = hub_settings(
        tmp_path,
        aggregators=1,
        settlement_program_file=program_file,
        settlement_linger_ms=0,
        settlement_reputation_interval_s=0.5,
    )
    async with running_hub(settings) as hub, sim_fleet(settings, hub.mqtt_url, count=2) as fleet:
        service = hub.settlement
        assert service is not None and hub.auctions is not None and hub.store is not None
        battery = fleet.cores[1].evaluator  # what battery 1 holds from the retained notice
        await wait_for(lambda: service.counts["settled"] >= 2, 60, "2 trades settled")
        operator_view = hub.auctions.operator
        operator_view.pause_trading({"key_id": None, "name": "test"}, now_ms())
        await asyncio.sleep(1.5)  # auctions open at the pause finish; their trades settle
        await wait_for(
            lambda: service.counts["pending"] + service.counts["submitted"] == 0,
            20,
            "the last trades settled",
        )
        (buyer,) = hub.auctions.buyers.by_id  # the one aggregator
        hub_figure = hub.auctions.buyers.reputation()[buyer]
        # from the ledger, no lost dispute: the hub's own figure, as before
        await wait_for(
            lambda: battery.hub_reputation.get(buyer) == hub_figure,
            10,
            "the battery holding the hub's figure",
        )
        assert hub.status()["settlement"]["reputation"]["source"] == "ledger"

        trade = next(row for row in await hub.store.list_settlements() if row.status == "settled")
        key = await api_key(hub, Role.OPERATOR)
        base = f"{hub.http_url}/api/v1/settlements/{trade.trade_id}"
        code, body = await asyncio.to_thread(
            get_json, f"{base}/dispute", key, method="POST", body={"by": "buyer", "reason": "test"}
        )
        assert code == 200, body
        code, body = await asyncio.to_thread(
            get_json, f"{base}/resolve", key, method="POST", body={"refund_mc": 0}
        )
        assert code == 200 and body["status"] == "upheld" and body["penalised"] == "buyer", body

        site = service.site
        assert isinstance(service.cluster, EmbeddedCluster)
        data = service.cluster.account_data(site.aggregator_party(buyer).reputation)
        assert data is not None
        account = site.idl.decode_account(data)[1]
        assert account["disputes_lost"] == 1
        expected = combined_reputation(
            hub_figure,
            ChainStanding(
                account["trades"],
                account["score"],
                account["disputes_opened"],
                account["disputes_lost"],
            ),
        )
        assert expected < hub_figure * 9 // 10  # a lost dispute against a few trades
        await wait_for(
            lambda: battery.hub_reputation.get(buyer) == expected,
            10,
            f"the battery seeing {expected} (was {hub_figure})",
        )
        assert hub.status()["settlement"]["reputation"]["disputes_lost"] == {buyer: 1}
        await wait_for(lambda: hub.status()["settlement"]["upheld"] == 1, 5, "upheld counted")

        # the ledger goes away: after three missed reads the hub's own figure again
        service.cluster.unavailable = True
        await wait_for(
            lambda: battery.hub_reputation.get(buyer) == hub_figure,
            10,
            "the battery back on the hub's figure",
        )
        assert hub.status()["settlement"]["reputation"]["source"] == "hub"
        service.cluster.unavailable = False
        await wait_for(
            lambda: battery.hub_reputation.get(buyer) == expected, 10, "the ledger's figure again"
        )


async def test_rpc_cluster_reads_account_data_in_chunks_in_order() -> None:
    """get_accounts over JSON-RPC (the localnet path of the reputation reads): data as the
    ledger holds it, None for missing accounts, 100 addresses per call."""
    pytest.importorskip("solders.litesvm", reason="solders (with LiteSVM) is not installed")
    from solders.account import Account
    from solders.keypair import Keypair

    from hub.settlement.rpc import RpcCluster
    from tests.settlement.rpc_double import RpcDouble

    async with RpcDouble() as double:
        addresses = [Keypair().pubkey() for _ in range(150)]
        owner = Keypair().pubkey()
        present = {0: b"\x01" * 147, 100: b"\x02\x03", 149: bytes(range(40))}
        for index, data in present.items():
            double.svm.set_account(
                addresses[index],
                Account(lamports=10**7, data=data, owner=owner, executable=False, rent_epoch=0),
            )
        rpc = RpcCluster(double.url, name="localnet", timeout_s=2.0)
        try:
            found = await rpc.get_accounts(addresses)
        finally:
            await rpc.close()
        assert [None if a is None else a.data for a in found] == [
            present.get(index) for index in range(150)
        ]
        assert found[0] is not None and found[0].owner == owner
        assert double.calls["getMultipleAccounts"] == 2
