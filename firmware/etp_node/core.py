"""The transport-free node: frames in, frames out. Runs on MicroPython and CPython alike.

NodeCore turns received (topic, payload) pairs into the (topic, frame) pairs to publish, and
tick() into the periodic ones (hold expiry, fault detection, status). It never raises on bad
input: every rejected frame is counted in `stats` and dropped. The board's node loop
(node.py) and the hub's CPython battery simulator both wrap this same class.
"""

from firmware.etp_node import unload
from firmware.etp_node.evaluator import Evaluator
from firmware.etp_node.ledger import Ledger
from shared_etp.compat import const, now_ms
from shared_etp.errors import ProtocolError
from shared_etp.frame import Keyring, Receiver, Sender, decode_notice
from shared_etp.replay import next_epoch

# protocol constants (shared_etp.schema), private so they cost no heap
_BESS_STATUS = const(9)
_BID = const(3)
_BID_ACCEPT = const(4)
_BID_CONFIRM = const(5)
_BID_REJECT = const(6)
_DEVICE_FAILURE = const(8)
_HEALTH_FAULT = const(2)
_QUERY = const(1)
_QUERY_RESPONSE = const(2)
_REASON_AUCTION_CLOSED = const(5)
_REASON_DEVICE_FAULT = const(8)
_REASON_HOLD_EXPIRED = const(7)
_REASON_INSUFFICIENT_ENERGY = const(2)
_REASON_LINK_LOST = const(13)
_REASON_NONE = const(0)
_REASON_NOT_HOLDER = const(14)
_REGISTER = const(0)
_TERMINATE = const(7)
# field keys (shared_etp.fields.FIELD_NAMES) of the payloads the node signs
_K_AUC = const(11)
_K_PRICE = const(12)
_K_SALE = const(13)
_K_ETOT = const(14)
_K_PCT = const(15)
_K_EREQ = const(16)
_K_EREM = const(18)
_K_HEALTH = const(19)
_K_VOLT = const(20)
_K_DIS = const(21)
_K_REASON = const(22)
_K_SOC = const(23)
_BIDDER = const(0)  # indices into a ledger hold
_PRICE = const(1)
_ENERGY = const(2)
_EXPIRES = const(3)
_CLOSED_KEPT = const(16)  # evaluator.closed: late bids name a recent auction

_NOTICE_TIME = const(3)  # shared_etp.schema.NOTICE_TIME: the hub's clock
_TIME_EVERY_MS = const(60000)  # once set, the clock follows the hub's this often (drift)
# A clock before 2025-01-01 (days since 1970) has not been set: a board without a real-time
# clock counts from its port's epoch (2000-01-01) until NTP or the hub's time sets it.
_CLOCK_SET_AFTER_DAYS = const(20089)
_MAX_BIDDERS_TRACKED = const(32)  # replay windows kept (aggregators + hub); least recent forgotten
_SOC_CHANGE = const(100)  # a state-of-charge move of 1 % is a significant change


def _bump(table, name):
    table[name] = table.get(name, 0) + 1


