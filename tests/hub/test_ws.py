"""The running hub's WebSocket /ws with a real client (websockets): ticket, first-message and
header auth; refusals (a key revoked while connected too); snapshot then live events; resume
after a reconnect with exactly the missed events from the store; a slow client resync'd while
others get everything; limits; and fan-out figures (printed with -s)."""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from hub.auth import Role
from hub.events import EventKind
from hub.runtime import HubRuntime
from tests.hub.helpers import api_key, get_json, hub_settings, running_hub, wait_for


def _ws_url(hub: HubRuntime, query: str = "") -> str:
    return hub.http_url.replace("http://", "ws://") + "/ws" + (f"?{query}" if query else "")


async def _open(hub: HubRuntime, query: str = "", **kwargs: Any) -> ClientConnection:
    return await connect(_ws_url(hub, query), open_timeout=5, **kwargs)


async def _recv(ws: ClientConnection, timeout_s: float = 5.0) -> dict[str, Any]:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout_s))  # type: ignore[no-any-return]


async def _closed_with(ws: ClientConnection) -> tuple[int | None, str, list[dict[str, Any]]]:
    """Messages received until the hub closed the socket, and its close code and reason."""
    received = []
    with pytest.raises(ConnectionClosed):
        for _ in range(10_000):
            received.append(await _recv(ws))
    rcvd = ws.protocol.close_rcvd
    return (rcvd.code if rcvd else None), (rcvd.reason if rcvd else ""), received


def _emit(hub: HubRuntime, count: int, **payload: Any) -> list[int]:
    assert hub.events is not None
    return [
        hub.events.emit(EventKind.OPERATOR_ACTION, action="test", by="test_ws", n=n,
                        **payload).seq
        for n in range(count)
    ]


async def _events_until(ws: ClientConnection, last_seq: int) -> list[dict[str, Any]]:
    """Event messages up to and including seq `last_seq`."""
    events: list[dict[str, Any]] = []
    while not events or events[-1]["seq"] < last_seq:
        message = await _recv(ws)
        assert message["type"] == "event", message
        events.append(message)
    return events


def _caught_up(received: list[int], seq: int) -> bool:
    return bool(received) and received[-1] >= seq


async def _stored_seqs(hub: HubRuntime, after_seq: int) -> list[int]:
    assert hub.events is not None
    seqs: list[int] = []
    while True:
        page = await hub.events.read(after_seq, limit=1000)
        seqs += [event.seq for event in page]
        if len(page) < 1000:
            return seqs
        after_seq = page[-1].seq


async def test_ticket_auth_message_and_headers_each_get_a_snapshot_then_live_events(
    tmp_path: Path,
) -> None:
    async with running_hub(hub_settings(tmp_path)) as hub:
        key = await api_key(hub, Role.VIEWER)
        code, body = await asyncio.to_thread(
            get_json, hub.http_url + "/api/v1/ws-ticket", key, method="POST"
        )
        assert code == 201, body
        by_ticket = await _open(hub, f"ticket={body['ticket']}")
        by_message = await _open(hub)
        await by_message.send(json.dumps({"type": "auth", "key": key}))
        by_header = await _open(hub, additional_headers={"Authorization": f"Bearer {key}"})
        clients = (by_ticket, by_message, by_header)
        for ws in clients:
            snapshot = await _recv(ws)
            assert snapshot["type"] == "snapshot"
            assert isinstance(snapshot["seq"], int) and isinstance(snapshot["devices"], list)
            assert snapshot["status"]["site"] == hub.settings.site
        assert hub.status()["ws"]["clients"] == 3

        emitted = _emit(hub, 5)
        for ws in clients:
            events = await _events_until(ws, emitted[-1])
            seqs = [event["seq"] for event in events]
            assert seqs == sorted(set(seqs)) and set(emitted) <= set(seqs)
            mine = [event for event in events if event["seq"] in emitted]
            assert [event["payload"]["n"] for event in mine] == [0, 1, 2, 3, 4]
            assert mine[0]["kind"] == "operator_action" and set(mine[0]) == {
                "type", "seq", "kind", "ts_ms", "device_id", "auction_id", "payload"}
            await ws.close()
        await wait_for(lambda: hub.status()["ws"]["clients"] == 0, 5, "clients counted out")

        # a ticket is single use
        reused = await _open(hub, f"ticket={body['ticket']}")
        code_, reason, received = await _closed_with(reused)
        assert (code_, received) == (4401, []) and "ticket" in reason


