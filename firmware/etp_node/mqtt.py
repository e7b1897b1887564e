"""A small blocking MQTT 3.1.1 client for MicroPython: one write per packet, no asyncio.

Features the node needs and nothing more: CONNECT with last will and credentials, keepalive
pings (and a dead-link timeout), SUBSCRIBE, PUBLISH at QoS 0/1 with retransmission (DUP) of
unacknowledged QoS 1 packets, inbound QoS 0/1 with PUBACK, TLS where the port has it. Every
packet is built first and written in ONE write, so Nagle's algorithm never splits it (see
ARCHITECTURE.md), with one exception: when a PUBLISH cannot be made for memory (its copy of
the frame needs a 5-block hole a fragmented 64 KB heap may not have), it is written as its
head (fixed header, topic, packet id) and then the frame as it is (Nagle is off on the socket:
mqtt_link; the broker reads one packet either way).

Why blocking and not asyncio: the node has one socket and one loop (node.py). asyncio's modules,
tasks, streams and events cost ~11 KB of a board's heap; here the node's loop calls `wait()`,
which sleeps in select.poll until a packet arrives or its timeout passes, reads what arrived
into `inbox`, answers keepalive and retransmits. The socket stays blocking with a timeout, so a
packet that has started to arrive is read whole, and a dead link raises instead of hanging.
`connected` turns False when the session is lost; the caller reconnects with backoff.
Connecting loads code for that only: the socket and TLS (mqtt_link), then the session setup
(CONNECT, SUBSCRIBE: mqtt_connect), each dropped after use.
"""

from firmware.etp_node import unload
from shared_etp.compat import const, ticks_diff, ticks_ms

_PUBLISH = const(0x30)
_PUBACK = const(0x40)
_SUBACK = const(0x90)
_PINGREQ = b"\xc0\x00"
_DISCONNECT = b"\xe0\x00"
_MAX_PACKET = const(16384)
# Packets taken in per wait(): the node handles them before reading on, so a burst of bids
# never sits in the heap at once (each waiting message holds ~300 bytes).
_BURST = const(4)
_POLL_IN = const(1)  # select.POLLIN
_POLL_ERRORS = const(0x18)  # select.POLLERR | select.POLLHUP


class MQTTError(Exception):
    """The broker refused or broke the session; the message says what to check."""


def packet(head, body, payload=b"", apart=False):
    """A whole packet: the fixed header byte, the remaining length, body, payload.

    Made in one bytearray of its final size: a reply is copied once, not three times over
    (a ~200-byte block each, on a small fragmented heap). apart: the payload is not copied,
    the packet ends before it (its length counts it) and the payload is written after it
    (MQTTClient.publish)."""
    size = len(body) + len(payload)
    count = 1 if size < 0x80 else 2 if size < 0x4000 else 3
    out = bytearray(1 + count + size - (len(payload) if apart else 0))
    out[0] = head
    for index in range(1, count + 1):
        out[index] = size & 0x7F | (0x80 if index < count else 0)
        size >>= 7
    index = count + 1
    out[index : index + len(body)] = body
    if not apart:
        out[index + len(body) :] = payload
    return out


def text(value):
    """An MQTT string: 2-byte length, then the UTF-8 bytes."""
    if isinstance(value, str):
        value = value.encode()
    return len(value).to_bytes(2, "big") + value


