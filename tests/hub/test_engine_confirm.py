"""How the engine reads a battery's answers to BidConfirm (and to its re-sent copies).

The link is a stand-in that answers each BidConfirm as a battery would, through the engine's
own on_response; everything else is the real engine.
"""

from __future__ import annotations

import asyncio
from typing import Any

from hub.auctions.driver import AuctionRun, Engine, EngineConfig
from hub.devices import DeviceKeyring, Registry, SenderPool
from hub.metrics import Metrics
from shared_etp.frame import parse_frame
from shared_etp.schema import (
    BID_ACCEPT,
    BID_REJECT,
    REASON_HOLD_EXPIRED,
    REASON_NOT_HOLDER,
)

DEVICE = 3
BIDDER = 1001


class AnsweringLink:
    """Answers the n-th BidConfirm with answers[n] (None: no answer)."""

    def __init__(self, answers: list[dict[str, int] | None]) -> None:
        self.answers = answers
        self.engine: Engine | None = None
        self.sent = 0

    def publish(self, topic: str, frame: bytes, qos: int = 0, retain: bool = False) -> None:
        msg, _, _ = parse_frame(frame)
        answer = self.answers[min(self.sent, len(self.answers) - 1)]
        self.sent += 1
        if answer is not None and self.engine is not None:
            reply = {"dst": msg["src"], "id": msg["id"], **answer}
            asyncio.get_running_loop().call_soon(self.engine.on_response, DEVICE, reply)


def make_engine(link: AnsweringLink) -> Engine:
    engine = Engine(
        EngineConfig(site="s1", response_timeout_ms=40, hold_timeout_ms=40),
        link=link,
        registry=Registry(1000, 3.0, lambda *_: None),
        senders=SenderPool(DeviceKeyring(b"engine-confirm-test-master-0123"), 1),
        notice_key=bytes(32),
        store=None,
        metrics=Metrics(),
        aggregators=[],
    )
    link.engine = engine
    return engine


async def confirm(answers: list[dict[str, Any] | None], **kwargs: Any) -> tuple[str, Any, int]:
    link = AnsweringLink(answers)
    outcome, reason = await make_engine(link)._send_confirm(
        BIDDER, DEVICE, 7, 30000, 500, **kwargs
    )
    return outcome, reason, link.sent


ACCEPT = {"t": BID_ACCEPT}
NOT_HOLDER = {"t": BID_REJECT, "reason": REASON_NOT_HOLDER}
EXPIRED = {"t": BID_REJECT, "reason": REASON_HOLD_EXPIRED}


async def test_accept_commits_and_a_refusal_of_the_only_copy_refuses() -> None:
    assert await confirm([ACCEPT]) == ("committed", None, 1)
    assert await confirm([EXPIRED]) == ("refused", REASON_HOLD_EXPIRED, 1)
    assert (await confirm([NOT_HOLDER]))[:2] == ("refused", REASON_NOT_HOLDER)


async def test_not_holder_to_a_resent_confirm_keeps_the_trade_unverified() -> None:
    """The battery answers a repeat of a trade it committed with BidAccept; not_holder means it
    no longer knows the auction (a reboot): the trade may stand, so it is kept, unverified."""
    outcome, reason, sent = await confirm([None, NOT_HOLDER])  # the first copy went unanswered
    assert (outcome, reason, sent) == ("unknown", REASON_NOT_HOLDER, 2)
    assert await confirm([NOT_HOLDER], duplicate_possible=True) == (
        "unknown", REASON_NOT_HOLDER, 1
    )  # after a hub restart
    assert await confirm([ACCEPT], duplicate_possible=True) == ("committed", None, 1)
    assert await confirm([EXPIRED], duplicate_possible=True) == (
        "refused", REASON_HOLD_EXPIRED, 1
    )


async def test_no_answer_at_all_is_unknown_after_every_copy() -> None:
    assert await confirm([None]) == ("unknown", None, 3)


async def test_a_terminated_run_never_commits() -> None:
    """A run terminated while its task was being cancelled (Python 3.11's wait_for can drop
    the cancel when a reply arrives at the same moment) records no trade and sends no confirm:
    the battery has already closed the auction. (The engine has no store here: recording a
    trade would fail the test.)"""
    link = AnsweringLink([ACCEPT])
    engine = make_engine(link)
    run = AuctionRun(auction_id=7, device_id=DEVICE, opened_ms=0, terminated=True)
    assert await engine._commit(run, None, None, None) == "terminated"  # type: ignore[arg-type]
    assert link.sent == 0 and not run.committing