async def test_a_websocket_outlives_the_http_request_and_idle_timeouts(tmp_path: Path) -> None:
    """The HTTP server's request deadline (a slow request: 408) and keep-alive timer belong to
    HTTP; a WebSocket kept open past both still gets its events (once, a 408 was written into
    the socket's stream after ETP_HTTP_REQUEST_TIMEOUT_S and corrupted it)."""
    settings = hub_settings(tmp_path, http_request_timeout_s=0.4, http_keep_alive_timeout_s=1)
    async with running_hub(settings) as hub:
        key = await api_key(hub, Role.VIEWER)
        ws = await _open(hub, additional_headers={"Authorization": f"Bearer {key}"})
        assert (await _recv(ws))["type"] == "snapshot"
        await asyncio.sleep(1.5)
        emitted = _emit(hub, 3)
        events = await _events_until(ws, emitted[-1])
        assert [e["seq"] for e in events if e["seq"] in emitted] == emitted
        assert hub.status()["http"]["refused"] == {}, hub.status()["http"]
        await ws.close()


async def test_refused_without_a_key_with_a_wrong_or_revoked_key_and_bad_messages(
    tmp_path: Path,
) -> None:
    async with running_hub(hub_settings(tmp_path, ws_auth_timeout_s=0.5)) as hub:
        key = await api_key(hub, Role.VIEWER)
        silent = await _open(hub)  # sends nothing: closed after the auth timeout, no events
        _emit(hub, 3)
        assert (await _closed_with(silent))[::2] == (4401, [])

        wrong = await _open(hub)
        await wrong.send(json.dumps({"type": "auth", "key": key[:-2] + "xx"}))
        assert (await _closed_with(wrong))[::2] == (4401, [])

        garbage = await _open(hub)
        await garbage.send("hello")
        assert (await _closed_with(garbage))[::2] == (4400, [])

        binary = await _open(hub)
        await binary.send(b"\x00{}")
        assert (await _closed_with(binary))[::2] == (4400, [])

        bad_header = await _open(hub, additional_headers={"X-API-Key": "etp_1_nope"})
        assert (await _closed_with(bad_header))[::2] == (4401, [])

        other = await api_key(hub, Role.VIEWER, name="other")
        open_socket = await _open(hub, additional_headers={"X-API-Key": other})
        assert (await _recv(open_socket))["type"] == "snapshot"
        await hub.api_keys.revoke(2)  # through the hub: its open socket is closed at once
        code, reason, received = await _closed_with(open_socket)
        assert code == 4401 and "revoked" in reason

        await hub.api_keys.revoke(1)
        revoked = await _open(hub)
        await revoked.send(json.dumps({"type": "auth", "key": key}))
        code, reason, received = await _closed_with(revoked)
        assert (code, received) == (4401, []) and "etp apikey create" in reason
        assert hub.status()["ws"]["refused_auth"] == 6
        assert hub.status()["ws"]["accepted"] == 1


