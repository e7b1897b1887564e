"""TEST DOUBLE of the Go prototype's battery (not the prototype: no Go here, none of its code).

It behaves as /work/shared/ARCHITECTURE.md's protocol facts describe the prototype: plain TCP,
it listens for connections; each message is one 14-field space-separated line in one write,
with no newline or length prefix; it reads 1,024-byte chunks and takes each read as one
message (a read holding anything else than exactly one message is counted in `garbled` and
ignored, as such a reader would); it accepts the first bid at or above its reserve, and keeps
accepting after it sold everything. Where the facts say nothing, it does the plain thing:
Query -> QueryResponse with its offer and state, Bid -> BidAccept or BidReject echoing the
messageID, BidConfirm -> the sale is made (energy off its remaining, never below zero) and
nothing is answered, Terminate -> nothing. Used by the tests, `etp demo --legacy-batteries`
and `etp legacy double`.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

from hub.legacy.wire import READ_CHUNK_BYTES, legacy_line
from shared_etp.errors import ProtocolError
from shared_etp.legacy import parse_legacy
from shared_etp.schema import (
    BID,
    BID_ACCEPT,
    BID_CONFIRM,
    BID_REJECT,
    QUERY,
    QUERY_RESPONSE,
)

__all__ = ["DoubleConfig", "LegacyBatteryDouble"]


@dataclass
class DoubleConfig:
    """The double's battery: figures in protocol units (Wh, 1/100 %, milli-cents/kWh, mV, W)."""

    device_id: int = 7
    energy_total_wh: int = 10_000
    remaining_wh: int = 9_000
    pct_for_sale: int = 5_000
    reserve_mc: int = 20_000
    voltage_mv: int = 48_000
    discharge_w: int = 0
    health: int = 0
    charge_w: int = 0  # a charger (PV, grid) refilling it up to energy_total_wh; 0: none
    host: str = "127.0.0.1"
    port: int = 0  # 0: any free port (see LegacyBatteryDouble.port)
    # Test hooks for the bridge's reader (the prototype itself writes one message per write):
    split_answers: bool = False  # write each answer in two pieces, 20 ms apart
    glue_reports: bool = False  # write each answer and an extra QueryResponse in one write


class LegacyBatteryDouble:
    """TEST DOUBLE: a legacy (Go prototype) battery on a TCP port; see the module docstring."""

    def __init__(self, config: DoubleConfig | None = None) -> None:
        self.config = config or DoubleConfig()
        self.remaining_wh = self.config.remaining_wh
        self.confirmed: list[tuple[int, int]] = []  # (price_mc, energy_wh) of each sale made
        self.bids_accepted = 0
        self.bids_rejected = 0
        self.garbled = 0
        self.received = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.port = self.config.port
        self._charged_mwh = 0
        self.muted = False  # test hook: it hangs (reads, answers nothing, keeps the connection)
        self.refuse_bids = False  # test hook: BidReject to every bid (its reserve rose unsaid)
        self._charged_at: float | None = None

    @property
    def sold_wh(self) -> int:
        """Energy of every sale it made (it sells past empty: the prototype's flaw)."""
        return sum(energy for _price, energy in self.confirmed)

    @property
    def offered_wh(self) -> int:
        """What it offered for sale when it started (remaining x percentageForSale)."""
        return self.config.remaining_wh * self.config.pct_for_sale // 10000

    async def start(self) -> None:
        """Listen (on the same port again after stop(), if it had one)."""
        self._server = await asyncio.start_server(
            self._serve, self.config.host, self.port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening and drop every connection (the battery is gone)."""
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
        self._server = None

    def _state(self, msg_type: int, msg_id: int, **fields: int) -> dict[str, int]:
        config = self.config
        return {
            "t": msg_type,
            "id": msg_id,
            "src": config.device_id,
            "ttl": 5000,
            "sale": config.reserve_mc,
            "etot": config.energy_total_wh,
            "pct": config.pct_for_sale,
            "erem": self.remaining_wh,
            "health": config.health,
            "volt": config.voltage_mv,
            "dis": config.discharge_w,
            **fields,
        }

    def _charge(self) -> None:
        """Add what the charger gave since the last message, in the line's 10 Wh steps."""
        if not self.config.charge_w:
            return
        now = asyncio.get_running_loop().time()
        if self._charged_at is not None and self.remaining_wh < self.config.energy_total_wh:
            self._charged_mwh += int(self.config.charge_w * (now - self._charged_at) / 3.6)
            steps = self._charged_mwh // 10_000
            self._charged_mwh -= steps * 10_000
            self.remaining_wh = min(self.config.energy_total_wh, self.remaining_wh + steps * 10)
        self._charged_at = now

    def answer(self, msg: dict[str, int]) -> dict[str, int] | None:
        """The prototype's answer to one message (None: it answers nothing)."""
        self._charge()
        msg_type = msg["t"]
        if msg_type == QUERY:
            return self._state(QUERY_RESPONSE, msg["id"])
        if msg_type == BID:
            if msg["price"] >= self.config.reserve_mc and not self.refuse_bids:
                self.bids_accepted += 1
                return self._state(BID_ACCEPT, msg["id"], price=msg["price"], ereq=msg["ereq"])
            self.bids_rejected += 1
            return self._state(BID_REJECT, msg["id"], price=msg["price"], ereq=msg["ereq"])
        if msg_type == BID_CONFIRM:
            self.confirmed.append((msg["price"], msg["ereq"]))
            self.remaining_wh = max(0, self.remaining_wh - msg["ereq"])
        return None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                chunk = await reader.read(READ_CHUNK_BYTES)
                if not chunk:
                    return
                self.received += 1
                try:
                    msg = parse_legacy(chunk)  # one read, one message: no framing
                except ProtocolError:
                    self.garbled += 1
                    continue
                reply = None if self.muted else self.answer(msg)
                if reply is not None:
                    await self._write(writer, legacy_line(reply))
        except (OSError, asyncio.CancelledError):
            return
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _write(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        if self.config.glue_reports:
            data += legacy_line(self._state(QUERY_RESPONSE, 0))
        if self.config.split_answers:
            cut = len(data) // 2 + 1
            writer.write(data[:cut])
            await writer.drain()
            await asyncio.sleep(0.02)
            data = data[cut:]
        writer.write(data)
        await writer.drain()
