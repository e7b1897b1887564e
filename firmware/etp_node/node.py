"""The board's node: NodeCore wrapped with the MQTT client, in one loop (no asyncio).

One loop does what tasks would: keep the link (connect, subscribe, birth; reconnect with
backoff), handle every received frame and publish the replies, and every 100 ms tick (hold
expiry, fault detection within 200 ms, status on change and periodically, injected faults on
the unix port, state on flash). Between ticks it sleeps in the client's select.poll, so a frame
is handled as soon as it arrives. A single loop instead of asyncio tasks saves ~11 KB of heap
(asyncio's modules, tasks, streams, events) on a board whose heap is 64-96 KB.
"""

import gc
import json
import os
import random
import sys
import time

from firmware.etp_node.core import NodeCore
from firmware.etp_node.mqtt import MQTTClient
from shared_etp.compat import const, ticks_diff, ticks_ms

STATE_FILE = "etp_state.json"  # on flash: boot epoch and energy figures
_TICK_MS = const(100)
_BACKOFF_MIN_MS = const(500)
_BACKOFF_MAX_MS = const(30000)
_STATS_EVERY_MS = const(5000)
_STABLE_SESSION_MS = const(10000)


def log(event, **fields):
    """One JSON line on the console: what the node did (the sim fleet keeps these)."""
    fields["ev"] = event
    json.dump(fields, sys.stdout)  # streamed: no line-sized string on the heap
    sys.stdout.write("\n")


def save_state(state, path=STATE_FILE):
    """Write the node state (boot epoch, energy figures) atomically: a temp file then rename,
    so power loss keeps the old or the new file (boot.py reads it back)."""
    tmp = path + ".tmp"
    with open(tmp, "w") as handle:
        json.dump(state, handle)
    os.rename(tmp, path)


