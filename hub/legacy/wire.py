"""The Go prototype's TCP stream cut into messages, and the lines the bridge writes to it.

The prototype writes one 14-field line per TCP write, with no newline and no length prefix;
its reader takes whatever one 1,024-byte read returns. TCP keeps no write boundaries, so two
lines can arrive in one read and one line can be split across reads. `LegacyStream` delimits
them from the fixed format alone: a message is 13 whitespace-terminated fields followed by the
14th, dischargeRate, which the prototype always writes with exactly two decimals. The message
ends right after those two decimals, even when the next message's first field follows without
a space ("... 0.502 48214 ..." is "... 0.50" then "2 48214 ..."). Sans I/O: bytes in, lines
out.
"""

from __future__ import annotations

import re

from shared_etp.errors import ProtocolError
from shared_etp.legacy import LEGACY_FIELDS, parse_legacy, to_legacy

__all__ = ["READ_CHUNK_BYTES", "LegacyStream", "legacy_line"]

READ_CHUNK_BYTES = 1024  # what the prototype reads at a time; the bridge reads the same
_LAST_FIELD = re.compile(r"-?\d+\.\d\d")  # dischargeRate: always two decimals
_LAST_FIELD_PREFIX = re.compile(r"-?(\d+(\.\d?)?)?")  # what may still grow into one
_MAX_BUFFER = 4 * READ_CHUNK_BYTES  # far more than one line (~80 characters)


class LegacyStream:
    """Cuts a legacy TCP byte stream into messages; counts what it had to throw away."""

    def __init__(self) -> None:
        self._buffer = ""
        self.garbled = 0  # times text was skipped to find the next message

    def feed(self, data: bytes) -> list[dict[str, int]]:
        """The messages completed by `data` (parsed, see shared_etp.legacy.parse_legacy)."""
        return [parse_legacy(line) for line in self.feed_lines(data)]

    def feed_lines(self, data: bytes) -> list[str]:
        """The 14-field lines completed by `data`, as text, in order. A stretch that is not a
        message (wrong field count, a value the codec refuses) is skipped one field at a time
        until one parses, and counted in `garbled`."""
        self._buffer += data.decode("ascii", errors="replace")
        lines = []
        while True:
            line, consumed = self._take()
            if consumed == 0:
                break
            self._buffer = self._buffer[consumed:]
            if line is not None:
                lines.append(line)
        if len(self._buffer) > _MAX_BUFFER:  # no message can be this long: resynchronise
            self.garbled += 1
            self._buffer = ""
        return lines

    def _take(self) -> tuple[str | None, int]:
        """(line, characters consumed); (None, n > 0) skips garbage; (None, 0) needs more."""
        text = self._buffer
        size = len(text)
        start = 0
        while start < size and text[start].isspace():
            start += 1
        if start == size:
            return None, start
        index = start
        first_end = -1
        for _ in range(len(LEGACY_FIELDS) - 1):
            end = index
            while end < size and not text[end].isspace():
                end += 1
            if first_end < 0:
                first_end = end
            while end < size and text[end].isspace():
                end += 1
            if end >= size:
                return None, 0  # the field's end (or the next field) has not arrived yet
            index = end
        match = _LAST_FIELD.match(text, index)
        if match is not None:
            line = text[start : match.end()]
            try:
                parse_legacy(line)
            except ProtocolError:
                self.garbled += 1  # shaped like a message but not one: look one field on
                return None, first_end
            return line, match.end()
        if _LAST_FIELD_PREFIX.fullmatch(text, index):
            return None, 0  # the last field is still arriving ("0.5" of "0.50")
        self.garbled += 1
        return None, first_end  # not a message here: drop one field and look again


def legacy_line(msg: dict[str, int]) -> bytes:
    """The bytes of one legacy message as the prototype writes it: no newline, no prefix."""
    return to_legacy(msg).encode("ascii")