class NodeCore:
    """One battery's protocol logic: register, answer queries, evaluate and hold bids, commit
    confirmed trades, expire holds, detect faults, report status."""

    def __init__(self, config, battery, audit=None, clock=now_ms):
        # At most 23 attributes: the instance's table stays a 368-byte block (see mqtt.py).
        self.device_id = config["device_id"]
        site = config["site"]
        self.battery = battery
        self.audit = audit
        self.clock = clock
        self.pct_for_sale = config["pct_for_sale"]
        self.floor_wh = config.get("floor_wh", 0)
        self.hold_timeout_ms = config.get("hold_timeout_ms", 3000)
        self.status_interval_ms = config.get("status_interval_ms", 5000)
        self.delivery_s = config.get("delivery_s", 900)
        epoch = config.get("epoch") or next_epoch(0, clock() // 1000)
        key = bytes(config["key"])
        self.sender = Sender(self.device_id, self.device_id, key, epoch, clock=clock)
        keyring = Keyring()
        keyring.add(self.device_id, key)
        self.receiver = Receiver(keyring, max_senders=_MAX_BIDDERS_TRACKED, clock=clock)
        # Replay windows live in RAM: after a reboot, a frame captured before it would be new
        # again within its TTL. Frames stamped before boot (less the allowed clock skew) are
        # therefore refused; the node's own epoch on flash covers the other direction.
        # None while the clock is not set (it read no real date at boot, e.g. from NTP, and
        # the hub's time has not come: clock_sync.py): frames carry timestamps checked for
        # freshness, so until then the node answers no request and publishes nothing.
        now = clock()
        self.not_before_ms = None
        if now // 86400000 >= _CLOCK_SET_AFTER_DAYS:
            self.not_before_ms = now - self.receiver.max_skew_ms
        # Market notices come signed with this board's own notice key (key id = device id,
        # sender the hub): another board's, or the old site-wide kind (key id 0), is refused.
        self.notice_keys = Keyring()
        notice_key = config.get("notice_key")
        if notice_key:
            self.notice_keys.add(self.device_id, bytes(notice_key), owner=0)
        self._notice_ts = {}
        self.ledger = Ledger()
        self.evaluator = Evaluator(config)
        self.faulted = _REASON_NONE
        # Topics per shared_etp.topics (spelled out here so a board need not load that module;
        # tests check they agree): etp/v1/<site>/bess/<dev>/<leaf>, and this board's own
        # notices etp/v1/<site>/market/<dev>/<leaf>.
        if not site or "/" in site or "+" in site or "#" in site:
            raise ValueError("invalid site %r for an MQTT topic" % site)
        self._device_prefix = "etp/v1/%s/bess/%d/" % (site, self.device_id)
        self.topic_req = self._device_prefix + "req"
        self.topic_resp = self._device_prefix + "resp"
        # etp/v1/<site>/market/<dev>/ made from the device prefix, not from a format string of
        # its own: that heap constant cost a 64K board the last bytes a trail scan needs
        self._market_prefix = self._device_prefix.replace("bess", "market")
        self._last_status = None  # (ms, soc, health, dis) of the last BESSStatus
        self.stats = {
            "handled": 0,
            "accepted": 0,
            "rejected": 0,
            "trades": 0,
            "sold_wh": 0,
            "expired": 0,
            "faults": 0,
            "notices": 0,
            "outcomes": 0,  # Terminates with `auc` answered (did the node commit the auction?)
            "reject_reasons": {},
            "protocol_errors": {},
            "dropped": {},
        }

    # --- energy figures -------------------------------------------------------------------
    def max_sellable_wh(self):
        """Energy the owner offers before any hold: remaining x pct_for_sale - floor."""
        offered = self.battery.remaining_wh() * self.pct_for_sale // 10000 - self.floor_wh
        return offered if offered > 0 else 0

    def sellable_wh(self, exclude_auction=None):
        """Energy still free to promise: max_sellable_wh minus every hold (except one auction)."""
        free = self.max_sellable_wh() - self.ledger.held_wh(exclude_auction)
        return free if free > 0 else 0

    # --- frames the node originates -------------------------------------------------------
    # Payloads go to Sender.sign as flat (key, value, ...) tuples in key order: no message
    # dict is made on the way out (see Sender.sign).
    def birth(self):
        """(topic, frame) of the Register published retained on the birth topic."""
        battery = self.battery
        return self._device_prefix + "birth", self.sender.sign(_REGISTER, 0, None, (
            # the reserve in force now for a small bid (inline: a function is ~130 bytes)
            _K_SALE, self.evaluator.dynamic_reserve(self.sellable_wh(), self.max_sellable_wh(), 0),
            _K_ETOT, battery.capacity_wh,
            _K_PCT, self.pct_for_sale,
            _K_EREM, battery.remaining_wh(),
            _K_HEALTH, _HEALTH_FAULT if self.faulted else battery.health(),
        ))

    def will(self, reason=_REASON_LINK_LOST):
        """(topic, frame) of the DeviceFailure the broker publishes if the link dies."""
        return self._device_prefix + "death", self.sender.sign(
            _DEVICE_FAILURE, 0, None, (_K_HEALTH, _HEALTH_FAULT, _K_REASON, reason), 86400000
        )

    def status(self, due=None):
        """(topic, frame) of a BESSStatus with the present battery state; `due`: the time the
        periodic schedule counts it at (default now)."""
        battery = self.battery
        # (the health inline here and in birth, query, tick: a function is ~130 bytes of heap)
        snapshot = (self.clock() if due is None else due, battery.soc(),
                    _HEALTH_FAULT if self.faulted else battery.health(),
                    battery.discharge_w())
        self._last_status = snapshot
        return self._device_prefix + "status", self.sender.sign(_BESS_STATUS, 0, None, (
            _K_EREM, battery.remaining_wh(),
            _K_HEALTH, snapshot[2],
            _K_VOLT, max(0, battery.voltage_mv()),
            _K_DIS, snapshot[3],
            _K_SOC, snapshot[1],
        ))

    def subscriptions(self):
        """Topics the node subscribes to: its request topic and its own market notices."""
        market = self._market_prefix
        return [self.topic_req, market + "reputation", market + "clearing", market + "time"]

    # --- input ----------------------------------------------------------------------------
    def handle(self, topic, payload):
        """Process one received message; returns [(topic, frame)] to publish. Never raises."""
        stats = self.stats
        stats["handled"] += 1
        try:
            if topic == self.topic_req:
                if self.not_before_ms is None:
                    _bump(stats["dropped"], "clock_not_set")  # its age cannot be checked
                    return []
                msg = self.receiver.open(payload)
                if msg["ts"] < self.not_before_ms:
                    _bump(stats["dropped"], "before_boot")
                elif msg["dst"] not in (0, self.device_id):
                    _bump(stats["dropped"], "not_for_me")
                elif msg["src"] == self.device_id:
                    _bump(stats["dropped"], "own_frame")
                elif msg["t"] == _BID:
                    return [self._on_bid(msg)]
                elif msg["t"] == _BID_CONFIRM:
                    reply = self._on_confirm(msg)
                    return [] if reply is None else [reply]
                elif msg["t"] == _QUERY:
                    return [self._on_query(msg)]
                elif msg["t"] == _TERMINATE:
                    reply = self._on_terminate(msg)
                    return [] if reply is None else [reply]
                else:
                    _bump(stats["dropped"], "unexpected_type")
                return []
            prefix = self._market_prefix
            if topic.endswith("/time") and topic.startswith(prefix):
                # The hub's time (every second): taken while the clock is not set, then once
                # a minute, by code loaded for it (clock_sync.py) and dropped again.
                if (self.not_before_ms is not None
                        and self.clock() - self._notice_ts.get(_NOTICE_TIME, 0) < _TIME_EVERY_MS):
                    return []
                from firmware.etp_node import clock_sync

                try:
                    return clock_sync.handle(self, payload)
                finally:
                    unload("clock_sync")
            if topic.startswith(prefix) and topic[len(prefix) :] in ("reputation", "clearing"):
                kind, ts, data = decode_notice(payload, self.notice_keys)
                if ts < self._notice_ts.get(kind, 0):
                    _bump(stats["dropped"], "stale_notice")
                    return []
                self._notice_ts[kind] = ts
                stats["notices"] += 1
                self.evaluator.set_notice(kind, data)
                return []
            _bump(stats["dropped"], "unknown_topic")
        except ProtocolError as exc:
            _bump(stats["protocol_errors"], exc.code)
        except Exception as exc:  # a bug must not take the node down; it is counted
            _bump(stats["dropped"], "internal:" + type(exc).__name__)
        return []

    def _reply(self, msg, msg_type, payload):
        return self.topic_resp, self.sender.sign(msg_type, msg["src"], msg["id"], payload)

    def _audit(self, record):
        """Append a record to the audit trail; False if it could not be written (an audit that
        returns nothing, like the CPython simulator's in-memory one, counts as written)."""
        if self.audit is not None:
            record["t"] = self.clock()
            return self.audit.append(record) is not False
        return True

    def _on_query(self, msg):
        battery = self.battery
        return self._reply(msg, _QUERY_RESPONSE, (
            _K_AUC, msg.get("auc"),
            # the reserve in force now for a small bid (inline: a function is ~130 bytes)
            _K_SALE, self.evaluator.dynamic_reserve(self.sellable_wh(), self.max_sellable_wh(), 0),
            _K_ETOT, battery.capacity_wh,
            _K_PCT, self.pct_for_sale,
            # what a lot may be now: the energy for sale, as far as the pack's power allows
            _K_EREQ, self.evaluator.power_cap_wh(self, None, self.sellable_wh()),
            _K_EREM, battery.remaining_wh(),
            _K_HEALTH, _HEALTH_FAULT if self.faulted else battery.health(),
            _K_VOLT, max(0, battery.voltage_mv()),
            _K_DIS, battery.discharge_w(),
            _K_SOC, battery.soc(),
        ))

    def _on_bid(self, msg):
        auction = msg["auc"]
        bidder = msg["src"]
        price = msg["price"]
        energy = msg["ereq"]
        held = self.ledger.holds.get(auction)
        reason = self.evaluator.evaluate(
            bidder,
            auction,
            price,
            energy,
            self.sellable_wh(auction),
            self.max_sellable_wh(),
            held,
            self.faulted,
            self,
        )
        if reason == _REASON_NONE and held is None:
            traded = self.ledger.find(auction)  # a trade closes its auction: no second hold
            if traded is not None and traded[2] == "confirmed":
                reason = _REASON_AUCTION_CLOSED
        self._audit({"k": "bid", "auc": auction, "b": bidder, "p": price, "e": energy, "r": reason})
        if reason != _REASON_NONE:
            # (inline, as in _on_confirm: one function less on a board's heap)
            self.stats["rejected"] += 1
            _bump(self.stats["reject_reasons"], str(reason))  # keyed by the code's digits
            return self._reply(msg, _BID_REJECT, (_K_AUC, auction, _K_REASON, reason))
        expires_ms = self.clock() + self.hold_timeout_ms
        self.ledger.put(auction, bidder, price, energy, expires_ms, msg["id"])
        self.stats["accepted"] += 1
        return self._reply(msg, _BID_ACCEPT, (_K_AUC, auction, _K_PRICE, price, _K_EREQ, energy))

    def _on_confirm(self, msg):
        auction = msg["auc"]
        bidder = msg["src"]
        hold = self.ledger.holds.get(auction)
        if self.faulted:
            reason = _REASON_DEVICE_FAULT
        elif hold is None:
            # its last release: (auction, bidder, why, price, energy) or None
            released = self.ledger.find(auction)
            if (released is not None and released[1] == bidder and released[2] == "confirmed"
                    and released[3] == msg["price"] and released[4] == msg["ereq"]):
                # The same confirm again (the hub re-sends it after a restart to learn whether
                # the trade stands): answer as before, deliver nothing twice.
                return self._reply(msg, _BID_ACCEPT, (_K_AUC, auction, _K_PRICE, msg["price"],
                                                      _K_EREQ, msg["ereq"]))
            if released is not None and released[1] == bidder and released[2] == "expired":
                reason = _REASON_HOLD_EXPIRED
            elif released is not None and released[2] == "confirmed":
                reason = _REASON_NOT_HOLDER  # the auction traded, on other terms or to another
            elif auction in self.evaluator.closed:
                reason = _REASON_AUCTION_CLOSED
            else:
                reason = _REASON_NOT_HOLDER
        elif (hold[_BIDDER] != bidder or hold[_PRICE] != msg["price"]
              or hold[_ENERGY] != msg["ereq"]):
            reason = _REASON_NOT_HOLDER
        elif hold[_ENERGY] > self.battery.remaining_wh():
            reason = _REASON_INSUFFICIENT_ENERGY  # only if the pack lost energy under the hold
        else:
            reason = _REASON_NONE
        if reason != _REASON_NONE:
            self._audit({"k": "confirm", "auc": auction, "b": bidder, "r": reason})
            self.stats["rejected"] += 1
            _bump(self.stats["reject_reasons"], str(reason))
            return self._reply(msg, _BID_REJECT, (_K_AUC, auction, _K_REASON, reason))
        energy = hold[_ENERGY]
        self.battery.step(self.clock())  # the discharge starts now, not at the last tick
        # On flash before it is committed: no record, no trade. If the record cannot be
        # written (no heap, flash full or failing), the trade is not made and the confirm goes
        # unanswered (its sender re-sends it; the hold stays until it expires).
        if not self._audit({"k": "trade", "auc": auction, "b": bidder, "p": hold[_PRICE],
                            "e": energy, "id": msg["id"]}):  # the confirm's id (hub's copy)
            _bump(self.stats["dropped"], "unrecorded")
            return None
        # Its last release, "confirmed", closes the auction: no second hold is taken in it
        # (_on_bid), so repeats of this confirm and Terminates are answered from it.
        self.ledger.release(auction, "confirmed")
        self.battery.deliver(energy, self.delivery_s)
        self.evaluator.record(bidder, hold[_PRICE])
        self.stats["trades"] += 1
        self.stats["sold_wh"] += energy
        return self._reply(msg, _BID_ACCEPT,
                           (_K_AUC, auction, _K_PRICE, hold[_PRICE], _K_EREQ, energy))

    def _on_terminate(self, msg):
        """Terminate: without `auc` release every hold (no answer); with `auc` close that
        auction and answer its sender S whether the node committed it to S (audit_read.decide):
        BidAccept with the trade's price and energy, or BidReject with the reason it did not."""
        auction = msg.get("auc")
        if auction is None:
            released = 0  # every hold (inline, as at a fault: one function less on a board)
            for held in list(self.ledger.holds):
                self.ledger.release(held, "terminated")
                released += 1
            self._audit({"k": "terminate", "auc": -1, "b": msg["src"], "term": msg["term"],
                         "released": released})
            return None
        asker = msg["src"]
        # The answer first, before this Terminate releases a hold or writes its own record;
        # decided by code loaded for it and dropped again (Terminates are rare, heap is not).
        from firmware.etp_node import audit_read

        try:
            reason, price, energy = audit_read.decide(self, auction, asker)
        finally:
            unload("audit_read")
        # closed: later bids in it are auction_closed (bounded; inline, a function is heap)
        closed = self.evaluator.closed
        if auction not in closed:
            closed.append(auction)
            if len(closed) > _CLOSED_KEPT:
                closed.pop(0)
        self._audit({"k": "terminate", "auc": auction, "b": asker, "term": msg["term"],
                     "released": 0 if self.ledger.release(auction, "terminated") is None else 1})
        self.stats["outcomes"] += 1
        if reason == _REASON_NONE:
            return self._reply(msg, _BID_ACCEPT,
                               (_K_AUC, auction, _K_PRICE, price, _K_EREQ, energy))
        return self._reply(msg, _BID_REJECT, (_K_AUC, auction, _K_REASON, reason))

    # --- time -----------------------------------------------------------------------------
    def tick(self):
        """Call about every 100 ms: expire holds, detect faults, publish status when due."""
        out = []
        try:
            now = self.clock()
            self.battery.step(now)
            if self.not_before_ms is None:
                return out  # the clock is not set: no hold to expire, nothing to publish
            ledger = self.ledger
            for auction, hold in list(ledger.holds.items()):
                if now < hold[_EXPIRES]:
                    continue
                ledger.release(auction, "expired")  # its timeout passed (inline: heap)
                self.stats["expired"] += 1
                self.evaluator.record(hold[_BIDDER])  # abandoned: it let the hold expire
                self._audit({"k": "expire", "auc": auction, "b": hold[_BIDDER], "e": hold[_ENERGY]})
            fault = self.battery.fault()
            if fault and not self.faulted:
                self.faulted = fault
                self.stats["faults"] += 1
                released = 0  # every hold
                for held in list(self.ledger.holds):
                    self.ledger.release(held, "fault")
                    released += 1
                self._audit({"k": "fault", "r": fault, "released": released})
                out.append(self.will(fault))
                out.append(self.status())
            elif not fault and self.faulted:
                self.faulted = _REASON_NONE
                self._audit({"k": "recovered"})
                out.append(self.birth())
                out.append(self.status())
            elif self._last_status is None:
                out.append(self.status())
            elif now - self._last_status[0] >= self.status_interval_ms:
                # Periodic status keeps its schedule (a late tick does not push the next one
                # back) unless it fell a whole period behind.
                due = self._last_status[0] + self.status_interval_ms
                out.append(self.status(due if now - due < self.status_interval_ms else now))
            else:  # on a significant change
                last = self._last_status
                battery = self.battery
                health = _HEALTH_FAULT if self.faulted else battery.health()
                if (abs(battery.soc() - last[1]) >= _SOC_CHANGE or health != last[2]
                        or battery.discharge_w() != last[3]):
                    out.append(self.status())
        except Exception as exc:
            _bump(self.stats["dropped"], "tick:" + type(exc).__name__)
        return out
