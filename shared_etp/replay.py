"""Replay protection: per-sender (epoch, sequence) sliding window, and reboot-safe epochs.

Every sender stamps frames with its boot epoch and a sequence number that restarts at 0 in
each epoch. A receiver accepts a sequence number once; numbers up to WINDOW behind the highest
seen are accepted out of order, older ones are rejected. A higher epoch means the sender
rebooted: its window starts afresh, so a rebooted device is never locked out. The epoch is
max(last stored epoch + 1, seconds since 1970), so it grows across reboots even if the flash
write of the last epoch was lost, as long as the clock is set, and even without a clock as long
as flash works.
"""

from shared_etp import errors as _E  # codes by attribute: one global, strings shared
from shared_etp.compat import IS_MICROPYTHON, const
from shared_etp.errors import ProtocolError

# 30: the window's bitmap stays a small int on a 32-bit board (31-bit small ints), so checking
# a frame allocates nothing that stays (a 64-bit bitmap is a new bignum on the heap per frame).
# Per sender, frames arrive in order over MQTT; 30 covers retransmissions and reordering.
WINDOW = const(30)
_WINDOW_MASK = const((1 << WINDOW) - 1)
_PLAUSIBLE_CLOCK_S = 1700000000  # 2023-11: a clock below this has not been set


def next_epoch(stored_epoch, now_s):
    """The epoch for this boot, given the last one stored on flash and the wall clock."""
    epoch = stored_epoch + 1
    if now_s >= _PLAUSIBLE_CLOCK_S and now_s > epoch:
        epoch = now_s
    return epoch & 0xFFFFFFFF


class ReplayGuard:
    """Remembers, per sender, the highest (epoch, seq) and which of the last WINDOW were seen.

    At most max_senders are tracked; past that the least recently heard sender is forgotten
    (its frames are then bounded only by their TTL).
    """

    def __init__(self, max_senders=4096):
        self.max_senders = max_senders
        self._state = {}  # src -> [epoch, highest_seq, bitmap, last_used]
        self._clock = 0

    def check(self, src, epoch, seq):
        """Raise ProtocolError if (epoch, seq) from src was seen or is too old; else record it."""
        self._clock += 1
        state = self._state.get(src)
        if state is None or epoch > state[0]:
            if state is None and len(self._state) >= self.max_senders:
                oldest = oldest_used = None  # forget the least recently heard sender
                for known, known_state in self._state.items():
                    if oldest_used is None or known_state[3] < oldest_used:
                        oldest, oldest_used = known, known_state[3]
                del self._state[oldest]
            self._state[src] = [epoch, seq, 1, self._clock]
            return
        if epoch < state[0]:
            raise ProtocolError(_E.STALE_EPOCH, "src %d ep %d<%d" % (src, epoch, state[0]))
        highest = state[1]
        if seq > highest:
            shift = seq - highest
            # masked before the shift: no intermediate past the window's bits (no bignum)
            state[2] = (state[2] & (_WINDOW_MASK >> shift)) << shift | 1 if shift < WINDOW else 1
            state[1] = seq
        else:
            behind = highest - seq
            if behind >= WINDOW:
                raise ProtocolError(_E.REPLAY, "src %d seq %d old" % (src, seq))
            bit = 1 << behind
            if state[2] & bit:
                raise ProtocolError(_E.REPLAY, "src %d seq %d seen" % (src, seq))
            state[2] |= bit
        state[3] = self._clock

    if not IS_MICROPYTHON:  # hub-side (a board's methods cost heap)

        def forget(self, src):
            """Drop what is known about src (e.g. a device that was removed)."""
            self._state.pop(src, None)

        def __len__(self):
            return len(self._state)
