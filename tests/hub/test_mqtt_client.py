"""The hub's own MQTT 3.1.1 client against real brokers and a misbehaving one."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import pytest

from hub.transport.broker import parse_mqtt_url
from hub.transport.mqtt import MqttClient, MqttError, Will
from tests.brokers import embedded_broker, free_port, mosquitto_broker

BROKERS = {"amqtt": embedded_broker, "mosquitto": mosquitto_broker}


@pytest.fixture(params=sorted(BROKERS))
async def broker(request: pytest.FixtureRequest) -> AsyncIterator[tuple[str, int]]:
    async with BROKERS[request.param]() as url:
        yield parse_mqtt_url(url)


def _collector() -> tuple[list[tuple[str, bytes]], Callable[[str, bytes], None]]:
    got: list[tuple[str, bytes]] = []
    return got, lambda topic, payload: got.append((topic, payload))


async def _until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


async def test_publishes_of_every_size_arrive_in_order_and_are_acknowledged(
    broker: tuple[str, int],
) -> None:
    host, port = broker
    got, on_message = _collector()
    reader = MqttClient(host, port, "reader", on_message)
    writer = MqttClient(host, port, "writer", lambda *_: None)
    await reader.connect()
    await reader.subscribe([("etp/t/#", 1)])
    await writer.connect()
    # 0..130 bytes cross the one-byte length boundary; 20 KB needs a three-byte length.
    sent = [(f"etp/t/{n % 7}", n.to_bytes(2, "big") + b"p" * (n % 131)) for n in range(1500)]
    sent += [("etp/t/big", b"x" * 20_000)]
    for number, (topic, payload) in enumerate(sent):
        writer.publish(topic, payload, qos=number % 2)  # all queued in one loop iteration
    await writer.publish_wait("etp/t/last", b"end", qos=1)
    await _until(lambda: len(got) == len(sent) + 1)
    # MQTT keeps order per QoS level (a broker may deliver QoS 0 ahead of queued QoS 1).
    for qos in (0, 1):
        sent_at_qos = [m for n, m in enumerate(sent) if n % 2 == qos]
        assert [m for m in got if m in sent_at_qos] == sent_at_qos
    assert sorted(got) == sorted([*sent, ("etp/t/last", b"end")])
    assert writer.inflight == 0  # every QoS 1 publish was acknowledged
    assert reader.received == len(sent) + 1
    await writer.disconnect()
    await reader.disconnect()


async def test_will_is_published_on_abort_and_not_on_disconnect(broker: tuple[str, int]) -> None:
    host, port = broker
    got, on_message = _collector()
    watcher = MqttClient(host, port, "watcher", on_message)
    await watcher.connect()
    await watcher.subscribe([("etp/death/+", 1)])
    polite = MqttClient(host, port, "polite", lambda *_: None, will=Will("etp/death/1", b"w1"))
    crashing = MqttClient(host, port, "crashing", lambda *_: None, will=Will("etp/death/2", b"w2"))
    await polite.connect()
    await crashing.connect()
    await polite.disconnect()
    crashing.abort()
    await _until(lambda: bool(got))
    await asyncio.sleep(0.3)
    assert got == [("etp/death/2", b"w2")]
    with pytest.raises(MqttError, match="lost"):
        await crashing.wait_closed()
    await polite.wait_closed()  # ended by disconnect(): no error
    await watcher.disconnect()


async def test_retained_message_reaches_a_later_subscriber(broker: tuple[str, int]) -> None:
    host, port = broker
    writer = MqttClient(host, port, "birth", lambda *_: None)
    await writer.connect()
    await writer.publish_wait("etp/birth/9", b"hello", qos=1, retain=True)
    got, on_message = _collector()
    late = MqttClient(host, port, "late", on_message)
    await late.connect()
    await late.subscribe([("etp/birth/+", 1)])
    await _until(lambda: bool(got))
    assert got == [("etp/birth/9", b"hello")]
    await writer.disconnect()
    await late.disconnect()


async def test_unsubscribed_topics_are_no_longer_delivered(broker: tuple[str, int]) -> None:
    """A hub worker drops a battery's topics when the battery moves to another worker."""
    host, port = broker
    got, on_message = _collector()
    reader = MqttClient(host, port, "worker", on_message)
    await reader.connect()
    await reader.subscribe([("etp/resp/7", 1), ("etp/resp/8", 1)])
    writer = MqttClient(host, port, "battery", lambda *_: None)
    await writer.connect()
    await writer.publish_wait("etp/resp/7", b"a", qos=1)
    await _until(lambda: len(got) == 1)
    await reader.unsubscribe(["etp/resp/7"])
    await writer.publish_wait("etp/resp/7", b"b", qos=1)
    await writer.publish_wait("etp/resp/8", b"c", qos=1)
    await _until(lambda: len(got) == 2)
    await asyncio.sleep(0.2)
    assert got == [("etp/resp/7", b"a"), ("etp/resp/8", b"c")]
    await writer.disconnect()
    await reader.disconnect()


