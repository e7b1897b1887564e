"""A node whose clock starts at its port's epoch trades only once the hub's time set it.

The node core on CPython with a settable clock (its `shift` is what clock_sync uses for an
injected clock): nothing published and no request answered while the clock reads 2000; the
first (retained) time notice moves the clock but does not set it; a newer one sets it, and
the node publishes its birth and trades; forged, stale and wrong-kind notices change nothing.
"""

from __future__ import annotations

from firmware.etp_node.battery import SimBattery
from firmware.etp_node.core import NodeCore
from hub.auctions.clock import time_notices
from hub.auctions.notices import NoticeSigner
from shared_etp import schema as S
from shared_etp.frame import Keyring, Sender, decode_frame, derive_key
from shared_etp.signing import derive_notice_key, encode_notice

MASTER = b"clock-test-master-secret"
DEV = 5
KEY = derive_key(MASTER, DEV)
ROOT = derive_key(MASTER, 0)  # the hub's notice root
NOTICE_KEY = derive_notice_key(MASTER, DEV)  # the board's own notice key
PORT_EPOCH_MS = 946_684_800_000  # 2000-01-01, where a MicroPython port without an RTC starts
HUB_NOW_MS = 1_796_000_000_000
TIME_TOPIC = "etp/v1/c/market/5/time"


def time_notice(root: bytes, ts: int, device: int = DEV) -> bytes:
    """The hub's time notice for `device`, as the hub signs it (its notice signer)."""
    return time_notices(NoticeSigner(root), [device], ts)[device]


class SettableClock:
    """Named test double of a board's clock: reads `now`, and `shift` moves it (as
    clock_sync moves the port's clock)."""

    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now

    def shift(self, ms: int) -> None:
        self.now += ms


def make(clock: SettableClock) -> NodeCore:
    config = {
        "device_id": DEV, "site": "c", "key": KEY, "notice_key": NOTICE_KEY,
        "reserve_mc": 20000, "pct_for_sale": 5000, "floor_wh": 500, "dynamic_reserve": False,
        "hold_timeout_ms": 3000, "min_reputation": 0, "epoch": 3,
    }  # fmt: skip
    return NodeCore(config, SimBattery(capacity_wh=10000, soc=10000), None, clock)


_SENDERS: dict[int, Sender] = {}


def request(core: NodeCore, hub_clock: SettableClock, msg_type: int, **fields: int) -> list:
    """A request from the hub (one signer per clock: its sequence numbers go on)."""
    sender = _SENDERS.setdefault(id(hub_clock), Sender(0, DEV, KEY, 1, clock=hub_clock))
    frame, _ = sender.frame(msg_type, dst=DEV, **fields)
    return core.handle(core.topic_req, frame)


def decoded(frames: list) -> list[dict]:
    keys = Keyring()
    keys.add(DEV, KEY)
    return [decode_frame(frame, keys) for _, frame in frames]


def test_a_board_at_the_port_epoch_trades_only_once_the_hub_time_set_its_clock() -> None:
    board = SettableClock(PORT_EPOCH_MS + 7_000)  # seven seconds after power-on
    hub = SettableClock(HUB_NOW_MS)
    core = make(board)
    assert core.not_before_ms is None
    assert TIME_TOPIC in core.subscriptions()
    # not set: no status, no answer (its frames would be stamped 2000 and refused anyway)
    for _ in range(60):
        board.now += 100
        hub.now += 100
        assert core.tick() == []
    assert request(core, hub, S.QUERY, auc=1) == []
    assert request(core, hub, S.BID, auc=1, price=30000, ereq=100) == []
    assert core.stats["dropped"]["clock_not_set"] == 2
    # the retained notice, 800 ms old: the clock moves, but is not set yet
    assert core.handle(TIME_TOPIC, time_notice(ROOT, hub.now - 800)) == []
    assert core.not_before_ms is None and abs(board.now - (hub.now - 800)) < 5
    assert request(core, hub, S.QUERY, auc=1) == []
    # the same notice again (a reconnect re-delivers it): stale
    assert core.handle(TIME_TOPIC, time_notice(ROOT, hub.now - 800)) == []
    assert core.not_before_ms is None
    # a live one: the clock reads the hub's time; birth and status go out, stamped with it
    board.now += 200
    hub.now += 200
    out = core.handle(TIME_TOPIC, time_notice(ROOT, hub.now))
    assert [topic.rsplit("/", 1)[1] for topic, _ in out] == ["birth", "status"]
    birth, status = decoded(out)
    assert birth["t"] == S.REGISTER and status["t"] == S.BESS_STATUS
    assert abs(birth["ts"] - hub.now) < 5 and board.now == hub.now
    assert core.not_before_ms is not None
    # it trades normally now
    (reply,) = decoded(request(core, hub, S.QUERY, auc=2))
    assert reply["t"] == S.QUERY_RESPONSE and reply["ereq"] > 0
    (accept,) = decoded(request(core, hub, S.BID, auc=2, price=30000, ereq=500))
    assert accept["t"] == S.BID_ACCEPT
    (done,) = decoded(request(core, hub, S.BID_CONFIRM, auc=2, price=30000, ereq=500))
    assert done["t"] == S.BID_ACCEPT and core.stats["trades"] == 1
    board.now += 100
    hub.now += 100
    assert [topic.rsplit("/", 1)[1] for topic, _ in core.tick()] == ["status"]  # discharging


