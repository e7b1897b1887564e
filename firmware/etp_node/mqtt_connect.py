"""MQTT session setup: CONNECT and SUBSCRIBE packets, CONNACK and SUBACK.

Loaded by mqtt.MQTTClient only while it connects or subscribes (once the socket is open:
mqtt_link.py), and dropped after (firmware.etp_node.unload): between reconnects its code does
not sit in the board's heap.
"""

from firmware.etp_node.mqtt import MQTTError, packet, text

# Few module globals (the rest imported where used, packet types spelled as numbers): at most
# 11 names keep this module's name table one 176-byte block; it loads after the TLS handshake,
# into a heap with few larger holes.


def connect_packet(client_id, keepalive_s, clean=True, will=None, user=None, password=None):
    """CONNECT bytes; will is (topic, payload, qos, retain) or None."""
    flags = 0x02 if clean else 0
    payload = text(client_id)
    if will is not None:
        topic, message, qos, retain = will
        flags |= 0x04 | (qos << 3) | (0x20 if retain else 0)
        payload += text(topic) + text(message)
    if user:
        flags |= 0x80
        payload += text(user)
        if password:
            flags |= 0x40
            payload += text(password)
    return packet(0x10, b"\x00\x04MQTT\x04" + bytes((flags,))  # CONNECT
                  + keepalive_s.to_bytes(2, "big") + payload)


def subscribe_packet(pid, topics, qos=1):
    """SUBSCRIBE bytes for a list of topic filters."""
    body = pid.to_bytes(2, "big")
    for topic in topics:
        body += text(topic) + bytes((qos,))
    return packet(0x82, body)  # SUBSCRIBE


def connect(client):
    """CONNECT on the client's open socket, wait for CONNACK; resend unacknowledged QoS 1."""
    client._write(connect_packet(client.client_id, client.keepalive_s, client.clean,
                                 client.will, client.user, client.password))
    try:
        head, length = client._read_packet()
        body = client._read(length) if length else b""
    except OSError as exc:
        raise MQTTError("no CONNACK from the broker: %s" % exc) from None
    if head != 0x20 or len(body) != 2:  # CONNACK
        raise MQTTError("broker answered CONNECT with packet 0x%02x, not CONNACK" % head)
    if body[1]:
        raise MQTTError("broker refused the connection, return code %d "
                        "(4/5: check mqtt_user/mqtt_password)" % body[1])
    import select

    client._poller = select.poll()
    client._poller.register(client._sock, 1)  # select.POLLIN
    client.connected = True
    for pid, entry in list(client._pending.items()):  # unacked QoS 1 from the last session
        client._resend(pid, entry)


def subscribe(client, topics, qos, timeout_ms):
    """Subscribe to topic filters and wait for the SUBACK (messages meanwhile are kept)."""
    from shared_etp.compat import ticks_diff, ticks_ms

    pid = client._pid = client._pid % 65535 + 1
    client._suback = pid
    client._write(subscribe_packet(pid, topics, qos))
    start = ticks_ms()
    while client._suback:
        if not client.connected:
            raise MQTTError("link lost while subscribing")
        if ticks_diff(ticks_ms(), start) > timeout_ms:
            raise MQTTError("no SUBACK from the broker in %d ms" % timeout_ms)
        client.wait(50)
