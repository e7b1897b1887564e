"""Builds the settlement service a hub runs from its settings (cluster, keys, site), and the
settlement part of /api/v1/status."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import structlog

from hub.settings import Settings
from hub.store import Store

log = structlog.get_logger("hub.settlement")

__all__ = ["EXPLORER_CLUSTERS", "create_settlement", "settlement_status"]

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
    from hub.settlement.site import Site, load_or_create_keypair

    settler = load_or_create_keypair(settings.settler_key_path())
    authority = load_or_create_keypair(settings.authority_key_path())
    cluster: Any
    if settings.settlement_network == "embedded":
        cluster = EmbeddedCluster(
            read_program(settings.settlement_program_path()),
            block_ms=settings.settlement_block_ms,
        )
        idl = load_idl(cluster.program_id)
    elif settings.settlement_network == "localnet":
        from solders.pubkey import Pubkey

        from hub.settlement.breaker import CircuitBreaker, GuardedCluster
        from hub.settlement.rpc import RpcCluster

        cluster = GuardedCluster(
            RpcCluster(
                settings.settlement_rpc_url, name="localnet",
                max_priority_fee_micro_lamports=settings.settlement_max_priority_fee_micro_lamports,
            ),
            CircuitBreaker(),
        )
        program_id = settings.settlement_program_id
        idl = load_idl(Pubkey.from_string(program_id) if program_id else None)
        # public keys: the operator funds them with SOL on the cluster (they pay fees, rent)
        log.info("settlement on localnet", endpoint=cluster.cluster.endpoint,
                 program=str(idl.program_id), settler=str(settler.pubkey()),
                 authority=str(authority.pubkey()))
    else:
        raise ValueError(f"settlement network {settings.settlement_network!r} has no cluster")
    site = Site(cluster, idl, settler, authority)
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
        ),
        emit=emit,
    )


def settlement_status(network: str, service: Any, error: str | None) -> dict[str, Any]:
    """The "settlement" object of /api/v1/status."""
    counts = service.summary() if service is not None else {}
    return {
        "network": network,
        "cluster": EXPLORER_CLUSTERS.get(network),
        "pending": counts.get("pending", 0),
        "submitted": counts.get("submitted", 0),
        "settled": counts.get("settled", 0),
        "failed": counts.get("failed", 0),
        "available": counts.get("available", False) if service is not None else False,
        "last_error": counts.get("last_error") if service is not None else error,
    }
