"""Builds the settlement service a hub runs from its settings (cluster, keys, site), and the
settlement part of /api/v1/status."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

import structlog

from hub.settings import Settings
from hub.store import Store
from hub.store.models import SETTLEMENT_STATUSES

log = structlog.get_logger("hub.settlement")

__all__ = ["DEFAULT_RPC_URLS", "EXPLORER_CLUSTERS", "create_settlement", "settlement_status"]

DEFAULT_RPC_URLS = {
    "localnet": "http://127.0.0.1:8899",
    "devnet": "https://api.devnet.solana.com",
    "mainnet": "https://api.mainnet-beta.solana.com",
}

# the cluster name block explorers take (?cluster=...); None: no explorer sees this ledger
EXPLORER_CLUSTERS: dict[str, str | None] = {
    "embedded": None,
    "off": None,
    "localnet": None,
    "devnet": "devnet",
    "mainnet": "mainnet-beta",
}


def create_settlement(
    settings: Settings,
    store: Store,
    *,
    aggregator_ids: Iterable[int],
    emit: Callable[..., None],
) -> Any:
    """A SettlementService on the settings' network (not started). Raises ProgramMissingError
    when the program is not built, KeyFileError when a key file is unusable."""
    try:
        import solders.litesvm  # noqa: F401
    except ImportError as exc:
        raise RuntimeError(
            f"settlement needs solders (with LiteSVM), which is not installed ({exc}); run "
            "bash scripts/setup.sh, or set ETP_SETTLEMENT_NETWORK=off"
        ) from None
    from hub.settlement.embedded import EmbeddedCluster
    from hub.settlement.program import load_idl, read_program
    from hub.settlement.service import SettlementConfig, SettlementService
    from hub.settlement.site import MarketSite, Site, load_or_create_keypair

    network = settings.settlement_network
    settler = load_or_create_keypair(settings.settler_key_path())
    cluster: Any
    site: MarketSite
    if network == "embedded":
        cluster = EmbeddedCluster(
            read_program(settings.settlement_program_path()),
            block_ms=settings.settlement_block_ms,
        )
        idl = load_idl(cluster.program_id)
        site = Site(cluster, idl, settler, load_or_create_keypair(settings.authority_key_path()),
                    dispute_window_s=settings.settlement_dispute_window_s)
    elif network in DEFAULT_RPC_URLS:
        cluster, idl = rpc_cluster(settings)
        if settings.settlement_market:
            site = registered_site(settings, store, cluster, idl, settler)
        elif network == "localnet":
            authority = load_or_create_keypair(settings.authority_key_path())
            site = Site(cluster, idl, settler, authority,
                        dispute_window_s=settings.settlement_dispute_window_s)
            # public keys: the operator funds them with SOL on the cluster (fees, rent)
            log.info("settlement on localnet: the hub makes a test market", program=str(
                idl.program_id), settler=str(settler.pubkey()), authority=str(authority.pubkey()))
        else:
            raise ValueError(
                f"settlement on {network} needs ETP_SETTLEMENT_MARKET, the address of a market "
                f"whose settler is this hub's key {settler.pubkey()} (the market authority "
                "makes it with `etp settle market init --settler` that key)"
            )
    else:
        raise ValueError(f"settlement network {network!r} has no cluster")
    return SettlementService(
        store,
        cluster,
        site,
        site_name=settings.site,
        aggregator_ids=aggregator_ids,
        config=SettlementConfig(
            max_priority_fee_micro_lamports=settings.settlement_max_priority_fee_micro_lamports,
            compute_unit_margin_pct=settings.settlement_compute_unit_margin_pct,
            max_in_flight=settings.settlement_max_in_flight,
            backoff_max_s=settings.settlement_backoff_max_s,
            linger_ms=settings.settlement_linger_ms,
            reputation_interval_s=settings.settlement_reputation_interval_s,
        ),
        emit=emit,
        # the embedded ledger starts empty: its tables are made anew each start
        tables_file=None if network == "embedded"
        else settings.data_dir / f"lookup-tables-{network}-{site.market}.json",
    )


def settlement_status(network: str, service: Any, error: str | None) -> dict[str, Any]:
    """The "settlement" object of /api/v1/status."""
    counts = service.summary() if service is not None else {}
    return {
        "network": network,
        "cluster": EXPLORER_CLUSTERS.get(network),
        # every outbox status; disputed / refunded / upheld: disputes of settled trades (open,
        # resolved with a refund, found unfounded)
        **{status: counts.get(status, 0) for status in SETTLEMENT_STATUSES},
        # where the published bidder reputation comes from: "ledger", or "hub" (its own
        # confirmation ratio) when settlement is off or the ledger could not be read lately
        "reputation": service.reputation.status() if service is not None else {"source": "hub"},
        "available": counts.get("available", False) if service is not None else False,
        "last_error": counts.get("last_error") if service is not None else error,
        # trades waiting for a party's wallet (real networks), by reason
        "waiting": counts.get("waiting", {}),
    }


def rpc_cluster(settings: Settings) -> tuple[Any, Any]:
    """(the settings' JSON-RPC cluster behind a circuit breaker, the program's IDL)."""
    from solders.pubkey import Pubkey

    from hub.settlement.breaker import CircuitBreaker, GuardedCluster
    from hub.settlement.program import load_idl
    from hub.settlement.rpc import RpcCluster

    network = settings.settlement_network
    cluster = GuardedCluster(
        RpcCluster(
            settings.settlement_rpc_endpoint(), name=network,
            max_priority_fee_micro_lamports=settings.settlement_max_priority_fee_micro_lamports,
        ),
        CircuitBreaker(),
    )
    program_id = settings.settlement_program_id
    return cluster, load_idl(Pubkey.from_string(program_id) if program_id else None)


def registered_site(settings: Settings, store: Store, cluster: Any, idl: Any,
                    settler: Any) -> Any:
    """The market named by ETP_SETTLEMENT_MARKET, its parties' wallets from the store."""
    from solders.pubkey import Pubkey

    from hub.settlement.registered import RegisteredSite

    assert settings.settlement_market is not None
    market = Pubkey.from_string(settings.settlement_market)
    site_name = settings.site
    book: dict[tuple[str, int], str] = {}
    read_at = [-1e9]

    async def wallet(role: str, party_id: int) -> str | None:
        """From the store, read again at most every 5 s (`etp wallet add` in another process
        takes effect within that)."""
        if time.monotonic() - read_at[0] > 5.0:
            rows = await store.list_wallets(site_name)
            book.clear()
            book.update({(row.role, row.party_id): row.pubkey for row in rows})
            read_at[0] = time.monotonic()
        return book.get((role, party_id))

    log.info("settlement in a registered market", network=settings.settlement_network,
             endpoint=cluster.cluster.endpoint, program=str(idl.program_id), market=str(market),
             settler=str(settler.pubkey()))
    return RegisteredSite(cluster, idl, settler, market, wallet)