async def test_reconnect_with_after_seq_gets_exactly_the_missed_events_then_live_ones(
    tmp_path: Path,
) -> None:
    async with running_hub(hub_settings(tmp_path, ws_max_resume_events=3000)) as hub:
        key = await api_key(hub, Role.VIEWER)
        headers = {"X-API-Key": key}
        first = await _open(hub, additional_headers=headers)
        assert (await _recv(first))["type"] == "snapshot"
        last_seen = (await _events_until(first, _emit(hub, 10)[-1]))[-1]["seq"]
        await first.close()

        _emit(hub, 1210)  # while away: more than two of the hub's 500-event pages
        again = await _open(hub, f"after_seq={last_seen}", additional_headers=headers)

        async def live() -> list[int]:  # emitted while the missed ones are being read
            seqs = []
            for _ in range(20):
                seqs += _emit(hub, 10, live=True)
                await asyncio.sleep(0.005)
            return seqs

        live_seqs = await live()
        resume = await _recv(again)
        assert resume["type"] == "resume" and resume["after_seq"] == last_seen
        received = [event["seq"] for event in await _events_until(again, live_seqs[-1])]
        stored = await _stored_seqs(hub, last_seen)
        assert received == stored  # exactly the store's log: no gap, no duplicate, in order
        assert len(received) >= 1410 and set(live_seqs) <= set(received)
        after_live = _emit(hub, 3)
        assert [e["seq"] for e in await _events_until(again, after_live[-1])] == after_live
        await again.close()

        # the resume point may come in the auth message; too far behind: resync + snapshot
        behind = await _open(hub)
        await behind.send(json.dumps({"type": "auth", "key": key, "after_seq": 0}))
        _emit(hub, 1800)
        resync = await _recv(behind)
        assert resync["type"] == "resync"
        snapshot = await _recv(behind)
        assert snapshot["type"] == "snapshot"
        later = _emit(hub, 2)
        events = await _events_until(behind, later[-1])
        assert all(event["seq"] > snapshot["seq"] for event in events)
        assert hub.status()["ws"]["resumed"] == 1 and hub.status()["ws"]["resync_behind"] == 1
        await behind.close()


async def test_a_slow_client_is_resynced_while_a_normal_client_gets_every_event(
    tmp_path: Path,
) -> None:
    settings = hub_settings(tmp_path, ws_client_backlog=100, ws_send_timeout_s=1.5)
    async with running_hub(settings) as hub:
        key = await api_key(hub, Role.VIEWER)
        headers = {"X-API-Key": key}
        tiny = socket.create_connection((settings.http_host, settings.http_port))
        tiny.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        slow = await _open(hub, additional_headers=headers, sock=tiny, max_queue=1,
                           compression=None)
        normal = await _open(hub, additional_headers=headers)
        assert (await _recv(normal))["type"] == "snapshot"
        received: list[int] = []

        async def read_normal() -> None:
            while True:
                message = await _recv(normal, timeout_s=15)
                received.append(message["seq"])

        reader = asyncio.create_task(read_normal())
        padding = "x" * 4000  # 2,000 events of ~4 KB: more than loopback socket buffers hold
        emitted: list[int] = []
        for _ in range(40):
            batch = _emit(hub, 50, padding=padding)
            emitted += batch
            await wait_for(partial(_caught_up, received, batch[-1]), 10,
                           "the normal client to keep up")
        reader.cancel()
        assert set(emitted) <= set(received) and received == sorted(set(received))
        await wait_for(lambda: hub.status()["ws"]["resync_slow"] == 1, 10, "the slow client cut")
        assert hub.status()["ws"]["clients"] == 1  # counted out at once
        # the slow client's pipe is full (it cannot even take a close frame): what it got is
        # the snapshot and a prefix of the events
        got = [await _recv(slow) for _ in range(20)]
        assert got[0]["type"] == "snapshot"
        seqs = [message["seq"] for message in got[1:]]
        assert seqs == sorted(set(seqs)) and seqs[-1] < emitted[-1]
        sent_to_slow = hub.status()["ws"]["events_sent"] - len(received)
        assert 0 < sent_to_slow < len(emitted) // 2  # bounded: the hub stopped sending to it
        slow.transport.abort()
        more = _emit(hub, 3)  # the normal client is still served
        assert [m["seq"] for m in await _events_until(normal, more[-1])][-3:] == more
        await normal.close()


