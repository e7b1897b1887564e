"""The embedded broker child process (amqtt) under a fleet connecting at once, as in `etp demo`.

Boards that subscribe only to their own request topic must receive nothing else (amqtt 0.12.1
sent them every retained birth matching the hub's wildcard), and the broker must not log a
traceback while many clients connect and subscribe at the same time.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from hub.transport.mqtt import MqttClient
from shared_etp import topics
from tests.brokers import free_port, mosquitto_available, mosquitto_broker, wait_listening

REPO = Path(__file__).resolve().parents[2]
SITE = "site1"
RETAINED_BIRTHS = 20
BOARDS = 40


@contextlib.asynccontextmanager
async def broker_child(port: int) -> AsyncIterator[list[str]]:
    """Run `python -m hub.transport.broker` on `port`; yield a list that receives its stderr
    lines once it has stopped."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "hub.transport.broker",
        "--port",
        str(port),
        cwd=REPO,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None and process.stderr is not None
    stderr_lines: list[str] = []
    try:
        assert (await asyncio.wait_for(process.stdout.readline(), 60)).strip() == b"ready"
        await wait_listening(port)
        yield stderr_lines
    finally:
        if process.returncode is None:
            process.terminate()
        _, err = await asyncio.wait_for(process.communicate(), 30)
        stderr_lines.extend(err.decode(errors="replace").splitlines())


async def _stray_deliveries(port: int) -> dict[int, list[str]]:
    """Retained births of earlier boards, a hub watching births through a wildcard, then
    BOARDS boards connecting at once, each subscribed to its own request topic only. Returns
    per board the topics it received that it never subscribed to."""
    # The hub: watches every birth (a wildcard filter), as the runtime does.
    hub = MqttClient("127.0.0.1", port, "hub", lambda topic, payload: None)
    await hub.connect()
    await hub.subscribe([(topics.device_wildcard(SITE, topics.BIRTH), 1)])
    # Boards started earlier left their births retained.
    for device_id in range(1, RETAINED_BIRTHS + 1):
        topic = topics.device_topic(SITE, device_id, topics.BIRTH)
        await hub.publish_wait(topic, b"register", qos=1, retain=True)

    received: dict[int, list[str]] = {}
    got_ping: dict[int, asyncio.Event] = {}

    async def board(device_id: int) -> MqttClient:
        own = topics.device_topic(SITE, device_id, topics.REQUEST)
        received[device_id] = []
        got_ping[device_id] = asyncio.Event()

        def on_message(topic: str, payload: bytes) -> None:
            received[device_id].append(topic)
            if topic == own:
                got_ping[device_id].set()

        client = MqttClient("127.0.0.1", port, f"board-{device_id}", on_message)
        await client.connect()
        await client.subscribe([(own, 1)])
        return client

    first = RETAINED_BIRTHS + 1
    device_ids = range(first, first + BOARDS)
    boards = await asyncio.gather(*(board(device_id) for device_id in device_ids))
    # A message on each board's own topic arrives after anything the broker sent it on
    # connecting: once every board has it, all stray deliveries would have arrived too.
    for device_id in device_ids:
        hub.publish(topics.device_topic(SITE, device_id, topics.REQUEST), b"ping", qos=1)
    await asyncio.wait_for(asyncio.gather(*(got_ping[d].wait() for d in device_ids)), 60)
    for client in [*boards, hub]:
        await client.disconnect()
    return {
        device_id: [topic for topic in got if not topic.endswith(f"/{device_id}/req")]
        for device_id, got in received.items()
        if any(not topic.endswith(f"/{device_id}/req") for topic in got)
    }


async def test_embedded_broker_sends_boards_only_their_own_topics_and_logs_no_error() -> None:
    port = free_port()
    async with broker_child(port) as broker_stderr:
        strays = await _stray_deliveries(port)
    assert strays == {}
    assert not [line for line in broker_stderr if "Traceback" in line or "Error" in line], (
        "\n".join(broker_stderr)
    )


@pytest.mark.skipif(not mosquitto_available(), reason="mosquitto is not installed")
async def test_mosquitto_sends_boards_only_their_own_topics() -> None:
    """The reference behaviour the embedded broker must match."""
    async with mosquitto_broker() as url:
        strays = await _stray_deliveries(int(url.rsplit(":", 1)[1]))
    assert strays == {}
