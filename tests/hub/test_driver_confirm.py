"""The driver carries the confirm protocol to a battery: copies re-sent on its timers, answers
matched to the copy they answer, and the session's verdict booked.

The link is a stand-in that answers each BidConfirm as a battery would, through the driver's
own on_response; the driver, its session, its timers and the store (SQLite) are real.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from hub.auctions.config import AuctionConfig
from hub.auctions.driver import AuctionDriver, LiveAuction
from hub.auctions.messages import Outcome, Phase, TradeRecorded, TradeTerms
from hub.auctions.rules import Offer
from hub.auctions.session import AuctionSession
from hub.buyers.bidding import Buyers
from hub.devices import DeviceKeyring, Registry, SenderPool
from hub.events import EventKind, EventLog
from hub.metrics import Metrics
from hub.settings import Settings
from hub.store import Store
from shared_etp.frame import parse_frame
from shared_etp.schema import (
    BID_ACCEPT,
    BID_CONFIRM,
    BID_REJECT,
    REASON_HOLD_EXPIRED,
    REASON_NOT_HOLDER,
)

DEVICE = 3
BIDDER = 100001


class AnsweringLink:
    """Answers the n-th BidConfirm with answers[n] (None: no answer); other requests (the
    Terminates of a void or unverified trade) go unanswered."""

    def __init__(self, answers: list[dict[str, int] | None]) -> None:
        self.answers = answers
        self.driver: AuctionDriver | None = None
        self.sent = 0

    def publish(self, topic: str, frame: bytes, qos: int = 0, retain: bool = False) -> None:
        msg, _, _ = parse_frame(frame)
        if msg["t"] != BID_CONFIRM:
            return
        answer = self.answers[min(self.sent, len(self.answers) - 1)]
        self.sent += 1
        if answer is not None and self.driver is not None:
            reply = {"dst": msg["src"], "id": msg["id"], **answer}
            asyncio.get_running_loop().call_soon(self.driver.on_response, DEVICE, reply)


async def confirm(tmp_path: Path, answers: list[dict[str, Any] | None]) -> tuple[Outcome, int]:
    """Confirm a recorded trade to a battery answering `answers`."""
    settings = Settings(data_dir=tmp_path, response_timeout_ms=40, hold_timeout_ms=100)
    link = AnsweringLink(answers)
    async with Store(settings.resolved_database_url()) as store:
        events = EventLog(store)
        await events.start()
        confirms = events.subscribe([EventKind.CONFIRM_ANSWERED, EventKind.AUCTION_CLOSED])
        driver = AuctionDriver(
            AuctionConfig.from_settings(settings),
            link=link,
            registry=Registry(1000, 3.0, lambda *_: None),
            senders=SenderPool(DeviceKeyring(b"driver-confirm-test-master-0123"), 1),
            notice_key=bytes(32),
            store=store,
            metrics=Metrics(),
            events=events,
            buyers=Buyers([]),
        )
        link.driver = driver
        auction_id = await store.open_auction(
            device_id=DEVICE, site="site1", mechanism="ascending", lot_wh=500, reserve_mc=20000,
            opened_ms=0,
        )
        terms = TradeTerms(BIDDER, 30000, 500, 20000)
        live = LiveAuction(DEVICE, 0, auction_id, trade_id=1)
        live.session = AuctionSession(Offer(DEVICE, auction_id, 500, 20000), driver.rules, None)
        live.session.terms = terms  # as if bidding had ended with this winner
        live.session.phase = Phase.RECORDING
        driver.runs[DEVICE] = live
        driver._feed(live, TradeRecorded())
        for _ in range(100):
            if not driver.runs:
                break
            await asyncio.sleep(0.02)
        assert not driver.runs, "the confirm never ended"
        outcome = live.session.outcome
        assert outcome is not None
        # the event log saw every answer the battery gave, then the auction's close
        seen = []
        while (event := confirms.get_nowait()) is not None:
            seen.append(event)
        answered = [event for event in seen if event.kind is EventKind.CONFIRM_ANSWERED]
        assert len(answered) == sum(answer is not None for answer in answers[: link.sent])
        assert seen[-1].kind is EventKind.AUCTION_CLOSED
        assert seen[-1].payload["outcome"] == outcome.value
        await events.stop()
        return outcome, link.sent


ACCEPT = {"t": BID_ACCEPT}
NOT_HOLDER = {"t": BID_REJECT, "reason": REASON_NOT_HOLDER}
EXPIRED = {"t": BID_REJECT, "reason": REASON_HOLD_EXPIRED}


async def test_answers_and_silence_reach_the_session(tmp_path: Path) -> None:
    assert await confirm(tmp_path / "a", [ACCEPT]) == (Outcome.CLEARED, 1)
    assert await confirm(tmp_path / "b", [EXPIRED]) == (Outcome.VOID, 1)
    assert await confirm(tmp_path / "c", [None]) == (Outcome.UNVERIFIED, 3)  # every copy sent


async def test_an_answer_to_a_resent_copy_is_matched_to_that_copy(tmp_path: Path) -> None:
    """Copy 1 lost, copy 2 answered not_holder: the battery forgot the auction (unverified)."""
    assert await confirm(tmp_path / "a", [None, NOT_HOLDER]) == (Outcome.UNVERIFIED, 2)
    assert await confirm(tmp_path / "b", [None, ACCEPT]) == (Outcome.CLEARED, 2)
