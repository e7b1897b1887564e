"""Benchmark: the hub's CPU for one round of per-board market notices (every 2 s).

    .venv/bin/python -m hub.tools.bench.notices [--boards 1000] [--rounds 10] [--mqtt-url URL]

Prints one JSON line: CPU ms per round to sign every board's two notices (the hub's signer:
data encoded once per round, a key per board), the same with each notice encoded from scratch
(`encode_notice`), and, with --mqtt-url, CPU and wall ms per round to sign and publish them
retained at QoS 1 through the hub's MQTT client, PUBACKs included; the same for one round of
the hub's time notices (one per board, retained, QoS 0: hub/auctions/clock.py). Figures and
the decisions they support: firmware/README.md, "Market notices" and "The clock".
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import time
from typing import Any

from hub.auctions.clock import publish_time, time_notices
from hub.auctions.notices import NoticeSigner, publish_notices
from hub.buyers.bidding import Buyers
from hub.buyers.history import MarketHistory
from hub.transport.broker import parse_mqtt_url
from hub.transport.mqtt import MqttClient
from shared_etp.frame import NOTICE_CLEARING, NOTICE_REPUTATION, encode_notice, notice_key

__all__ = ["run"]

_ROOT = bytes(range(32))  # a notice root for the benchmark only


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class _BusyMarket(Buyers):
    """16 bidders' reputations and 20 clearing prices: what a busy site's notices carry."""

    def __init__(self) -> None:
        history = MarketHistory(window=20)
        for price_mc in range(20_000, 40_000, 1000):
            history.record_clearing(price_mc)
        super().__init__([], history)

    def reputation(self) -> dict[int, int]:
        return {100_000 + i: 5000 + 300 * i for i in range(16)}


async def _publish_rounds(
    url: str, boards: int, rounds: int, buyers: Buyers
) -> tuple[float, float, float, float]:
    host, port = parse_mqtt_url(url)
    client = MqttClient(host, port, "etp-bench-notices", lambda topic, payload: None)
    await client.connect()
    signer = NoticeSigner(_ROOT)
    try:
        cpu, wall = _cpu_s(), time.perf_counter()
        for _ in range(rounds):
            publish_notices(client, "bench", signer, buyers, range(1, boards + 1))
            await client.publish_wait("etp/v1/bench/bench-marker", b"x", 1)  # acks in order
        notices = ((_cpu_s() - cpu) / rounds * 1000, (time.perf_counter() - wall) / rounds * 1000)
        cpu, wall = _cpu_s(), time.perf_counter()
        for _ in range(rounds):
            publish_time(client, "bench", signer, range(1, boards + 1))
            await client.publish_wait("etp/v1/bench/bench-marker", b"x", 1)  # all sent
        times = ((_cpu_s() - cpu) / rounds * 1000, (time.perf_counter() - wall) / rounds * 1000)
        return notices + times
    finally:
        await client.disconnect()


def run(boards: int, rounds: int, mqtt_url: str | None) -> dict[str, Any]:
    """Measure and return the figures (see the module docstring)."""
    buyers = _BusyMarket()
    reputation, clearing = buyers.reputation(), buyers.history.recent_clearing_mc
    ids = range(1, boards + 1)
    signer = NoticeSigner(_ROOT)
    signer.sign(NOTICE_REPUTATION, reputation, ids, 1)  # keys derived once per board
    start = _cpu_s()
    for _ in range(rounds):
        signer.sign(NOTICE_REPUTATION, reputation, ids, 1)
        signer.sign(NOTICE_CLEARING, clearing, ids, 1)
    result: dict[str, Any] = {
        "boards": boards,
        "notices_per_round": 2 * boards,
        "sign_round_cpu_ms": round((_cpu_s() - start) / rounds * 1000, 2),
    }
    start = _cpu_s()
    for _ in range(rounds):
        time_notices(signer, ids)
    result["time_sign_round_cpu_ms"] = round((_cpu_s() - start) / rounds * 1000, 2)
    keys = {device: notice_key(_ROOT, device) for device in ids}
    start = _cpu_s()
    for _ in range(rounds):
        for device in ids:
            encode_notice(NOTICE_REPUTATION, reputation, 0, device, keys[device])
            encode_notice(NOTICE_CLEARING, clearing, 0, device, keys[device])
    result["encode_each_round_cpu_ms"] = round((_cpu_s() - start) / rounds * 1000, 2)
    if mqtt_url:
        cpu_ms, wall_ms, time_cpu_ms, time_wall_ms = asyncio.run(
            _publish_rounds(mqtt_url, boards, rounds, buyers)
        )
        result["publish_round_cpu_ms"] = round(cpu_ms, 2)
        result["publish_round_wall_ms"] = round(wall_ms, 2)
        result["time_publish_round_cpu_ms"] = round(time_cpu_ms, 2)
        result["time_publish_round_wall_ms"] = round(time_wall_ms, 2)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--boards", type=int, default=1000, help="boards to sign notices for")
    parser.add_argument("--rounds", type=int, default=10, help="rounds to average over")
    parser.add_argument("--mqtt-url", default=None, help="also publish them to this broker")
    args = parser.parse_args()
    print(json.dumps(run(args.boards, args.rounds, args.mqtt_url)))


if __name__ == "__main__":
    main()
