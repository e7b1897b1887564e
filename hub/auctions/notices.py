"""Market notices the batteries read: bidder reputation and clearing prices, retained, each
board's signed with that board's own notice key (so no board can forge another's)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Protocol

from hub.buyers.bidding import Buyers
from shared_etp.cbor import dumps
from shared_etp.compat import hmac_sha256, now_ms
from shared_etp.errors import OVERSIZED, ProtocolError
from shared_etp.frame import NOTICE_CLEARING, NOTICE_REPUTATION, notice_key
from shared_etp.schema import MAX_FRAME_BYTES, PROTOCOL_VERSION
from shared_etp.topics import CLEARING, REPUTATION, market_topic, notice_topic

__all__ = ["NoticeSigner", "Publisher", "ReputationView", "publish_notices"]

_HUB_SRC = 0

# the hub's own figures (0..10000 per bidder id) -> the figures to publish (e.g. combined with
# the ledger's Reputation accounts: hub.settlement.reputation.ChainReputation.published)
ReputationView = Callable[[Mapping[int, int]], dict[int, int]]


class Publisher(Protocol):
    """What the auction side needs from the transport."""

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        """Queue one publish (raises while the link is down)."""


class NoticeSigner:
    """Signs market notices for boards, each with the board's own key.

    The keys are derived from the notice root (derive_key(master, 0), the hub's alone) once per
    board and kept. A notice's data is encoded once per round and shared by every board's
    frame: the frames are byte for byte `shared_etp.signing.encode_notice(kind, data, 0, N,
    notice_key(root, N), ts)` (tests/protocol checks it), for ~1,000 boards per round."""

    def __init__(self, notice_root: bytes) -> None:
        self._root = notice_root
        self._keys: dict[int, bytes] = {}
        self.site_wide_cleared = False  # the first version's retained site-wide notices

    def key(self, device_id: int) -> bytes:
        """Board `device_id`'s notice key."""
        key = self._keys.get(device_id)
        if key is None:
            key = self._keys[device_id] = notice_key(self._root, device_id)
        return key

    def sign(self, kind: int, data: object, device_ids: Iterable[int], ts: int) -> dict[int, bytes]:
        """Board id -> its notice of `kind` carrying `data`, stamped `ts` (ms since 1970)."""
        data_bytes = dumps(data)
        frames = {}
        for device_id in device_ids:
            # {0: v, 1: kind, 2: src, 3: kid, 4: ts} re-headed as a 6-entry map, then 5: data
            head = dumps({0: PROTOCOL_VERSION, 1: kind, 2: _HUB_SRC, 3: device_id, 4: ts})
            body = b"\xa6" + head[1:] + b"\x05" + data_bytes
            if len(body) + 32 > MAX_FRAME_BYTES * 8:  # as encode_notice: boards refuse more
                raise ProtocolError(OVERSIZED, f"notice of {len(body) + 32} bytes is too large")
            frames[device_id] = body + hmac_sha256(self.key(device_id), body)
        return frames


def publish_notices(
    link: Publisher,
    site: str,
    signer: NoticeSigner,
    buyers: Buyers,
    device_ids: Iterable[int],
    reputation_view: ReputationView | None = None,
) -> int:
    """Publish, retained, the reputation and clearing-price notices of each board in
    `device_ids` on its own topics (etp/v1/<site>/market/<id>/{reputation,clearing});
    returns how many were published. The reputation is the hub's confirmation ratio, or what
    `reputation_view` makes of it.

    The first time, the retained site-wide notices of the first version (etp/v1/<site>/market/
    {reputation,clearing}, one key shared by every board) are deleted from the broker (an
    empty retained message), so no board flashed before per-board keys keeps acting on
    stale figures: it falls back to its own history until it is given its notice key."""
    if not signer.site_wide_cleared:
        for leaf in (REPUTATION, CLEARING):
            link.publish(market_topic(site, leaf), b"", 1, True)
        signer.site_wide_cleared = True
    scores = buyers.reputation()
    if reputation_view is not None:
        scores = reputation_view(scores)
    ids = list(device_ids)
    ts = now_ms()
    published = 0
    for kind, leaf, data in (
        (NOTICE_REPUTATION, REPUTATION, scores),
        (NOTICE_CLEARING, CLEARING, buyers.history.recent_clearing_mc),
    ):
        for device_id, frame in signer.sign(kind, data, ids, ts).items():
            link.publish(notice_topic(site, device_id, leaf), frame, 1, True)
            published += 1
    return published