class MQTTClient:
    """One broker session. Received messages land in `inbox` as (topic, payload) pairs."""

    # Settings that are rarely set live on the class; __init__ stores only those given. An
    # instance's attribute table grows 12 -> 17 -> 23 -> 29 slots of 16 bytes: at most 17
    # attributes keep it a 272-byte block, which a fragmented 64 KB heap can still find.
    user = None
    password = None
    will = None  # (topic, payload, qos, retain): the node sets its DeviceFailure before connecting
    clean = True  # the node always starts a clean session
    max_inbox = 64
    timeout_s = 10  # connect, and any packet that has started to arrive
    ack_timeout_ms = 2000  # a QoS 1 PUBLISH not acknowledged by then is sent again (DUP)
    opener = None  # tests: a function(client) returning a stand-in socket

    def __init__(self, client_id, host, port=1883, keepalive_s=30, user=None, password=None,
                 tls=False, ack_timeout_ms=2000, ca_file=None, tls_context=None):
        self.client_id = client_id
        self.host = host
        self.port = port
        self.keepalive_s = keepalive_s
        # mqtts:// in one attribute (one more would grow the table past 17 slots): False for
        # plain TCP, else the TLS context (made once, a ~3 KB block, reused by every
        # reconnect) or, until it is made, what to make it from: the CA file (PEM/DER on
        # flash) to verify the broker against, or True for none.
        self.tls = (tls_context or ca_file or True) if tls else False
        if ack_timeout_ms != MQTTClient.ack_timeout_ms:
            self.ack_timeout_ms = ack_timeout_ms
        if user:
            self.user = user
            self.password = password
        self.inbox = []  # (topic, payload) in arrival order
        self.connected = False
        self.stats = {"tx": 0, "rx": 0, "retransmits": 0, "pings": 0, "dropped_rx": 0}
        self._pid = 0
        self._pending = {}  # pid -> [packet, last sent ticks, tries]
        self._suback = 0  # pid of the SUBSCRIBE awaiting its SUBACK
        self._sock = None
        self._poller = None
        self._last_rx = 0
        self._last_tx = 0

    def _write(self, data, payload=None):
        if self._sock is None:
            raise MQTTError("not connected to %s:%d" % (self.host, self.port))
        try:
            self._sock.write(data)  # blocking: the whole packet, in one write
            if payload is not None:  # ... or its head, then the frame as it is (no Nagle)
                self._sock.write(payload)
        except OSError as exc:
            self.connected = False  # the caller closes and reconnects
            raise MQTTError("write to the broker failed: %s" % exc) from None
        self._last_tx = ticks_ms()
        self.stats["tx"] += 1

    def _read(self, count):
        data = self._sock.read(count)
        if not data or len(data) < count:
            raise MQTTError("the broker closed the connection")
        return data

    def _read_packet(self):
        """(packet type byte, remaining length) of the next packet; the caller reads the rest."""
        head = self._read(1)[0]
        length = 0
        shift = 0
        while True:
            byte = self._read(1)[0]
            length |= (byte & 0x7F) << shift
            if not byte & 0x80:
                break
            shift += 7
            if shift > 21:
                raise MQTTError("malformed remaining length from broker")
        if length > _MAX_PACKET:
            raise MQTTError("broker sent a %d-byte packet, limit %d" % (length, _MAX_PACKET))
        self._last_rx = ticks_ms()
        return head, length

    def connect(self, topics=None, qos=1, timeout_ms=5000):
        """Open the connection, wait for CONNACK (at most timeout_s); subscribe to topics."""
        self.close()
        if self.opener is not None:
            self._sock = self.opener(self)
        else:  # the socket (a TLS handshake) with only its own code loaded, then the session's
            from firmware.etp_node import mqtt_link

            try:
                self._sock = mqtt_link.open_socket(self)
            finally:
                unload("mqtt_link")
        from firmware.etp_node import mqtt_connect

        try:
            mqtt_connect.connect(self)
            if topics:
                mqtt_connect.subscribe(self, topics, qos, timeout_ms)
        finally:
            unload("mqtt_connect")

    def publish(self, topic, payload, qos=0, retain=False):
        """Publish; QoS 1 packets are kept and resent (DUP) until the broker acknowledges."""
        body = text(topic)  # (the PUBLISH made here: a function is ~130 bytes of heap)
        if qos:
            pid = self._pid = self._pid % 65535 + 1
            body += pid.to_bytes(2, "big")
        head = _PUBLISH | (qos << 1) | (1 if retain else 0)
        try:  # one packet, one write
            out = packet(head, body, payload)
            payload = None
        except MemoryError:  # no hole for a copy of the payload: the packet's head, then it
            out = packet(head, body, payload, True)
        if qos:
            self._pending[pid] = [out, ticks_ms(), 1, payload]
        self._write(out, payload)

    def _resend(self, pid, entry):
        entry[0][0] |= 0x08  # DUP (the packet is a bytearray: packet())
        entry[1] = ticks_ms()
        entry[2] += 1
        self.stats["retransmits"] += 1
        self._write(entry[0], entry[3])

    def wait(self, timeout_ms):
        """Sleep until packets arrive or timeout_ms passes; take them in, keep the session.

        Received PUBLISH messages go to `inbox` (at most a burst per call, so the caller handles
        them in time); then keepalive pings, the dead-link check and retransmissions. Any error
        ends the session: `connected` turns False. Never raises.
        """
        if not self.connected:
            return
        try:
            ready = self._poller.poll(timeout_ms)
            taken = 0
            while ready and taken < _BURST:
                if ready[0][1] & _POLL_ERRORS and not ready[0][1] & _POLL_IN:
                    raise MQTTError  # the socket failed (wait() ends the session: no message)
                self._dispatch(*self._read_packet())
                taken += 1
                ready = self._poller.poll(0)
            # Keepalive: ping after half the period of silence; dead after 1.5 periods.
            period_ms = self.keepalive_s * 1000
            now = ticks_ms()
            if ticks_diff(now, self._last_rx) > period_ms * 3 // 2:
                raise MQTTError  # no PINGRESP or traffic: the link is dead
            if ticks_diff(now, self._last_tx) >= period_ms // 2:
                self.stats["pings"] += 1
                self._write(_PINGREQ)
            for pid, entry in list(self._pending.items()):
                if ticks_diff(now, entry[1]) >= self.ack_timeout_ms:
                    self._resend(pid, entry)
        except Exception:  # OSError, MQTTError, a broken packet: this session is over
            self.connected = False

    def _dispatch(self, head, length):
        kind = head & 0xF0
        if kind == _PUBLISH:
            # Read in parts, so the payload is its own bytes object (never a copy cut out of
            # the whole packet): each message costs the heap once.
            size = int.from_bytes(self._read(2), "big")
            topic = self._read(size)
            length -= 2 + size
            if head & 0x06:  # QoS 1: acknowledge
                pid = self._read(2)
                length -= 2
                self._write(bytes((_PUBACK, 2)) + pid)
            if length < 0:
                raise MQTTError  # malformed PUBLISH (only wait() reads these)
            payload = self._read(length) if length else b""
            self.stats["rx"] += 1
            if len(self.inbox) >= self.max_inbox:
                self.stats["dropped_rx"] += 1  # node behind: QoS cannot save a late bid
                return
            self.inbox.append((topic.decode(), payload))
            return
        body = self._read(length) if length else b""
        if kind == _PUBACK and len(body) >= 2:
            self._pending.pop(int.from_bytes(body[:2], "big"), None)
        elif kind == _SUBACK and len(body) >= 2 and int.from_bytes(body[:2], "big") == self._suback:
            self._suback = 0
        # PINGRESP and anything else: _last_rx was updated, nothing more to do

    def close(self, graceful=False):
        """Close the socket (with DISCONNECT if graceful: the broker then drops the will)."""
        sock = self._sock
        self._sock = None
        self.connected = False
        self._poller = None
        if sock is not None:
            try:
                if graceful:
                    sock.write(_DISCONNECT)
                sock.close()
            except Exception:
                pass