async def test_connections_per_key_and_in_total_are_limited(tmp_path: Path) -> None:
    settings = hub_settings(tmp_path, ws_max_clients=3, ws_max_clients_per_key=2)
    async with running_hub(settings) as hub:
        first_key = await api_key(hub, Role.VIEWER, name="a")
        second_key = await api_key(hub, Role.OPERATOR, name="b")

        async def client(key: str) -> ClientConnection:
            ws = await _open(hub, additional_headers={"X-API-Key": key})
            return ws

        a1, a2 = await client(first_key), await client(first_key)
        for ws in (a1, a2):
            assert (await _recv(ws))["type"] == "snapshot"
        code, reason, got = await _closed_with(await client(first_key))
        assert (code, got) == (4429, []) and "PER_KEY" in reason
        b1 = await client(second_key)
        assert (await _recv(b1))["type"] == "snapshot"
        code, reason, got = await _closed_with(await client(second_key))
        assert (code, got) == (4429, []) and "ETP_WS_MAX_CLIENTS" in reason
        status = hub.status()["ws"]
        assert (status["clients"], status["keys"], status["refused_limit"]) == (3, 2, 2)
        await a1.close()
        await wait_for(lambda: hub.status()["ws"]["clients"] == 2, 5, "a1 counted out")
        a3 = await client(first_key)
        assert (await _recv(a3))["type"] == "snapshot"
        for ws in (a2, a3, b1):
            await ws.close()


_FAN_OUT_CLIENTS = """
import asyncio, json, sys, time
from websockets.asyncio.client import connect

async def main(url, key, clients_n, events_n):
    sockets = [await connect(url, additional_headers={"X-API-Key": key}, compression=None)
               for _ in range(clients_n)]
    for ws in sockets:
        assert json.loads(await ws.recv())["type"] == "snapshot"
    print("ready", flush=True)
    latencies_ms, counts, other = [], [0] * clients_n, []

    async def read(index, ws):
        while counts[index] < events_n:
            message = json.loads(await ws.recv())
            if message["type"] != "event":
                other.append(message)
                return
            if message["payload"].get("by") == "bench":
                counts[index] += 1
                latencies_ms.append(time.time() * 1e3 - message["payload"]["t_ms"])

    await asyncio.wait_for(asyncio.gather(*(read(i, ws) for i, ws in enumerate(sockets))), 60)
    latencies_ms.sort()
    n = len(latencies_ms)
    print(json.dumps({"counts": counts, "other": other[:3], "p50": latencies_ms[n // 2],
                      "p99": latencies_ms[int(n * 0.99)], "max": latencies_ms[-1]}))
    for ws in sockets:
        await ws.close()

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
"""


