"""`etp bench firmware`: heap use and per-message handling time of the node on the unix port."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from hub.tools.firmware.binaries import micropython_binary
from hub.tools.firmware.build import REPO_ROOT, build, install_image
from shared_etp import schema as S
from shared_etp.frame import Sender, derive_key, derive_notice_key

BENCH_SCRIPT = REPO_ROOT / "firmware" / "bench_node.py"
MASTER = b"bench-master-secret-0123456789"
DEVICE = 1


class BenchError(RuntimeError):
    """The benchmark run on MicroPython failed; the message has its output."""


@dataclass
class BenchConfig:
    """How much traffic, which heap, which build."""

    rounds: int = 300
    heap: str = "80K"
    use_mpy: bool = True


def make_traffic(rounds: int) -> bytes:
    """Per round: a Query, a Bid (accepted), a lower Bid (outbid), a BidConfirm (trade)."""
    key = derive_key(MASTER, DEVICE)
    hub = Sender(0, DEVICE, key, 1)
    bidders = [Sender(1001 + i, DEVICE, key, 1) for i in range(4)]
    out = bytearray()

    def add(sender: Sender, msg_type: int, **fields: int) -> None:
        frame, _ = sender.frame(msg_type, dst=DEVICE, **fields)
        out.extend(bytes((msg_type,)) + len(frame).to_bytes(2, "big") + frame)

    for auction in range(1, rounds + 1):
        best = bidders[auction % 4]
        other = bidders[(auction + 1) % 4]
        add(hub, S.QUERY, auc=auction)
        add(best, S.BID, auc=auction, price=30000, ereq=10)
        add(other, S.BID, auc=auction, price=29000, ereq=10)
        add(best, S.BID_CONFIRM, auc=auction, price=30000, ereq=10)
    return bytes(out)


def run_bench(cfg: BenchConfig) -> dict:
    """Run the node core over generated traffic on MicroPython; return the measurements."""
    image = build(None, cfg.use_mpy)
    with tempfile.TemporaryDirectory(prefix="etp-bench-fw-") as tmp:
        tmp_path = Path(tmp)
        frames = tmp_path / "frames.bin"
        frames.write_bytes(make_traffic(cfg.rounds))
        config = {
            "device_id": DEVICE,
            "site": "bench",
            "key": derive_key(MASTER, DEVICE).hex(),
            "notice_key": derive_notice_key(MASTER, DEVICE).hex(),
            "reserve_mc": 20000,
            "pct_for_sale": 10000,
            "floor_wh": 0,
            "dynamic_reserve": True,
            "hold_timeout_ms": 3000,
            "min_reputation": 2000,
            "capacity_wh": 10_000_000,
        }
        (tmp_path / "config.json").write_text(json.dumps(config))
        # Laid out like a board's flash: the image and the script in one directory.
        flash = tmp_path / "flash"
        install_image(image, flash)
        shutil.copyfile(BENCH_SCRIPT, flash / BENCH_SCRIPT.name)
        started = time.perf_counter()
        result = subprocess.run(
            [
                micropython_binary(),
                "-X",
                f"heapsize={cfg.heap}",
                BENCH_SCRIPT.name,
                str(frames),
                str(tmp_path / "config.json"),
                str(tmp_path / "audit"),
                str(cfg.rounds * 2),
            ],
            capture_output=True,
            text=True,
            timeout=600,
            cwd=flash,
        )
        wall_s = time.perf_counter() - started
    if result.returncode != 0 or not result.stdout.strip():
        raise BenchError(
            f"bench on MicroPython failed (heap {cfg.heap}): "
            f"{(result.stdout + result.stderr).strip()[-800:]}"
        )
    data = json.loads(result.stdout.strip().splitlines()[-1])
    data["heap_limit"] = cfg.heap
    data["messages"] = cfg.rounds * 4
    data["wall_s"] = round(wall_s, 3)
    data["build"] = "mpy" if cfg.use_mpy else "py"
    return data


def boots_in(heap: str, use_mpy: bool = True) -> bool:
    """Whether the whole node (every module it runs with) imports within this heap."""
    image = build(None, use_mpy)
    # What stays loaded while the node runs (boot.py drops its config module before these load).
    code = (
        "import firmware.etp_node.battery; "
        "import firmware.etp_node.audit; import firmware.etp_node.node; import gc; "
        "gc.collect(); print('ok', gc.mem_alloc())"
    )
    result = subprocess.run(
        [micropython_binary(), "-X", f"heapsize={heap}", "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=image,
    )
    return result.returncode == 0 and result.stdout.startswith("ok")


def min_boot_heap_k(low_k: int = 48, high_k: int = 256, step_k: int = 4) -> int | None:
    """Smallest heap (KiB, in step_k steps) in which every node module loads; None if > high."""
    if not boots_in(f"{high_k}K"):
        return None
    while high_k - low_k > step_k:
        middle = (low_k + high_k) // 2 // step_k * step_k
        if boots_in(f"{middle}K"):
            high_k = middle
        else:
            low_k = middle
    return high_k


def table(data: dict) -> str:
    """Human-readable table of a run_bench result."""
    names = {str(t): S.TYPE_NAMES[t] for t in range(len(S.TYPE_NAMES))}
    lines = [
        f"firmware bench on MicroPython unix port ({data['build']}, "
        f"heap limit {data['heap_limit']})",
        f"  code loaded (all node modules) : {data['heap_code_bytes']:>8} bytes",
        f"  live after traffic             : {data['heap_live_after_bytes']:>8} bytes",
        f"  boots in 64K heap              : {data.get('boots_in_64k')}",
        f"  smallest heap that loads it    : {data.get('min_boot_heap_k')}K",
        f"  messages                       : {data['messages']:>8}  (wall {data['wall_s']} s)",
        "  per-message handling time (us): type           n   median      p99      max",
    ]
    for kind, row in sorted(data["times_us"].items()):
        label = names.get(kind, kind)
        lines.append(
            f"    {label:<28} {row['n']:>5} {row['median']:>8} {row['p99']:>8} {row['max']:>8}"
        )
    if data.get("round_trip_error"):
        lines.append(f"  trading round trips FAILED: {data['round_trip_error'][:300]}")
    trip = data.get("round_trip")
    if trip:
        lines.append(
            f"  trading round trips via {trip['broker']} to a board at heap "
            f"{data['heap_limit']} (ms): n {trip['n']}, unanswered {trip['unanswered'] or 0},"
            f" wrong answers {trip['wrong_answers'] or 0}"
        )
        for name, row in trip["times_ms"].items():
            lines.append(
                f"    {name:<28} {row['n']:>5} {row['median']:>8} {row['p99']:>8} {row['max']:>8}"
            )
        board = trip.get("board")
        if board:
            lines.append(
                f"    board after them: handled {board['handled']}, trades {board['trades']},"
                f" dropped {board['dropped'] or 0},"
                f" protocol errors {board['protocol_errors'] or 0},"
                f" heap {board['heap_alloc']} used / {board['heap_free']} free"
            )
        else:
            lines.append("    board stats: none printed in time")
    stats = data["stats"]
    lines.append(
        f"  accepted {stats['accepted']}  rejected {stats['rejected']}  trades "
        f"{stats['trades']}  protocol errors {stats['protocol_errors']}"
    )
    if stats.get("dropped"):  # e.g. internal:MemoryError when the heap is too small
        lines.append(f"  dropped {stats['dropped']}")
    return "\n".join(lines)


# Request types of a trading round through the broker, in order: what each should be answered with.
_ROUND = (
    ("query", S.QUERY, S.QUERY_RESPONSE),
    ("bid", S.BID, S.BID_ACCEPT),
    ("outbid", S.BID, S.BID_REJECT),
    ("bid_confirm", S.BID_CONFIRM, S.BID_ACCEPT),
)


def _last_stats(console: Path) -> dict | None:
    """The newest `stats` line the board printed (its counters and heap), or None."""
    for line in reversed(console.read_text(errors="replace").splitlines()):
        if '"ev": "stats"' in line:
            try:
                return json.loads(line)
            except ValueError:
                continue
    return None


async def trading_round_trips(
    url: str,
    count: int,
    heap: str,
    data_dir: Path,
    peer_url: str | None = None,
    board_config: dict | None = None,
) -> dict:
    """Start one simulated board (the deployed node: main.py, .mpy, `heap`) on url and trade
    with it: `count` request/reply round trips in auction rounds of Query, Bid, a lower Bid
    (outbid) and BidConfirm, each waiting for its reply. Then wait for the board's next stats
    line (a collection, then its counters and heap). peer_url: where the bench itself connects
    (default url; e.g. the broker's plain listener when the board uses its TLS one);
    board_config: more settings for the board (e.g. mqtt_ca_file)."""
    from urllib.parse import urlparse

    import aiomqtt

    from hub.tools.firmware.fleet import FleetConfig, start_fleet
    from shared_etp.frame import Keyring, Receiver
    from shared_etp.topics import device_topic

    site = "bench"
    fleet = await start_fleet(
        FleetConfig(
            count=1,
            mqtt_url=url,
            site=site,
            master_secret=MASTER,
            data_dir=data_dir,
            ptys=False,
            heap=heap,
            # energy and a reserve that the rounds never run out of or price out
            overrides={
                "capacity_wh": 10_000_000,
                "soc_start": 9000,
                "reserve_mc": 20000,
                "pct_for_sale": 10000,
                "floor_wh": 0,
                **(board_config or {}),
            },
        )
    )
    board = fleet.devices[0]
    parsed = urlparse(peer_url or url)
    key = derive_key(MASTER, DEVICE)
    keyring = Keyring()
    keyring.add(DEVICE, key, owner=DEVICE)
    receiver = Receiver(keyring)
    epoch = int(time.time())  # above any epoch an earlier run left in the board's replay window
    hub = Sender(0, DEVICE, key, epoch)
    bidders = [Sender(1001 + i, DEVICE, key, epoch) for i in range(4)]
    times_ms: dict[str, list[float]] = {name: [] for name, _, _ in _ROUND}
    wrong: dict[str, int] = {}
    unanswered: dict[str, int] = {}
    try:
        async with aiomqtt.Client(parsed.hostname or "127.0.0.1", parsed.port or 1883) as client:
            setsockopt = getattr(client._client.socket(), "setsockopt", None)
            if setsockopt is not None:  # paho leaves Nagle on: 40 ms per round trip
                setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            await client.subscribe(device_topic(site, DEVICE, "resp"), qos=1)
            await client.subscribe(device_topic(site, DEVICE, "birth"), qos=1)
            messages = client.messages.__aiter__()

            async def next_message(timeout: float) -> tuple[str, dict]:
                message = await asyncio.wait_for(messages.__anext__(), timeout)
                return message.topic.value, receiver.open(bytes(message.payload))  # type: ignore[arg-type]

            request_topic = device_topic(site, DEVICE, "req")
            done = 0
            try:
                while (await next_message(30))[0].endswith("/birth") is False:
                    pass
                auction = 0
                while done < count:
                    auction += 1
                    best, other = bidders[auction % 4], bidders[(auction + 1) % 4]
                    for (name, msg_type, answer), (sender, price) in zip(
                        _ROUND,
                        ((hub, None), (best, 30000), (other, 29000), (best, 30000)),
                        strict=True,
                    ):
                        if done == count:
                            break
                        fields = {"auc": auction}
                        if price is not None:
                            fields.update(price=price, ereq=10)
                        frame, msg = sender.frame(msg_type, dst=DEVICE, **fields)
                        started = time.perf_counter()
                        await client.publish(request_topic, frame, qos=1)
                        done += 1
                        try:
                            while True:
                                _, reply = await next_message(2)
                                if reply["id"] == msg["id"] and reply["dst"] == sender.src:
                                    break
                        except TimeoutError:  # lost (e.g. MemoryError): counted, trading goes on
                            unanswered[name] = unanswered.get(name, 0) + 1
                            if sum(unanswered.values()) >= 10:
                                raise
                            continue
                        times_ms[name].append((time.perf_counter() - started) * 1000)
                        if reply["t"] != answer:
                            wrong[name] = wrong.get(name, 0) + 1
            except TimeoutError:
                console = board.console_log.read_text(errors="replace")
                console = console.strip().replace("\n", " | ")
                what = f"{sum(unanswered.values())} of {done} requests" if done else "its birth"
                raise BenchError(
                    f"the board (heap {heap}) did not answer {what} in time (in too small a heap"
                    f" frames fail with MemoryError, counted in its stats); its console ends:"
                    f" {console[-600:]}"
                ) from None
        # The board prints its counters and heap (after a collection) every 5 s.
        stats = None
        deadline = time.monotonic() + 12
        while time.monotonic() < deadline:
            stats = _last_stats(board.console_log)
            if stats is not None and stats["core"]["handled"] >= count:
                break
            await asyncio.sleep(0.2)
    finally:
        await fleet.stop()
    out: dict = {"n": count, "wrong_answers": wrong, "unanswered": unanswered, "times_ms": {}}
    for name, values in times_ms.items():
        if not values:
            continue
        values.sort()
        out["times_ms"][name] = {
            "n": len(values),
            "median": round(values[len(values) // 2], 3),
            "p99": round(values[min(len(values) - 1, len(values) * 99 // 100)], 3),
            "max": round(values[-1], 3),
        }
    if stats is not None:
        core = stats["core"]
        out["board"] = {
            "handled": core["handled"],
            "trades": core["trades"],
            "dropped": core["dropped"],
            "protocol_errors": core["protocol_errors"],
            "heap_alloc": stats["heap"]["alloc"],
            "heap_free": stats["heap"]["free"],
        }
    return out


def run_round_trips(count: int, heap: str, mqtt_url: str | None = None) -> dict:
    """Trading round trips hub → broker → simulated board → broker → hub (trading_round_trips).

    With no mqtt_url an amqtt broker is started in this process on a free loopback port.
    """

    async def main() -> dict:
        with tempfile.TemporaryDirectory(prefix="etp-bench-rt-") as tmp:
            if mqtt_url is not None:
                result = await trading_round_trips(mqtt_url, count, heap, Path(tmp))
                result["broker"] = mqtt_url
                return result
            from amqtt.broker import Broker
            from amqtt.contexts import BrokerConfig, ListenerConfig

            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                port = probe.getsockname()[1]
            broker = Broker(
                BrokerConfig(
                    listeners={"default": ListenerConfig(bind=f"127.0.0.1:{port}")},
                    plugins={
                        "amqtt.plugins.authentication.AnonymousAuthPlugin": {
                            "allow_anonymous": True
                        }
                    },
                )
            )
            await broker.start()
            try:
                result = await trading_round_trips(
                    f"mqtt://127.0.0.1:{port}", count, heap, Path(tmp)
                )
            finally:
                await broker.shutdown()
            result["broker"] = "embedded amqtt"
            return result

    return asyncio.run(main())
