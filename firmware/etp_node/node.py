"""The board's asyncio node: NodeCore wrapped with the MQTT client, one task per concern.

Tasks: link (connect, subscribe, birth; reconnect with backoff), auction (handle every
received frame and publish the replies), ticker (every 100 ms: hold expiry, fault detection
within 200 ms, status on change and periodically, injected faults on the unix port, state on
flash). Events and the client's inbox connect them; nothing blocks the loop.
"""

import asyncio
import gc
import json
import os
import random
import sys

from firmware.etp_node.core import NodeCore
from firmware.etp_node.mqtt import MQTTClient, parse_url
from shared_etp.compat import ticks_diff, ticks_ms

STATE_FILE = "etp_state.json"  # on flash: boot epoch and energy figures
_TICK_S = 0.1
_BACKOFF_MIN_MS = 500
_BACKOFF_MAX_MS = 30000
_STATS_EVERY_MS = 5000
_STABLE_SESSION_MS = 10000


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

    def __init__(self, config, battery, audit=None, state=None):
        self.config = config
        self.core = NodeCore(config, battery, audit)
        self.battery = battery
        self.state = state if state is not None else {}
        host, port, tls = parse_url(config["mqtt_url"])
        self.client = MQTTClient(
            "etp-bess-%d" % config["device_id"],
            host,
            port,
            keepalive_s=config.get("mqtt_keepalive_s", 30),
            user=config.get("mqtt_user") or None,
            password=config.get("mqtt_password") or None,
            tls=tls,
            ca_file=config.get("mqtt_ca_file") or None,
        )
        self.running = True
        self.connects = 0
        self.handle_ms_max = 0

    async def publish_all(self, messages):
        """Publish (topic, frame) pairs with the QoS/retain their topic calls for."""
        for topic, frame in messages:
            if not self.client.connected:
                return
            # QoS/retain per the protocol's topic table: birth 1 retained, status 0, else 1.
            leaf = topic[topic.rfind("/") + 1 :]
            qos = 0 if leaf == "status" else 1
            retain = leaf == "birth"
            try:
                await self.client.publish(topic, frame, qos, retain)
            except Exception as exc:
                log("publish_failed", topic=topic, error=str(exc))
                return

    async def link_task(self):
        """Keep a session up: connect with the DeviceFailure will, subscribe, publish birth."""
        backoff_ms = _BACKOFF_MIN_MS
        while self.running:
            will_topic, will_frame = self.core.will()
            self.client.will = (will_topic, will_frame, 1, False)
            try:
                await self.client.connect()
                await self.client.subscribe(self.core.subscriptions(), 1)
                await self.publish_all([self.core.birth(), self.core.status()])
            except Exception as exc:
                log("connect_failed", error=str(exc) or type(exc).__name__, retry_ms=backoff_ms)
                await self.client.close()
                await asyncio.sleep(backoff_ms * (1000 + random.getrandbits(8)) / 1000000)
                backoff_ms = min(_BACKOFF_MAX_MS, backoff_ms * 2)
                continue
            self.connects += 1
            log("connected", device=self.config["device_id"], connects=self.connects)
            since = ticks_ms()
            await self.client.lost.wait()
            log("link_lost", device=self.config["device_id"])
            await self.client.close()
            if ticks_diff(ticks_ms(), since) >= _STABLE_SESSION_MS:
                backoff_ms = _BACKOFF_MIN_MS  # a session that held earns a fresh start
            else:  # accepted then dropped at once (takeover, broker trouble): keep backing off
                await asyncio.sleep(backoff_ms * (1000 + random.getrandbits(8)) / 1000000)
                backoff_ms = min(_BACKOFF_MAX_MS, backoff_ms * 2)

    async def auction_task(self):
        """Handle every received frame in order and publish the replies at once."""
        client = self.client
        core = self.core
        while self.running:
            await client.received.wait()
            client.received.clear()
            while client.inbox:
                topic, payload = client.inbox.pop(0)
                start = ticks_ms()
                trades = core.stats["trades"]
                replies = core.handle(topic, payload)
                if core.stats["trades"] != trades:
                    self.save_energy()  # durable before the buyer hears "sold"
                await self.publish_all(replies)
                spent = ticks_diff(ticks_ms(), start)
                if spent > self.handle_ms_max:
                    self.handle_ms_max = spent
            # Free the handling garbage now, while the loop is idle: it would otherwise sit
            # between long-lived objects and fragment a small heap (under 1 ms at 64 KB).
            gc.collect()

    def save_energy(self):
        """Persist the battery's energy figures (the simulated pack's memory across boots)."""
        self.state["erem"] = self.battery.remaining_wh()
        self.state["capacity_wh"] = self.battery.capacity_wh
        try:
            save_state(self.state)
        except OSError as exc:
            log("state_write_failed", error=str(exc))

    async def ticker_task(self):
        """Every 100 ms: injected faults, core.tick() (expiry, faults, status), state, stats."""
        core = self.core
        fault_file = self.config.get("fault_file")
        last_stats = ticks_ms()
        while self.running:
            await asyncio.sleep(_TICK_S)
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
            out = core.tick()
            if out:
                await self.publish_all(out)
            now = ticks_ms()
            if ticks_diff(now, last_stats) >= _STATS_EVERY_MS:
                last_stats = now
                self.log_stats()

    def log_stats(self):
        """Print the counters (and heap use where the port reports it) as one JSON line."""
        heap = {}
        if hasattr(gc, "mem_alloc"):
            gc.collect()  # live figures, not garbage
            heap = {"alloc": gc.mem_alloc(), "free": gc.mem_free()}
        log("stats", device=self.config["device_id"], core=self.core.stats,
            mqtt=self.client.stats, handle_ms_max=self.handle_ms_max,
            holds=len(self.core.ledger.holds), erem=self.battery.remaining_wh(), heap=heap)

    async def run(self):
        """Run all tasks until cancelled."""
        tasks = [
            asyncio.create_task(self.link_task()),
            asyncio.create_task(self.auction_task()),
            asyncio.create_task(self.ticker_task()),
        ]
        try:
            await asyncio.gather(*tasks)
        finally:
            self.running = False
            for task in tasks:
                task.cancel()
            await self.client.close()
