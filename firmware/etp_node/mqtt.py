"""A small MQTT 3.1.1 client for asyncio on MicroPython (and CPython): one write per packet.

Features the node needs and nothing more: CONNECT with last will and credentials, keepalive
pings (and a dead-link timeout), SUBSCRIBE, PUBLISH at QoS 0/1 with retransmission (DUP) of
unacknowledged QoS 1 packets, inbound QoS 0/1 with PUBACK, TLS where the port has it. The
caller reconnects with backoff when `lost` is set (node.py does). Every packet is built first
and written in ONE write, so Nagle's algorithm never splits it (see ARCHITECTURE.md).
"""

import asyncio

from shared_etp.compat import const, ticks_diff, ticks_ms

_CONNECT = const(0x10)
_CONNACK = const(0x20)
_PUBLISH = const(0x30)
_PUBACK = const(0x40)
_SUBSCRIBE = const(0x82)
_SUBACK = const(0x90)
_PINGREQ = b"\xc0\x00"
_PINGRESP = const(0xD0)
_DISCONNECT = b"\xe0\x00"
_MAX_PACKET = const(16384)


class MQTTError(Exception):
    """The broker refused or broke the session; the message says what to check."""


def parse_url(url):
    """(host, port, tls) from mqtt://host[:port] or mqtts://host[:port]."""
    tls = False
    if url.startswith("mqtts://"):
        tls = True
        rest = url[8:]
    elif url.startswith("mqtt://"):
        rest = url[7:]
    else:
        raise MQTTError("broker URL %r must start with mqtt:// or mqtts://" % url)
    rest = rest.split("/")[0]
    if ":" in rest:
        host, port = rest.rsplit(":", 1)
        return host, int(port), tls
    return rest, 8883 if tls else 1883, tls


def _length(n):
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _text(value):
    if isinstance(value, str):
        value = value.encode()
    return len(value).to_bytes(2, "big") + value


def connect_packet(client_id, keepalive_s, clean=True, will=None, user=None, password=None):
    """CONNECT bytes; will is (topic, payload, qos, retain) or None."""
    flags = 0x02 if clean else 0
    payload = _text(client_id)
    if will is not None:
        topic, message, qos, retain = will
        flags |= 0x04 | (qos << 3) | (0x20 if retain else 0)
        payload += _text(topic) + _text(message)
    if user:
        flags |= 0x80
        payload += _text(user)
        if password:
            flags |= 0x40
            payload += _text(password)
    body = b"\x00\x04MQTT\x04" + bytes((flags,)) + keepalive_s.to_bytes(2, "big") + payload
    return bytes((_CONNECT,)) + _length(len(body)) + body


def publish_packet(topic, payload, qos=0, retain=False, pid=0, dup=False):
    """PUBLISH bytes (pid only for QoS 1)."""
    head = _PUBLISH | (0x08 if dup else 0) | (qos << 1) | (1 if retain else 0)
    body = _text(topic)
    if qos:
        body += pid.to_bytes(2, "big")
    body += payload
    return bytes((head,)) + _length(len(body)) + body


def subscribe_packet(pid, topics, qos=1):
    """SUBSCRIBE bytes for a list of topic filters."""
    body = pid.to_bytes(2, "big")
    for topic in topics:
        body += _text(topic) + bytes((qos,))
    return bytes((_SUBSCRIBE,)) + _length(len(body)) + body


def ca_der(data):
    """DER bytes of a CA certificate given as DER or PEM (the port's TLS takes DER only)."""
    if data.startswith(b"-----BEGIN"):
        from binascii import a2b_base64

        body = [line.strip() for line in data.split(b"\n")]
        return a2b_base64(b"".join(line for line in body if line and not line.startswith(b"-")))
    return data


