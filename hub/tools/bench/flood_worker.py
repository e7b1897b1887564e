"""The flooding client of `etp bench flood`, in its own process (so its work does not slow the
hub or the well-behaved batteries it is measured against).

It owns one device id (its key derived from the site's master secret, as a board's is) and
publishes on that device's own status and response topics only, as the site's broker ACL lets
a board do, at a fixed rate, cycling through:

- `valid`: a fresh, correctly signed BESSStatus of its own device (a board gone berserk);
- `bad_tag`: the same with one byte of its tag flipped;
- `oversized`: 600 random bytes (over the protocol's 512);
- `garbage`: 80 random bytes;
- `replayed`: its first valid frame, again and again;
- `other_device`: a well-formed frame claiming another battery's id, signed with its own key.

Prints one JSON line at the end: frames sent by kind, elapsed seconds.

    python -m hub.tools.bench.flood_worker --mqtt-url mqtt://127.0.0.1:1883 --site site1 \
        --master-file DATA/master.key --device 21 --victim 1 --rate 800 --duration 15
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path

from firmware.etp_node.core import NodeCore
from hub.settings import load_master_secret
from hub.tools.sim import SimConfig, SimFleet
from hub.transport.broker import parse_mqtt_url
from hub.transport.mqtt import MqttClient
from shared_etp.frame import derive_key
from shared_etp.topics import RESPONSE, STATUS, device_topic

__all__ = ["KINDS", "main"]

KINDS = ("valid", "bad_tag", "oversized", "garbage", "replayed", "other_device")


def _core_frames(
    master: bytes, site: str, device_id: int, victim_id: int
) -> tuple[NodeCore, NodeCore]:
    """Signed-frame makers: the flooder's own battery core, and a core claiming the victim's
    id that signs with the flooder's key (it has no other)."""
    own = SimFleet(
        SimConfig(
            mqtt_url="mqtt://127.0.0.1:1",
            site=site,
            master_secret=master,
            count=1,
            first_device_id=device_id,
        )
    )
    claimed = SimFleet(
        SimConfig(
            mqtt_url="mqtt://127.0.0.1:1",
            site=site,
            master_secret=master,
            count=1,
            first_device_id=victim_id,
            overrides={"key": derive_key(master, device_id)},
        )
    )
    return own.cores[device_id], claimed.cores[victim_id]


async def flood(args: argparse.Namespace) -> dict[str, object]:
    """Publish at `args.rate` frames/s for `args.duration` s; returns what was sent."""
    master = load_master_secret(Path(args.master_file))
    own, claimed = _core_frames(master, args.site, args.device, args.victim)
    host, port = parse_mqtt_url(args.mqtt_url)
    client = MqttClient(host, port, f"etp-flooder-{args.device}", lambda _t, _p: None)
    await client.connect()
    topics = (
        device_topic(args.site, args.device, STATUS),
        device_topic(args.site, args.device, RESPONSE),
    )
    first_valid = own.status()[1]
    sent: Counter[str] = Counter()
    started = time.monotonic()
    total = 0
    while True:
        elapsed = time.monotonic() - started
        if elapsed >= args.duration:
            break
        due = int(elapsed * args.rate) - total
        for _ in range(max(0, due)):
            kind = KINDS[total % len(KINDS)]
            if kind == "valid":
                frame = own.status()[1]
            elif kind == "bad_tag":
                fresh = bytearray(own.status()[1])
                fresh[-1] ^= 0x5A
                frame = bytes(fresh)
            elif kind == "oversized":
                frame = os.urandom(600)
            elif kind == "garbage":
                frame = os.urandom(80)
            elif kind == "replayed":
                frame = first_valid
            else:
                frame = claimed.status()[1]
            client.publish(topics[total % 2 if kind != "valid" else 0], frame, 0)
            sent[kind] += 1
            total += 1
        await asyncio.sleep(0.005)
    elapsed = time.monotonic() - started
    await client.disconnect()
    return {
        "sent": total,
        "by_kind": dict(sent),
        "elapsed_s": round(elapsed, 2),
        "rate_per_s": round(total / elapsed, 1),
    }


def main(argv: list[str] | None = None) -> int:
    """Command line entry (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mqtt-url", required=True)
    parser.add_argument("--site", required=True)
    parser.add_argument("--master-file", required=True, help="the site's master secret file")
    parser.add_argument("--device", type=int, required=True, help="the device id it owns")
    parser.add_argument("--victim", type=int, required=True, help="the id its forgeries claim")
    parser.add_argument("--rate", type=float, required=True, help="frames per second")
    parser.add_argument("--duration", type=float, required=True, help="seconds")
    args = parser.parse_args(argv)
    result = asyncio.run(flood(args))
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
