"""Audit log, battery model and MQTT packet bytes under MicroPython."""

import io
import select
import time

from mptest import collect, run, tmp_dir

from firmware.etp_node import mqtt, mqtt_connect, tls_setup
from firmware.etp_node.audit import AuditLog, encode_record
from firmware.etp_node.audit_dump import parse_log, read_all
from firmware.etp_node.battery import SimBattery, cell_ocv_mv
from firmware.etp_node.boot import parse_url
from shared_etp import schema as S


def test_audit_roundtrip_and_torn_tail_skipped():
    path = tmp_dir("audit-torn")
    log = AuditLog(path, 100000, 3)
    for i in range(5):
        log.append({"k": "bid", "i": i})
    head, text = encode_record({"k": "trade", "i": 99})
    line = (head + text).encode() + b"\n"
    with open(path + "/audit.0", "ab") as handle:  # power lost mid-write
        handle.write(line[: len(line) // 2])
    AuditLog(path, 100000, 3)
    records, torn = read_all(path, 3)
    assert [r["i"] for r in records] == [0, 1, 2, 3, 4] and torn == 1
    log = AuditLog(path, 100000, 3)  # reboot: the torn line is ended, appends stay clean
    log.append({"k": "bid", "i": 5})
    records, torn = read_all(path, 3)
    assert [r["i"] for r in records] == [0, 1, 2, 3, 4, 5] and torn == 1
    assert [r["n"] for r in records] == [0, 1, 2, 3, 4, 5]


def test_audit_checksum_detects_corruption():
    head, text = encode_record({"k": "bid", "p": 25000})
    good = (head + text).encode() + b"\n"
    bad = good.replace(b"25000", b"95000")
    records, torn = parse_log(good + bad + good)
    assert len(records) == 2 and torn == 1


def test_audit_rotation_is_bounded():
    path = tmp_dir("audit-rotate")
    log = AuditLog(path, 1000, 3)
    for i in range(200):
        log.append({"k": "bid", "i": i})
    import os

    names = sorted(os.listdir(path))
    assert names == ["audit.0", "audit.1", "audit.2"], names
    total = sum(os.stat(path + "/" + n)[6] for n in names)
    assert total <= 3000
    records, torn = read_all(path, 3)
    assert torn == 0 and records[-1]["i"] == 199
    assert [r["i"] for r in records] == list(range(records[0]["i"], 200))
    AuditLog(path, 1000, 3).append({"k": "boot"})  # reboot: numbering goes on from the tail
    records, torn = read_all(path, 3)
    assert records[-1]["n"] == records[-2]["n"] + 1 == 200 and torn == 0


def test_ocv_curve_monotonic_and_ir_drop():
    last = 0
    for soc in range(0, 10001, 250):
        mv = cell_ocv_mv(soc)
        assert mv >= last
        last = mv
    battery = SimBattery(10000, 8000, 14)
    resting = battery.voltage_mv()
    battery.deliver(2000, 600)  # 12 kW
    assert battery.discharge_w() == 12000
    assert battery.voltage_mv() < resting
    battery.step(10 ** 12)
    assert battery.discharge_w() == 0


def test_charger_refills_up_to_capacity():
    battery = SimBattery(10000, 5000, 14, 2800, 4250, 3600)  # 3.6 kW charger
    battery.step(1000)
    assert battery.discharge_w() == -3600  # charging shows as negative discharge
    battery.step(1000 + 1000 * 1000)  # 1000 s at 3.6 kW = 1000 Wh
    assert battery.remaining_wh() == 5000 + 1000
    battery.step(1000 + 9000 * 1000)  # long enough to fill: stops at capacity
    assert battery.remaining_wh() == 10000 and battery.discharge_w() == 0
    plain = SimBattery(10000, 5000)
    plain.step(1000)
    plain.step(10 ** 9)
    assert plain.remaining_wh() == 5000  # no charger, no energy from nowhere


def test_faults_and_degradation():
    battery = SimBattery(10000, 5000)
    assert battery.health() == S.HEALTH_OK and battery.fault() == 0
    battery.inject_fault("overtemp")
    assert battery.fault() == S.REASON_OVER_TEMPERATURE
    battery.inject_fault("overvolt")
    assert battery.fault() == S.REASON_VOLTAGE_OUT_OF_RANGE
    battery.inject_fault("clear")
    battery.capacity_wh = 7000  # a worn pack: 70 % state of health
    assert battery.health() == S.HEALTH_DEGRADED and battery.capacity_wh == 7000
    empty = SimBattery(10000, 0)
    assert empty.fault() == 0  # an empty pack rests at 3.0 V per cell, inside the 2.8 V limit
    empty.deliver(0, 1)
    assert empty.remaining_wh() == 0


def test_mqtt_packets_exact_bytes():
    plain = mqtt_connect.connect_packet("c1", 30)
    assert plain == b"\x10\x0e\x00\x04MQTT\x04\x02\x00\x1e\x00\x02c1"
    will = mqtt_connect.connect_packet("c", 60, True, ("t/d", b"x", 1, False))
    assert will == b"\x10\x15\x00\x04MQTT\x04\x0e\x00<\x00\x01c\x00\x03t/d\x00\x01x"
    assert mqtt.packet(0x33, b"\x00\x03a/b\x00\x05", b"hi") == b"\x33\x09\x00\x03a/b\x00\x05hi"
    assert mqtt.packet(0x30, b"\x00\x01a") == b"\x30\x03\x00\x01a"
    assert mqtt.packet(0x30, b"\x00\x01a", bytearray(b"hi"), True) == b"\x30\x05\x00\x01a"
    assert mqtt_connect.subscribe_packet(1, ["x/#"]) == b"\x82\x08\x00\x01\x00\x03x/#\x01"
    big = mqtt.packet(0x30, b"\x00\x01t", b"z" * 200)
    assert big[:3] == b"\x30\xcb\x01"  # two-byte remaining length
    huge = mqtt.packet(0x32, b"\x00\x01t\x00\x07", bytes(20000))
    assert huge[:4] == b"\x32\xa5\x9c\x01" and len(huge) == 4 + 20005  # three bytes
    assert huge[4:9] == b"\x00\x01t\x00\x07" and huge[-1] == 0
    assert parse_url("mqtt://10.0.0.2:1884") == ("10.0.0.2", 1884, False)
    assert parse_url("mqtts://broker") == ("broker", 8883, True)


def test_ca_certificate_pem_to_der():
    pem = b"-----BEGIN CERTIFICATE-----\r\nAAEC\r\nAwQ=\r\n-----END CERTIFICATE-----\r\n"
    assert tls_setup.ca_der(pem) == b"\x00\x01\x02\x03\x04"
    assert tls_setup.ca_der(b"\x30\x82") == b"\x30\x82"


class FakeSocket(io.IOBase):
    """A socket stand-in: records each write, serves scripted reads, pollable (ioctl)."""

    def __init__(self, incoming):
        self.incoming = bytearray(incoming)
        self.writes = []

    def write(self, data):
        self.writes.append(bytes(data))
        return len(data)

    def read(self, n):
        out = bytes(self.incoming[:n])
        self.incoming = self.incoming[n:]
        return out

    def ioctl(self, request, arg):
        if request == 3:  # MP_STREAM_POLL: readable when bytes are waiting
            return arg & select.POLLIN if self.incoming else 0
        return -1  # no file descriptor: select.poll asks through MP_STREAM_POLL

    def close(self):
        pass


def connected_client(stream, **kwargs):
    client = mqtt.MQTTClient("c", "h", **kwargs)
    client.opener = lambda _client: stream
    client.connect()
    return client


def test_mqtt_client_one_write_per_packet_puback_and_retransmit():
    stream = FakeSocket(b"\x20\x02\x00\x00")  # CONNACK accepted
    client = connected_client(stream, keepalive_s=60, ack_timeout_ms=100)
    assert stream.writes[0][0] == 0x10 and client.connected
    client.publish("t", b"p", 1)
    assert stream.writes[-1] == b"\x32\x06\x00\x01t\x00\x01p"
    client.wait(150)  # no PUBACK: resent with DUP
    assert stream.writes[-1] == b"\x3a\x06\x00\x01t\x00\x01p", stream.writes
    assert client.stats["retransmits"] >= 1
    stream.incoming += b"\x40\x02\x00\x01"  # PUBACK
    stream.incoming += b"\x32\x08\x00\x03a/b\x00\x09!"  # inbound QoS 1
    client.wait(100)
    assert not client._pending  # every QoS 1 publish acknowledged
    assert client.inbox == [("a/b", b"!")]
    assert b"\x40\x02\x00\x09" in stream.writes
    assert client.connected
    client.close()
    assert not client.connected


def test_mqtt_client_publishes_a_frame_without_copying_it():
    """Without the room for a packet with a copy of the frame: its head, then the frame."""
    stream = FakeSocket(b"\x20\x02\x00\x00")
    client = connected_client(stream, keepalive_s=60, ack_timeout_ms=100)
    frame = bytearray(b"frame")
    real = mqtt.packet

    def short_of_memory(head, body, payload=b"", apart=False):
        if not apart:
            raise MemoryError
        return real(head, body, payload, apart)

    mqtt.packet = short_of_memory
    try:
        client.publish("t", frame, 1)
    finally:
        mqtt.packet = real
    assert stream.writes[-2:] == [b"\x32\x0a\x00\x01t\x00\x01", b"frame"], stream.writes
    assert frame == b"frame"
    client.wait(150)  # no PUBACK: head and frame again, the head marked DUP
    assert stream.writes[-2:] == [b"\x3a\x0a\x00\x01t\x00\x01", b"frame"], stream.writes
    assert client.stats["tx"] == 3  # CONNECT, the PUBLISH, its resend
    client.close()


def test_mqtt_client_subscribe_waits_for_suback_and_keeps_messages():
    stream = FakeSocket(b"\x20\x02\x00\x00")
    client = connected_client(stream, keepalive_s=60)
    stream.incoming += b"\x30\x05\x00\x01xhi"  # a retained message before the SUBACK
    stream.incoming += b"\x90\x03\x00\x01\x01"
    mqtt_connect.subscribe(client, ["x/#"], 1, 5000)
    assert stream.writes[-1] == b"\x82\x08\x00\x01\x00\x03x/#\x01"
    assert client.inbox == [("x", b"hi")]
    silent = connected_client(FakeSocket(b"\x20\x02\x00\x00"), keepalive_s=60)
    try:
        mqtt_connect.subscribe(silent, ["x/#"], 1, 200)
        raise AssertionError("subscribe returned without a SUBACK")
    except mqtt.MQTTError:
        pass


def test_mqtt_client_refused_and_closed_connections():
    stream = FakeSocket(b"\x20\x02\x00\x05")  # not authorized
    try:
        connected_client(stream)
        raise AssertionError("a refused CONNECT was accepted")
    except mqtt.MQTTError as exc:
        assert "mqtt_user" in str(exc)
    stream = FakeSocket(b"\x20\x02\x00\x00")
    client = connected_client(stream, keepalive_s=60)
    stream.incoming += b"\x30"  # a packet cut short: the broker went away mid-packet
    client.wait(50)
    assert not client.connected


def test_mqtt_client_pings_and_notices_a_dead_link():
    stream = FakeSocket(b"\x20\x02\x00\x00")
    client = connected_client(stream, keepalive_s=1)
    deadline = time.ticks_add(time.ticks_ms(), 800)
    while time.ticks_diff(deadline, time.ticks_ms()) > 0:
        client.wait(50)
    assert b"\xc0\x00" in stream.writes  # PINGREQ after keepalive/2 of silence
    assert client.connected
    deadline = time.ticks_add(time.ticks_ms(), 1200)
    while time.ticks_diff(deadline, time.ticks_ms()) > 0:
        client.wait(50)  # no PINGRESP for 1.5 x keepalive: the link is dead
    assert not client.connected
    client.close()


run(collect(globals()))
