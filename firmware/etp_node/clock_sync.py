"""The node's clock set from the hub's time notice: loaded for it, then dropped.

A board without a real-time clock counts from its port's epoch (2000-01-01 on most
MicroPython ports) while every frame carries a timestamp checked for freshness, so the node
trades only once its clock is set: before the node starts (an RTC, or the board's boot.py
running `ntptime.settime()`), else by the hub's time. The hub publishes each board a signed,
retained time notice every second on the board's own market/<id>/time (hub/auctions/clock.py;
kind NOTICE_TIME, stamped with the hub's clock, signed with the board's own notice key, as
its other notices). NodeCore hands each one here while its clock is not set, then one a
minute (drift); this module is not kept in the heap between them.
"""

from shared_etp import compat
from shared_etp.compat import const
from shared_etp.frame import decode_notice

_NOTICE_TIME = const(3)  # shared_etp.schema.NOTICE_TIME


def handle(core, payload):
    """Take the hub's time from a time notice: returns what to publish (the birth and status
    when this sets the clock for the first time), [] otherwise. Never raises for a bad
    notice: it is counted (core.handle catches ProtocolError) and the clock stays as it is.

    The first notice after boot may be the retained one, as old as the hub's publishing
    interval (or much older if the hub is gone): it moves the clock, but the clock counts as
    set only once a newer notice, published since the node subscribed, comes.
    """
    kind, ts, _ = decode_notice(payload, core.notice_keys)
    seen = core._notice_ts
    last = seen.get(_NOTICE_TIME, 0)
    if kind != _NOTICE_TIME or ts <= last:
        core.stats["dropped"]["stale_notice"] = core.stats["dropped"].get("stale_notice", 0) + 1
        return []
    core.stats["notices"] += 1
    clock = core.clock
    shift = ts - clock()
    if clock is compat.now_ms and not compat.IS_MICROPYTHON:
        shift = 0  # a host's clock (CPython: bridged legacy batteries) is its own, kept by NTP
    if shift:
        if clock is compat.now_ms:
            # the port's clock: what the node, its frames and its audit trail read; compat's
            # offset from the port's own time (a board's RTC, or a simulated board's clock
            # started at the port's epoch: boot.py)
            compat._EPOCH_OFFSET_MS += shift
        else:
            clock.shift(shift)  # an injected clock (tests) that can be set
        # Times counted on the old clock move with it: a setting is no time passing.
        battery = core.battery
        for name in ("_now_ms", "_dis_until_ms"):
            if getattr(battery, name, 0):
                setattr(battery, name, getattr(battery, name) + shift)
        for hold in core.ledger.holds.values():
            hold[3] += shift  # expires_ms
    seen[_NOTICE_TIME] = ts
    if core.not_before_ms is None and last:
        core.not_before_ms = ts - core.receiver.max_skew_ms  # it read no frame before
        return [core.birth(), core.status()]
    return []
