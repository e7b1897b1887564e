"""Market notices the batteries read: signed, retained bidder reputation and clearing prices."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Protocol

from hub.buyers.bidding import Buyers
from shared_etp.frame import NOTICE_CLEARING, NOTICE_REPUTATION, encode_notice
from shared_etp.topics import CLEARING, REPUTATION, market_topic

__all__ = ["Publisher", "ReputationView", "publish_notices"]

# the hub's own figures (0..10000 per bidder id) -> the figures to publish (e.g. combined with
# the ledger's Reputation accounts: hub.settlement.reputation.ChainReputation.published)
ReputationView = Callable[[Mapping[int, int]], dict[int, int]]


class Publisher(Protocol):
    """What the auction side needs from the transport."""

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        """Queue one publish (raises while the link is down)."""


def publish_notices(
    link: Publisher, site: str, notice_key: bytes, buyers: Buyers,
    reputation_view: ReputationView | None = None,
) -> None:
    """Publish the retained, signed reputation and clearing-price notices of `site`. The
    reputation is the hub's confirmation ratio, or what `reputation_view` makes of it."""
    scores = buyers.reputation()
    if reputation_view is not None:
        scores = reputation_view(scores)
    reputation = encode_notice(NOTICE_REPUTATION, scores, 0, 0, notice_key)
    link.publish(market_topic(site, REPUTATION), reputation, 1, True)
    clearing = encode_notice(NOTICE_CLEARING, buyers.history.recent_clearing_mc, 0, 0, notice_key)
    link.publish(market_topic(site, CLEARING), clearing, 1, True)
