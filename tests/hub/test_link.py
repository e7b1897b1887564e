"""The hub's MQTT intake: bounded under a status flood, never silently losing trade frames."""

from __future__ import annotations

import asyncio

from hub.transport.link import Intake

STATUS = "etp/v1/site1/bess/7/status"
RESP = "etp/v1/site1/bess/7/resp"


async def test_status_flood_is_shed_but_trade_frames_are_kept_and_counted() -> None:
    handled: list[str] = []
    intake = Intake(lambda topic, payload: handled.append(topic), limit=100)
    for _ in range(1000):  # a flood while the handler is not running
        intake.put(STATUS, b"s")
    intake.put(RESP, b"r")  # over the soft limit, a response is still queued
    assert len(intake.queue) == 101
    assert intake.dropped_status == 900 and intake.dropped_trade_path == 0
    for _ in range(300):  # only past the hard limit is a trade frame dropped, and counted
        intake.put(RESP, b"r")
    assert len(intake.queue) == intake.hard_limit == 400
    assert intake.dropped_trade_path == 1

    task = asyncio.create_task(intake.run(batch=50))
    for _ in range(100):
        await asyncio.sleep(0)
        if not intake.queue:
            break
    task.cancel()
    assert len(handled) == 400 and handled[100:] == [RESP] * 300
    assert intake.high_water == 400


async def test_a_failing_handler_is_counted_and_does_not_stop_the_intake() -> None:
    seen: list[bytes] = []

    def handler(topic: str, payload: bytes) -> None:
        if payload == b"bad":
            raise ValueError("boom")
        seen.append(payload)

    intake = Intake(handler)
    task = asyncio.create_task(intake.run())
    for payload in (b"a", b"bad", b"b"):
        intake.put(RESP, payload)
    for _ in range(10):
        await asyncio.sleep(0)
    task.cancel()
    assert seen == [b"a", b"b"] and intake.handler_errors == 1