@pytest.mark.slow
@pytest.mark.parametrize("events_per_s", [500])
async def test_fan_out_figure_every_client_gets_every_event(
    tmp_path: Path, events_per_s: int
) -> None:
    """50 clients (in another process), 2,000 events: every client gets every one; prints
    emit-to-receive latency and the hub process's CPU time."""
    clients_n, events_n = 50, 2000
    settings = hub_settings(tmp_path, ws_max_clients=clients_n, ws_max_clients_per_key=clients_n,
                            http_max_connections=200)
    async with running_hub(settings) as hub:
        key = await api_key(hub, Role.VIEWER)
        clients = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _FAN_OUT_CLIENTS, _ws_url(hub), key, str(clients_n),
            str(events_n), stdout=asyncio.subprocess.PIPE,
        )
        assert clients.stdout is not None
        assert (await asyncio.wait_for(clients.stdout.readline(), 30)).strip() == b"ready"
        assert hub.events is not None
        per_tick = max(1, events_per_s // 100)
        cpu0, wall0 = time.process_time(), time.perf_counter()
        for _ in range(events_n // per_tick):  # in ticks of 10 ms
            for _ in range(per_tick):
                hub.events.emit(EventKind.OPERATOR_ACTION, action="bench", by="bench",
                                t_ms=time.time() * 1e3)
            await asyncio.sleep(0.01)
        out, _ = await asyncio.wait_for(clients.communicate(), 60)
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        result = json.loads(out)
        assert result["other"] == [] and result["counts"] == [events_n] * clients_n
        print(
            f"\nws fan-out at ~{events_per_s} events/s: {clients_n} clients x {events_n} events,"
            f" every client got every event ({clients_n * events_n:,} deliveries in {wall:.2f} s);"
            f" emit->receive p50 {result['p50']:.1f} ms, p99 {result['p99']:.1f} ms, max "
            f"{result['max']:.1f} ms; hub process CPU {cpu:.2f} s "
            f"({cpu / (clients_n * events_n) * 1e6:.0f} us per delivery)"
        )


async def test_clients_are_told_when_the_hub_stops(tmp_path: Path) -> None:
    async with running_hub(hub_settings(tmp_path)) as hub:
        key = await api_key(hub, Role.VIEWER)
        ws = await _open(hub, additional_headers={"X-API-Key": key})
        assert (await _recv(ws))["type"] == "snapshot"
        started = time.monotonic()
    code, reason, _ = await _closed_with(ws)
    assert (code, reason) == (1001, "the hub is stopping")
    assert time.monotonic() - started < 10


@pytest.mark.slow
async def test_why_the_hubs_bus_and_not_channels_loss_is_signalled_and_fan_out_is_cheaper() -> None:
    """The measurement behind the fan-out choice (README): Litestar Channels' memory backend
    vs the hub's EventBus, in process, 50 subscribers x 2,000 events; and what each tells a
    subscriber whose backlog overflowed (Channels: nothing; the bus: Lagged)."""
    from litestar.channels import ChannelsPlugin
    from litestar.channels.backends.memory import MemoryChannelsBackend

    from hub.events import Event, EventBus, Lagged

    subscribers_n, events_n = 50, 2000
    events = [Event(seq, EventKind.OPERATOR_ACTION, 0, None, None, {"n": seq})
              for seq in range(1, events_n + 1)]

    async def drain(get: Any, count: int) -> int:
        got = 0
        while got < count:
            await get()
            got += 1
        return got

    bus = EventBus()
    subscriptions = [bus.subscribe(None, events_n, after_seq=0) for _ in range(subscribers_n)]
    cpu0 = time.process_time()
    for event in events:
        bus.publish(event)
    received = await asyncio.gather(*(drain(s.get, events_n) for s in subscriptions))
    bus_us = (time.process_time() - cpu0) / (subscribers_n * events_n) * 1e6
    assert received == [events_n] * subscribers_n

    plugin = ChannelsPlugin(backend=MemoryChannelsBackend(), channels=["events"],
                            subscriber_max_backlog=events_n)
    async with plugin:
        subscribers = [await plugin.subscribe("events") for _ in range(subscribers_n)]
        cpu0 = time.process_time()
        for event in events:
            plugin.publish(event.as_dict(), "events")  # encoded once, queued, then fanned out
        streams = [s.iter_events() for s in subscribers]
        received = await asyncio.wait_for(asyncio.gather(
            *(drain(stream.__anext__, events_n) for stream in streams)), 30)
        channels_us = (time.process_time() - cpu0) / (subscribers_n * events_n) * 1e6
        assert received == [events_n] * subscribers_n

        for s in subscribers:
            await plugin.unsubscribe(s)

    # a subscriber that stops reading: Channels drops the overflow without a trace
    small = ChannelsPlugin(backend=MemoryChannelsBackend(), channels=["events"],
                           subscriber_max_backlog=10)
    async with small:
        stuck = await small.subscribe("events")
        for event in events[:50]:
            await small.wait_published(event.as_dict(), "events")
        await asyncio.sleep(0.05)
        stream = stuck.iter_events()
        kept = [json.loads(await stream.__anext__())["seq"] for _ in range(10)]
        assert kept == list(range(1, 11)) and stuck.qsize == 0  # 40 gone, nothing says so
        await small.unsubscribe(stuck)

    small_bus = EventBus()
    lagging = small_bus.subscribe(None, 10, after_seq=0)
    for event in events[:50]:
        small_bus.publish(event)
    items = [lagging.get_nowait() for _ in range(11)]
    assert items[-1] == Lagged(after_seq=10, dropped=40)  # the bus says from where to re-read
    print(f"\nfan-out CPU per delivery, 50 subscribers x 2,000 events, in process: hub EventBus "
          f"{bus_us:.2f} us, Litestar Channels (memory backend) {channels_us:.2f} us")
