"""The HTTP server's bounds, against a real hub over raw loopback sockets: header size and
count, body size, slow-drip and idle clients, the connection cap; /health/live keeps answering.

`pytest -s tests/hub/test_http_bounds.py` prints what was measured (a table per test)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from pathlib import Path
from typing import Any

import h11
import psutil
import pytest

from hub.gateway.server import BoundedH11Connection, HttpLimits, request_head_refusal
from hub.runtime import HubRuntime
from tests.hub.helpers import hub_settings, running_hub

# Quick timers so the file stays short; the defaults are 10 s and 5 s.
FAST = {"http_request_timeout_s": 1.5, "http_keep_alive_timeout_s": 1}
MB = 1024 * 1024


def _report(title: str, rows: list[tuple[str, str]]) -> None:
    width = max(len(what) for what, _ in rows)
    print(f"\n{title}")
    for what, seen in rows:
        print(f"  {what:<{width}}  {seen}")


async def _connect(hub: HubRuntime) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(hub.settings.http_host, hub.settings.http_port)


async def _read_to_close(reader: asyncio.StreamReader, timeout_s: float) -> bytes:
    """Everything the server sends until it closes; b"" if it reset the connection."""
    try:
        return await asyncio.wait_for(reader.read(), timeout_s)
    except (ConnectionResetError, BrokenPipeError):
        return b""


def _status(response: bytes) -> int | None:
    """The status code of a raw response, None if there is none (closed without one)."""
    if not response.startswith(b"HTTP/1.1 "):
        return None
    return int(response.split(b" ", 2)[1])


async def _send(hub: HubRuntime, raw: bytes, chunk: int = 64 * 1024) -> bytes:
    """Send raw bytes (as much as the server takes) and return its answer up to the close."""
    reader, writer = await _connect(hub)
    try:
        view = memoryview(raw)
        for start in range(0, len(view), chunk):
            writer.write(view[start:start + chunk])
            await writer.drain()
    except (ConnectionResetError, BrokenPipeError):
        pass
    answer = await _read_to_close(reader, 10)
    writer.close()
    return answer


async def _live(hub: HubRuntime) -> int | None:
    """GET /health/live on a fresh connection."""
    return _status(await _send(hub, b"GET /health/live HTTP/1.1\r\nhost: t\r\n"
                                    b"connection: close\r\n\r\n"))


def _get(headers: list[bytes]) -> bytes:
    return b"GET /health/live HTTP/1.1\r\nhost: t\r\n" + b"".join(
        h + b"\r\n" for h in headers) + b"connection: close\r\n\r\n"


# --- the pure checks, without a socket ---------------------------------------------------

LIMITS = HttpLimits(max_header_bytes=1000, max_header_count=10, max_body_bytes=100)


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ([(b"host", b"t")], None),
        ([(b"x%d" % i, b"v") for i in range(10)], None),
        ([(b"x%d" % i, b"v") for i in range(11)], 431),
        ([(b"x", b"v" * 1000)], 431),
        ([(b"content-length", b"100")], None),
        ([(b"content-length", b"101")], 413),
    ],
)
def test_request_head_refusal(headers: list[tuple[bytes, bytes]], status: int | None) -> None:
    refusal = request_head_refusal(b"GET", b"/", headers, LIMITS)
    assert (refusal.status if refusal else None) == status


def test_chunked_body_over_the_limit_is_refused_as_it_arrives() -> None:
    conn = BoundedH11Connection(LIMITS)
    conn.receive_data(b"POST / HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n\r\n")
    assert isinstance(conn.next_event(), h11.Request)
    conn.receive_data(b"64\r\n" + b"a" * 100 + b"\r\n")
    assert isinstance(conn.next_event(), h11.Data)  # 100 bytes: at the limit
    conn.receive_data(b"1\r\na\r\n")
    with pytest.raises(h11.RemoteProtocolError):
        conn.next_event()
    assert conn.refusal is not None and conn.refusal.status == 413


def test_incomplete_head_over_the_limit_is_refused_without_more_buffering() -> None:
    conn = BoundedH11Connection(LIMITS)
    conn.receive_data(b"GET / HTTP/1.1\r\nx: " + b"a" * 1000)
    with pytest.raises(h11.RemoteProtocolError):
        conn.next_event()
    assert conn.refusal is not None and conn.refusal.status == 431


# --- against a running hub ----------------------------------------------------------------


@pytest.mark.slow
async def test_oversized_heads_are_refused_without_growing_the_hub(tmp_path: Path) -> None:
    settings = hub_settings(tmp_path, **FAST)
    rows: list[tuple[str, str]] = []
    async with running_hub(settings) as hub:
        process = psutil.Process()  # the hub runs in this process
        assert await _live(hub) == 200
        rss_before = process.memory_info().rss
        rss_peak = rss_before

        async def sample_rss() -> None:  # the peak matters: a freed buffer leaves RSS again
            nonlocal rss_peak
            while True:
                rss_peak = max(rss_peak, process.memory_info().rss)
                await asyncio.sleep(0.005)

        sampler = asyncio.create_task(sample_rss())
        started = time.monotonic()
        block = b"a" * (64 * 1024)
        reader, writer = await _connect(hub)
        sent = 0
        try:
            writer.write(b"GET /health/live HTTP/1.1\r\nhost: t\r\nx-big: ")
            while sent < 64 * MB:  # a 64 MB header, written until the hub hangs up
                writer.write(block)
                await writer.drain()
                sent += len(block)
        except (ConnectionResetError, BrokenPipeError):
            pass
        answer = await _read_to_close(reader, 10)
        writer.close()
        sampler.cancel()
        grown = rss_peak - rss_before
        rows.append(("64 MB header", f"status {_status(answer)}, {sent / MB:.2f} MB sent before "
                     f"the hub hung up, peak RSS +{grown / MB:.1f} MB, "
                     f"{time.monotonic() - started:.2f} s"))
        assert _status(answer) in (431, None)
        assert hub.status()["http"]["refused"] == {"431": 1}  # refused, not merely dropped
        assert sent < 8 * MB, "the hub kept reading a header far past its limit"
        assert grown < 8 * MB
        assert await _live(hub) == 200

        # Complete heads that arrive in one read (h11 buffers those whole) are measured too.
        one_read = _get([b"x-big: " + b"a" * (20 * 1024)])
        status = _status(await _send(hub, one_read))
        rows.append(("20 KB header, one write", f"status {status}"))
        assert status == 431

        many = _get([b"x%d: v" % i for i in range(20_000)])
        status = _status(await _send(hub, many))
        rows.append(("20,000 headers", f"status {status}"))
        assert status in (431, None)
        over = _get([b"x%d: v" % i for i in range(100)])  # + host + connection = 102
        status = _status(await _send(hub, over))
        rows.append(("102 headers (limit 100)", f"status {status}"))
        assert status == 431
        under = _get([b"x%d: v" % i for i in range(98)])
        assert _status(await _send(hub, under)) == 200

        declared = b"POST /health/live HTTP/1.1\r\nhost: t\r\ncontent-length: %d\r\n\r\n" % (2 * MB)
        status = _status(await _send(hub, declared))
        rows.append(("content-length 2 MB (limit 1 MB)", f"status {status}"))
        assert status == 413
        assert await _live(hub) == 200
        assert hub.status()["http"]["refused"] == {"413": 1, "431": 4}
    _report("oversized requests", rows)


@pytest.mark.slow
async def test_slow_and_idle_clients_are_cut(tmp_path: Path) -> None:
    settings = hub_settings(tmp_path, **FAST)
    rows: list[tuple[str, str]] = []
    async with running_hub(settings) as hub:
        # A head dripped one byte every 0.25 s: cut at the request timeout (1.5 s here).
        reader, writer = await _connect(hub)
        started = time.monotonic()
        head = b"GET /health/live HTTP/1.1\r\nhost: t\r\nx-drip: " + b"a" * 100
        answer = b""

        async def drip() -> None:
            try:
                for byte in head:
                    writer.write(bytes([byte]))
                    await writer.drain()
                    await asyncio.sleep(0.25)
            except (ConnectionResetError, BrokenPipeError):
                pass

        dripper = asyncio.create_task(drip())
        assert await _live(hub) == 200  # served meanwhile
        answer = await _read_to_close(reader, 10)
        cut_after = time.monotonic() - started
        dripper.cancel()
        writer.close()
        rows.append(("head dripped 1 byte / 0.25 s", f"status {_status(answer)}, cut after "
                     f"{cut_after:.2f} s (timeout 1.5 s)"))
        assert _status(answer) in (408, None)
        assert 1.4 < cut_after < 3.5

        # A body dripped after a complete head: the same deadline.
        reader, writer = await _connect(hub)
        started = time.monotonic()
        writer.write(b"POST /health/live HTTP/1.1\r\nhost: t\r\ncontent-length: 100\r\n\r\n")
        for _ in range(3):
            writer.write(b"a")
            await asyncio.sleep(0.25)
        await _read_to_close(reader, 10)
        rows.append(("body dripped", f"cut after {time.monotonic() - started:.2f} s"))
        assert time.monotonic() - started < 3.5
        writer.close()

        # A connection that never sends a byte, and one idle after a request: keep-alive (1 s).
        reader, writer = await _connect(hub)
        started = time.monotonic()
        assert await _read_to_close(reader, 5) == b""
        rows.append(("connection never used", f"closed after {time.monotonic() - started:.2f} s"))
        assert time.monotonic() - started < 2.5
        writer.close()
        reader, writer = await _connect(hub)
        writer.write(b"GET /health/live HTTP/1.1\r\nhost: t\r\n\r\n")
        started = time.monotonic()
        answer = await _read_to_close(reader, 5)
        rows.append(("idle after a request", f"closed after {time.monotonic() - started:.2f} s"))
        assert _status(answer) == 200 and 0.8 < time.monotonic() - started < 2.5
        writer.close()
        # A client that pipelines requests and never reads the answers: once the hub's write
        # buffer stays full for the request timeout, the connection is aborted.
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (settings.http_host,
                                                             settings.http_port))
        reader, writer = await asyncio.open_connection(sock=sock)
        requests = 10_000
        # an open route with a large answer (the OpenAPI schema), so the buffer fills fast
        writer.write(b"GET /schema/openapi.json HTTP/1.1\r\nhost: t\r\n\r\n" * requests)
        await asyncio.sleep(settings.http_request_timeout_s + 2)
        received = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := await asyncio.wait_for(reader.read(1 << 20), 5):
                received += chunk
        answered = received.count(b"HTTP/1.1 200")
        rows.append(("responses never read", f"aborted; {answered} of {requests} answers read"))
        assert hub.status()["http"]["unread_responses"] == 1
        assert answered < requests
        writer.close()

        assert await _live(hub) == 200
        assert hub.status()["http"]["refused"] == {"408": 2}
    _report("slow and idle clients", rows)


@pytest.mark.slow
async def test_connection_cap(tmp_path: Path) -> None:
    cap = 20
    settings = hub_settings(tmp_path, http_max_connections=cap, http_keep_alive_timeout_s=30,
                            http_request_timeout_s=30)
    rows: list[tuple[str, str]] = []
    async with running_hub(settings) as hub:
        # 1,000 idle connections: the oldest idle ones are closed to make room, at most `cap`
        # stay open, and a real client still gets in.
        idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        for _ in range(10):
            idle += await asyncio.gather(*(_connect(hub) for _ in range(100)))
        await asyncio.sleep(0.3)
        assert await _live(hub) == 200
        still_open = await _count_open(idle)
        rows.append(("1,000 idle connections", f"{still_open} still open (cap {cap}), "
                     "/health/live 200"))
        assert still_open <= cap
        for _, writer in idle:
            writer.close()
        await asyncio.sleep(0.3)  # the hub sees them go before the next part counts

        # `cap` connections busy in a request (head not finished): nothing idle to close, so
        # the next ones are answered 503 at once; once they go the hub serves again.
        busy = [await _connect(hub) for _ in range(cap)]
        for _, writer in busy:
            writer.write(b"GET /health/live HTTP/1.1\r\n")
        await asyncio.sleep(0.3)
        statuses = [_status(await _send(hub, _get([]))) for _ in range(10)]
        rows.append((f"{cap} busy + 10 more", f"the 10 extra got {statuses}"))
        assert all(status in (503, None) for status in statuses)
        assert statuses.count(503) >= 5
        for _, writer in busy:
            writer.close()
        await asyncio.sleep(0.3)
        assert await _live(hub) == 200
        http = hub.status()["http"]
        assert http["refused"] == {"503": 10} and http["evicted_idle"] >= 1000 - cap
    _report("connection cap", rows)


async def _count_open(connections: list[tuple[asyncio.StreamReader, Any]]) -> int:
    """How many of these connections the server has not closed."""

    async def is_open(reader: asyncio.StreamReader) -> bool:
        try:
            await asyncio.wait_for(reader.read(1), 0.05)
        except TimeoutError:
            return True
        except ConnectionResetError:
            return False
        return False

    results = await asyncio.gather(*(is_open(reader) for reader, _ in connections))
    return sum(results)