def _no_delay(stream):
    """Turn off Nagle (IPPROTO_TCP=6, TCP_NODELAY=1 on Linux and lwIP): a PUBACK followed at
    once by a reply must not wait for the broker's delayed ACK (40 ms)."""
    sock = getattr(stream, "s", None)  # MicroPython's asyncio Stream
    if sock is None and hasattr(stream, "get_extra_info"):
        sock = stream.get_extra_info("socket")
    try:
        sock.setsockopt(6, 1, 1)
    except Exception:
        pass  # ports without the option still work, just slower on back-to-back packets


class MQTTClient:
    """One broker session. Received messages land in `inbox` and set `received`."""

    def __init__(self, client_id, host, port=1883, keepalive_s=30, user=None, password=None,
                 will=None, tls=False, ack_timeout_ms=2000, clean=True, ca_file=None):
        self.client_id = client_id
        self.host = host
        self.port = port
        self.keepalive_s = keepalive_s
        self.user = user
        self.password = password
        self.will = will
        self.tls = tls
        self.ca_file = ca_file
        self.ack_timeout_ms = ack_timeout_ms
        self.clean = clean
        self.inbox = []  # (topic, payload) in arrival order
        self.received = asyncio.Event()
        self.lost = asyncio.Event()
        self.connected = False
        self.stats = {"tx": 0, "rx": 0, "retransmits": 0, "pings": 0, "dropped_rx": 0}
        self.max_inbox = 64
        self._pid = 0
        self._pending = {}  # pid -> [packet, last sent ticks, tries]
        self._suback = {}
        self._reader = None
        self._writer = None
        self._tasks = []
        self._last_rx = 0
        self._last_tx = 0

    async def _write(self, packet):
        if self._writer is None:
            raise MQTTError("not connected to %s:%d" % (self.host, self.port))
        # No lock: write() queues the whole packet at once, so concurrent writers never split
        # one (and asyncio.Lock would cost heap).
        self._writer.write(packet)
        await self._writer.drain()
        self._last_tx = ticks_ms()
        self.stats["tx"] += 1

    async def _read_packet(self):
        reader = self._reader
        head = (await reader.readexactly(1))[0]
        length = 0
        shift = 0
        while True:
            byte = (await reader.readexactly(1))[0]
            length |= (byte & 0x7F) << shift
            if not byte & 0x80:
                break
            shift += 7
            if shift > 21:
                raise MQTTError("malformed remaining length from broker")
        if length > _MAX_PACKET:
            raise MQTTError("broker sent a %d-byte packet, limit %d" % (length, _MAX_PACKET))
        body = await reader.readexactly(length) if length else b""
        self._last_rx = ticks_ms()
        return head, body

    async def connect(self, timeout_s=10):
        """Open the connection and wait for CONNACK; starts the reader and keepalive tasks."""
        await self.close()
        self.lost = asyncio.Event()
        if self.tls:
            import ssl

            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            if self.ca_file:
                context.verify_mode = ssl.CERT_REQUIRED
                with open(self.ca_file, "rb") as handle:
                    context.load_verify_locations(cadata=ca_der(handle.read()))
            else:
                context.verify_mode = ssl.CERT_NONE  # encrypted, broker not authenticated
            opener = asyncio.open_connection(self.host, self.port, ssl=context,
                                             server_hostname=self.host)
        else:
            opener = asyncio.open_connection(self.host, self.port)
        self._reader, self._writer = await asyncio.wait_for(opener, timeout_s)
        _no_delay(self._writer)
        await self._write(connect_packet(self.client_id, self.keepalive_s, self.clean, self.will,
                                         self.user, self.password))
        head, body = await asyncio.wait_for(self._read_packet(), timeout_s)
        if head != _CONNACK or len(body) != 2:
            raise MQTTError("broker answered CONNECT with packet 0x%02x, not CONNACK" % head)
        if body[1]:
            raise MQTTError("broker refused the connection, return code %d "
                            "(4/5: check mqtt_user/mqtt_password)" % body[1])
        self.connected = True
        self._tasks = [asyncio.create_task(self._read_loop()),
                       asyncio.create_task(self._keepalive_loop())]
        for pid, entry in list(self._pending.items()):  # unacked QoS 1 from the last session
            await self._resend(pid, entry)

    async def subscribe(self, topics, qos=1, timeout_s=5):
        """Subscribe to topic filters and wait for the SUBACK."""
        pid = self._pid = self._pid % 65535 + 1
        event = asyncio.Event()
        self._suback[pid] = event
        await self._write(subscribe_packet(pid, topics, qos))
        try:
            await asyncio.wait_for(event.wait(), timeout_s)
        finally:
            self._suback.pop(pid, None)

    async def publish(self, topic, payload, qos=0, retain=False):
        """Publish; QoS 1 packets are kept and resent (DUP) until the broker acknowledges."""
        if qos:
            pid = self._pid = self._pid % 65535 + 1
            packet = publish_packet(topic, payload, 1, retain, pid)
            self._pending[pid] = [packet, ticks_ms(), 1]
        else:
            packet = publish_packet(topic, payload, 0, retain)
        await self._write(packet)

    async def _resend(self, pid, entry):
        packet = bytearray(entry[0])
        packet[0] |= 0x08  # DUP
        entry[0] = bytes(packet)
        entry[1] = ticks_ms()
        entry[2] += 1
        self.stats["retransmits"] += 1
        await self._write(entry[0])

    async def _read_loop(self):
        try:
            while True:
                head, body = await self._read_packet()
                kind = head & 0xF0
                if kind == _PUBLISH:
                    qos = (head >> 1) & 0x03
                    size = int.from_bytes(body[:2], "big")
                    topic = bytes(body[2 : 2 + size]).decode()
                    offset = 2 + size
                    if qos:
                        pid = body[offset : offset + 2]
                        offset += 2
                        await self._write(bytes((_PUBACK, 2)) + bytes(pid))
                    self.stats["rx"] += 1
                    if len(self.inbox) >= self.max_inbox:
                        self.stats["dropped_rx"] += 1  # node behind: QoS cannot save a late bid
                        continue
                    self.inbox.append((topic, bytes(body[offset:])))
                    self.received.set()
                elif kind == _PUBACK and len(body) >= 2:
                    self._pending.pop(int.from_bytes(body[:2], "big"), None)
                elif kind == _SUBACK and len(body) >= 2:
                    event = self._suback.get(int.from_bytes(body[:2], "big"))
                    if event is not None:
                        event.set()
                # PINGRESP and anything else: _last_rx was updated, nothing more to do
        except Exception:
            pass
        self._set_lost()

    async def _keepalive_loop(self):
        period_ms = self.keepalive_s * 1000
        try:
            while True:
                await asyncio.sleep(0.25)
                now = ticks_ms()
                if ticks_diff(now, self._last_rx) > period_ms * 3 // 2:
                    break  # no PINGRESP or traffic: the link is dead
                if ticks_diff(now, self._last_tx) >= period_ms // 2:
                    self.stats["pings"] += 1
                    await self._write(_PINGREQ)
                for pid, entry in list(self._pending.items()):
                    if ticks_diff(now, entry[1]) >= self.ack_timeout_ms:
                        await self._resend(pid, entry)
        except Exception:
            pass
        self._set_lost()

    def _set_lost(self):
        self.connected = False
        self.lost.set()
        self.received.set()  # wake the consumer so it notices

    async def close(self, graceful=False):
        """Close the socket (with DISCONNECT if graceful: the broker then drops the will)."""
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:
                task.cancel()
        self._tasks = []
        writer = self._writer
        self._writer = None
        self.connected = False
        if writer is not None:
            try:
                if graceful:
                    writer.write(_DISCONNECT)
                    await writer.drain()
                writer.close()
                await writer.wait_closed()
            except Exception:
                pass