async def test_unreachable_broker_and_publishing_while_down_are_clear_errors() -> None:
    port = free_port()
    client = MqttClient("127.0.0.1", port, "nobody", lambda *_: None, connect_timeout_s=2)
    with pytest.raises(MqttError, match=f"cannot connect to 127.0.0.1:{port}"):
        await client.connect()
    with pytest.raises(MqttError, match="not connected"):
        client.publish("etp/x", b"1")


async def test_broker_going_away_fails_waiters_and_publishes() -> None:
    async with mosquitto_broker() as url:
        host, port = parse_mqtt_url(url)
        client = MqttClient(host, port, "left", lambda *_: None)
        await client.connect()
        closed = asyncio.create_task(client.wait_closed())
    # the broker process is gone now
    with pytest.raises(MqttError, match="lost"):
        await asyncio.wait_for(closed, 10)
    assert not client.connected
    with pytest.raises(MqttError):
        client.publish("etp/x", b"1", qos=1)


@contextlib.asynccontextmanager
async def _fake_broker(
    script: Callable[[asyncio.StreamReader, asyncio.StreamWriter], object],
) -> AsyncIterator[int]:
    """A TCP server on loopback that speaks whatever `script` writes."""
    server = await asyncio.start_server(script, "127.0.0.1", 0)  # type: ignore[arg-type]
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 2)


CONNACK_OK = bytes((0x20, 2, 0, 0))


async def test_packets_split_across_reads_are_reassembled() -> None:
    topic = b"etp/split"
    payload = b"p" * 300  # two-byte remaining length
    body = len(topic).to_bytes(2, "big") + topic + payload
    publish = bytes((0x30, 0x80 | (len(body) & 0x7F), len(body) >> 7)) + body

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100)  # CONNECT
        writer.write(CONNACK_OK)
        for byte in publish * 2:  # two PUBLISHes, one byte per TCP write
            writer.write(bytes((byte,)))
            await writer.drain()
            await asyncio.sleep(0)
        await asyncio.sleep(5)

    got, on_message = _collector()
    async with _fake_broker(script) as port:
        client = MqttClient("127.0.0.1", port, "split", on_message)
        await client.connect()
        await _until(lambda: len(got) == 2)
        assert got == [("etp/split", payload)] * 2
        client.abort()


async def test_garbage_from_the_broker_closes_the_connection_with_a_reason() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100)
        writer.write(CONNACK_OK + bytes((0xF0, 0)))  # AUTH: not an MQTT 3.1.1 packet
        await asyncio.sleep(5)

    async with _fake_broker(script) as port:
        client = MqttClient("127.0.0.1", port, "garbage", lambda *_: None)
        await client.connect()
        with pytest.raises(MqttError, match="unexpected packet type 0xf0"):
            await asyncio.wait_for(client.wait_closed(), 5)


async def test_refused_connection_says_why() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100)
        writer.write(bytes((0x20, 2, 0, 5)))  # not authorized
        await asyncio.sleep(5)

    async with _fake_broker(script) as port:
        client = MqttClient("127.0.0.1", port, "refused", lambda *_: None)
        with pytest.raises(MqttError, match="refused the connection: not authorized"):
            await client.connect()


async def test_a_silent_broker_is_detected_by_keepalive() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100)
        writer.write(CONNACK_OK)
        await asyncio.sleep(10)  # reads pings, never answers

    async with _fake_broker(script) as port:
        client = MqttClient("127.0.0.1", port, "pinger", lambda *_: None, keepalive_s=1)
        await client.connect()
        started = asyncio.get_running_loop().time()
        with pytest.raises(MqttError, match="no PINGRESP"):
            await asyncio.wait_for(client.wait_closed(), 8)
        assert asyncio.get_running_loop().time() - started < 4