class Node:
    """Runs a NodeCore on one MQTT connection until stopped."""

    def __init__(self, config, battery, address, audit=None, state=None, tls_context=None):
        """address: (host, port, tls) of the broker (boot.parse_url)."""
        self.config = config
        self.core = NodeCore(config, battery, audit)
        self.battery = battery
        self.state = state if state is not None else {}
        host, port, tls = address
        self.client = MQTTClient(
            "etp-bess-%d" % config["device_id"],
            host,
            port,
            keepalive_s=config.get("mqtt_keepalive_s", 30),
            user=config.get("mqtt_user") or None,
            password=config.get("mqtt_password") or None,
            tls=tls,
            ca_file=config.get("mqtt_ca_file") or None,
            tls_context=tls_context,
        )
        self.running = True
        self.connects = 0
        self.handle_ms_max = 0
        self._backoff_ms = _BACKOFF_MIN_MS
        self._retry_from = ticks_ms()  # the next connect is due retry_ms after this
        self._retry_ms = 0
        self._session_from = 0

    def publish_all(self, messages):
        """Publish (topic, frame) pairs with the QoS/retain their topic calls for."""
        for topic, frame in messages:
            # nothing while the node's clock is not set (its frames would be stamped 2000)
            if not self.client.connected or self.core.not_before_ms is None:
                return
            # QoS/retain per the protocol's topic table: birth 1 retained, status 0, else 1.
            leaf = topic[topic.rfind("/") + 1 :]
            try:
                self.client.publish(topic, frame, 0 if leaf == "status" else 1, leaf == "birth")
            except Exception as exc:
                log("publish_failed", topic=topic, error=str(exc))
                return

    def _back_off(self):
        """Wait the backoff (with jitter) before the next connect, then double it."""
        self._retry_from = ticks_ms()
        self._retry_ms = self._backoff_ms * (1000 + random.getrandbits(8)) // 1000
        self._backoff_ms = min(_BACKOFF_MAX_MS, self._backoff_ms * 2)

    def connect(self):
        """Connect with the DeviceFailure will, subscribe, publish birth; back off on failure."""
        client = self.client
        client.will = self.core.will() + (1, False)
        try:
            client.connect(self.core.subscriptions(), 1)
            self.publish_all([self.core.birth(), self.core.status()])
            if not client.connected:
                raise OSError("link lost right after connecting")
        except Exception as exc:
            log("connect_failed", error=str(exc) or type(exc).__name__, retry_ms=self._backoff_ms)
            client.close()
            self._back_off()
            return
        self.connects += 1
        self._session_from = ticks_ms()
        log("connected", device=self.config["device_id"], connects=self.connects)

    def handle_inbox(self):
        """Handle every received frame in order and publish the replies at once."""
        client = self.client
        core = self.core
        while client.inbox:
            topic, payload = client.inbox.pop(0)
            start = ticks_ms()
            trades = core.stats["trades"]
            replies = core.handle(topic, payload)
            payload = None  # handled: its block is free for the reply's packet
            if replies and topic.endswith("/time"):
                # The hub's time set the clock (the core answers that notice with the birth):
                # connect again at once (cleanly, no will) so the will is stamped with it,
                # and the birth and status go out then.
                client.close(True)
                self._retry_ms = 0
                return
            if core.stats["trades"] != trades:  # durable before the buyer hears "sold"
                # the energy figures: the simulated pack's memory across boots
                self.state["erem"] = self.battery.remaining_wh()
                self.state["capacity_wh"] = self.battery.capacity_wh
                try:
                    save_state(self.state)
                except OSError as exc:
                    log("state_write_failed", error=str(exc))
            self.publish_all(replies)
            spent = ticks_diff(ticks_ms(), start)
            if spent > self.handle_ms_max:
                self.handle_ms_max = spent
        # Free the handling garbage now, between bursts: it would otherwise sit between
        # long-lived objects and fragment a small heap (well under 1 ms at 64 KB).
        gc.collect()

    def tick(self):
        """Every 100 ms: injected faults, core.tick() (expiry, faults, status)."""
        fault_file = self.config.get("fault_file")
        if fault_file:  # simulation: a fault named in a file on flash
            try:
                with open(fault_file) as handle:
                    fault = handle.read().strip()
                os.remove(fault_file)
                self.battery.inject_fault(fault)
                log("fault_injected", fault=fault)
            except OSError:
                pass  # no fault file: the usual case
            except ValueError as exc:
                log("fault_rejected", error=str(exc))
        out = self.core.tick()
        if out:
            self.publish_all(out)

    def run(self):
        """Run until `running` is cleared (or an interrupt): link, frames, ticks, stats."""
        client = self.client
        last_tick = last_stats = ticks_ms()
        try:
            while self.running:
                until_tick = _TICK_MS - ticks_diff(ticks_ms(), last_tick)
                if client.connected:
                    client.wait(until_tick if until_tick > 0 else 0)
                    if not client.connected:
                        log("link_lost", device=self.config["device_id"])
                        client.close()
                        if ticks_diff(ticks_ms(), self._session_from) >= _STABLE_SESSION_MS:
                            self._backoff_ms = _BACKOFF_MIN_MS  # a session that held: start afresh
                            self._retry_ms = 0
                        else:  # accepted then dropped at once (takeover, broker trouble)
                            self._back_off()
                elif ticks_diff(ticks_ms(), self._retry_from) >= self._retry_ms:
                    self.connect()
                elif until_tick > 0:
                    time.sleep_ms(until_tick)  # offline: the ticks go on (faults, expiry)
                if client.inbox:
                    self.handle_inbox()
                now = ticks_ms()
                if ticks_diff(now, last_tick) >= _TICK_MS:
                    last_tick = now
                    self.tick()
                    if ticks_diff(now, last_stats) >= _STATS_EVERY_MS:
                        # The counters and the live heap (after a collection) as one line.
                        last_stats = now
                        gc.collect()
                        log("stats", device=self.config["device_id"], core=self.core.stats,
                            mqtt=client.stats, handle_ms_max=self.handle_ms_max,
                            holds=len(self.core.ledger.holds), erem=self.battery.remaining_wh(),
                            heap={"alloc": gc.mem_alloc(), "free": gc.mem_free()})
        finally:
            self.running = False
            client.close()
