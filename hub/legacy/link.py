"""The bridge's TCP link to one legacy battery: connect with capped exponential backoff, poll
its state, one exchange at a time, writes kept apart.

The prototype answers each request with one line and reads one 1,024-byte chunk per message,
so the link never has two writes in flight: a request waits for its answer (matched by
messageID; a late answer to an earlier request is dropped) and a write that gets no answer
(BidConfirm) is followed by a pause before the next write, so the two cannot reach the
battery's reader in one read.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from hub.legacy.wire import READ_CHUNK_BYTES, LegacyStream, legacy_line
from shared_etp.schema import BID_ACCEPT, BID_REJECT, QUERY, QUERY_RESPONSE

__all__ = ["LegacyLink", "LegacyLinkError", "LinkConfig"]

log = structlog.get_logger(__name__)

_ANSWERS = {QUERY: (QUERY_RESPONSE,), 3: (BID_ACCEPT, BID_REJECT)}
_TTL_MS = 5000  # ttl written on the legacy line (whole seconds there)


class LegacyLinkError(Exception):
    """The legacy battery could not be reached or did not answer in time."""


@dataclass
class LinkConfig:
    """Where a legacy battery listens and how the bridge keeps in touch with it."""

    host: str
    port: int
    device_id: int  # written as the legacy deviceID
    poll_interval_s: float = 1.0  # a Query this often: fresh state, and a heartbeat
    answer_timeout_s: float = 0.3  # for one answer (the ETP answer deadline is 500 ms)
    missed_polls_down: int = 2  # unanswered Queries in a row that count as a lost link
    write_gap_s: float = 0.02  # quiet time after a write that gets no answer
    connect_timeout_s: float = 3.0
    backoff_initial_s: float = 0.2
    backoff_max_s: float = 5.0


class LegacyLink:
    """Keeps one TCP connection to a legacy battery; reports state lines to `on_report` and
    link changes to `on_link(up)`; `request()` and `send()` talk to the battery."""

    def __init__(
        self,
        config: LinkConfig,
        on_report: Callable[[dict[str, int]], None],
        on_link: Callable[[bool], None],
    ) -> None:
        self.config = config
        self.on_report = on_report
        self.on_link = on_link
        self.stream = LegacyStream()
        self.connects = 0
        self.connect_failures = 0
        self.last_backoff_s = 0.0
        self.backoffs: deque[float] = deque(maxlen=32)  # the latest waits before a retry, s
        self._writer: asyncio.StreamWriter | None = None
        self._lock = asyncio.Lock()
        self._waiting: tuple[int, tuple[int, ...], asyncio.Future[dict[str, int]]] | None = None
        self._next_id = random.randrange(1, 1 << 30)
        self._quiet_until = 0.0
        self._task: asyncio.Task[None] | None = None
        self._poll_now = asyncio.Event()
        self._stop = False
        self._answered = False
        self._announced = False

    @property
    def up(self) -> bool:
        """True while connected."""
        return self._writer is not None

    def start(self) -> None:
        """Start connecting (in the background, forever, until stop())."""
        self._task = asyncio.create_task(self._run(), name=f"legacy-link-{self.config.device_id}")

    async def stop(self) -> None:
        """Close the connection and stop reconnecting."""
        self._stop = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    # --- talking to the battery --------------------------------------------------------------
    def _message(self, msg_type: int, **fields: int) -> dict[str, int]:
        self._next_id = (self._next_id + 1) & 0xFFFFFFFF
        return {
            "t": msg_type,
            "id": self._next_id,
            "src": self.config.device_id,
            "ttl": _TTL_MS,
            **fields,
        }

    async def _write(self, msg: dict[str, int]) -> None:
        writer = self._writer
        if writer is None:
            raise LegacyLinkError("not connected")
        delay = self._quiet_until - asyncio.get_running_loop().time()
        if delay > 0:
            await asyncio.sleep(delay)
        try:
            writer.write(legacy_line(msg))  # one message, one write, as the prototype expects
            await writer.drain()
        except (OSError, RuntimeError) as exc:
            raise LegacyLinkError(f"write failed: {exc}") from None

    async def request(self, msg_type: int, **fields: int) -> dict[str, int]:
        """Send a Query or Bid and return the battery's answer (raises LegacyLinkError)."""
        async with self._lock:
            msg = self._message(msg_type, **fields)
            future: asyncio.Future[dict[str, int]] = asyncio.get_running_loop().create_future()
            self._waiting = (msg["id"], _ANSWERS[msg_type], future)
            try:
                await self._write(msg)
                return await asyncio.wait_for(future, self.config.answer_timeout_s)
            except TimeoutError:
                raise LegacyLinkError("no answer in time") from None
            finally:
                self._waiting = None

    async def send(self, msg_type: int, **fields: int) -> None:
        """Send a message that gets no answer (BidConfirm); returns once it is written."""
        async with self._lock:
            await self._write(self._message(msg_type, **fields))
            self._quiet_until = asyncio.get_running_loop().time() + self.config.write_gap_s

    def poll_soon(self) -> None:
        """Query the battery as soon as the link is free (a fresh report after a sale)."""
        self._poll_now.set()

    # --- the connection -------------------------------------------------------------------
    async def _run(self) -> None:
        config = self.config
        delay = config.backoff_initial_s
        while not self._stop:
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(config.host, config.port), config.connect_timeout_s
                )
            except (OSError, TimeoutError) as exc:
                self.connect_failures += 1
                self.last_backoff_s = delay
                self.backoffs.append(delay)
                log.debug("legacy battery unreachable", device=config.device_id, error=str(exc))
                await asyncio.sleep(delay * random.uniform(0.8, 1.0))
                delay = min(delay * 2, config.backoff_max_s)
                continue
            self.connects += 1
            self.stream = LegacyStream()
            self._writer = writer
            answered = await self._session(reader, writer)
            if answered:
                delay = config.backoff_initial_s  # it worked for a while: start over
            else:
                self.last_backoff_s = delay
                self.backoffs.append(delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, config.backoff_max_s)

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Read and poll until the connection ends or the battery stops answering its polls;
        True if it answered at all."""
        self._answered = False
        self._announced = False
        tasks = [asyncio.create_task(self._read(reader)), asyncio.create_task(self._poll())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._writer = None
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            waiting = self._waiting
            if waiting is not None and not waiting[2].done():
                waiting[2].set_exception(LegacyLinkError("connection lost"))
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            if self._announced:
                self.on_link(False)
        return self._answered

    async def _read(self, reader: asyncio.StreamReader) -> None:
        """Cut what arrives into messages until the battery closes the connection."""
        try:
            while True:
                chunk = await reader.read(READ_CHUNK_BYTES)
                if not chunk:
                    return
                for msg in self.stream.feed(chunk):
                    self._answered = True
                    self._dispatch(msg)
                    if not self._announced and msg["t"] == QUERY_RESPONSE:
                        self._announced = True
                        self.on_link(True)
        except OSError as exc:
            log.debug("legacy link error", device=self.config.device_id, error=str(exc))

    def _dispatch(self, msg: dict[str, int]) -> None:
        waiting = self._waiting
        if (
            waiting is not None
            and msg["id"] == waiting[0]
            and msg["t"] in waiting[1]
            and not waiting[2].done()
        ):
            waiting[2].set_result(msg)
        self.on_report(msg)  # every line with state fields refreshes the pack

    async def _poll(self) -> None:
        """Query the battery every poll interval; return after too many unanswered ones."""
        missed = 0
        while True:
            try:
                await self.request(QUERY)
                missed = 0
            except LegacyLinkError:
                missed += 1
                if missed >= self.config.missed_polls_down or self._writer is None:
                    return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._poll_now.wait(), self.config.poll_interval_s)
            self._poll_now.clear()