def test_forged_stale_and_wrong_kind_notices_do_not_set_the_clock() -> None:
    board = SettableClock(PORT_EPOCH_MS)
    core = make(board)
    forged_key = derive_key(b"another site", 0)
    core.handle(TIME_TOPIC, time_notice(forged_key, HUB_NOW_MS))
    core.handle(TIME_TOPIC, time_notice(forged_key, HUB_NOW_MS + 1000))
    # another board's time notice (its key id), and one of the old site-wide kind (key id 0,
    # signed with the root a board no longer holds) are refused
    core.handle(TIME_TOPIC, time_notice(ROOT, HUB_NOW_MS, DEV + 1))
    core.handle(TIME_TOPIC, time_notice(ROOT, HUB_NOW_MS + 1000, DEV + 1))
    core.handle(TIME_TOPIC, encode_notice(S.NOTICE_TIME, 1000, 0, 0, ROOT, HUB_NOW_MS))
    core.handle(TIME_TOPIC, encode_notice(S.NOTICE_TIME, 1000, 0, 0, ROOT, HUB_NOW_MS + 1000))
    assert board.now == PORT_EPOCH_MS and core.not_before_ms is None
    assert sum(core.stats["protocol_errors"].values()) == 6
    # a reputation notice (its own key) on the time topic is not the hub's time
    core.handle(TIME_TOPIC, encode_notice(S.NOTICE_TIME - 2, {}, 0, DEV, NOTICE_KEY, HUB_NOW_MS))
    core.handle(TIME_TOPIC, encode_notice(1, {}, 0, DEV, NOTICE_KEY, HUB_NOW_MS + 1000))
    assert board.now == PORT_EPOCH_MS and core.not_before_ms is None
    # two real ones set it; an older one afterwards is stale and moves nothing
    core.handle(TIME_TOPIC, time_notice(ROOT, HUB_NOW_MS))
    assert core.handle(TIME_TOPIC, time_notice(ROOT, HUB_NOW_MS + 1000)) != []
    set_at = board.now
    assert core.handle(TIME_TOPIC, time_notice(ROOT, HUB_NOW_MS + 500)) == []
    assert board.now == set_at


def test_a_set_clock_follows_the_hub_once_a_minute() -> None:
    """A board whose clock was right at boot trades at once; the hub's time corrects its
    drift, at most once a minute, and time counted on the old clock (holds) moves with it."""
    board = SettableClock(HUB_NOW_MS - 1500)  # its RTC is 1.5 s behind
    hub = SettableClock(HUB_NOW_MS)
    core = make(board)
    assert core.not_before_ms is not None  # a real date: it trades at once
    (accept,) = decoded(request(core, hub, S.BID, auc=1, price=30000, ereq=500))
    assert accept["t"] == S.BID_ACCEPT
    expires = core.ledger.holds[1][3]
    assert core.handle(TIME_TOPIC, time_notice(ROOT, hub.now)) == []
    assert board.now == hub.now and core.ledger.holds[1][3] == expires + 1500
    board.now -= 700  # it drifts
    assert core.handle(TIME_TOPIC, time_notice(ROOT, hub.now + 1000)) == []
    assert board.now == hub.now - 700  # within the minute: not taken
    board.now += 61_000
    hub.now += 61_000
    core.handle(TIME_TOPIC, time_notice(ROOT, hub.now))
    assert board.now == hub.now
