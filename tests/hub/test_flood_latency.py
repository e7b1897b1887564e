"""`etp bench flood` as a test: one client floods the hub at 10x the fleet's frame rate with
bad and good-looking frames; the other batteries keep trading with a bounded Query latency, no
trade is lost, the flooder is quarantined, and the audit log sums the rejections in a few
events. The bound here (250 ms p99) leaves room for a busy 2-core CI machine; the 50 ms target
is the benchmark's, on an idle machine (figures printed with -s)."""

from __future__ import annotations

from pathlib import Path

from hub.tools.bench.flood import FloodConfig, format_table, run_flood

P99_BOUND_MS = 250.0


async def test_a_flooding_client_does_not_hold_up_the_others_nor_lose_a_trade(
    tmp_path: Path,
) -> None:
    config = FloodConfig(
        batteries=8, window_s=6.0, warmup_s=2.0, multiple=10.0, quarantine_after=200
    )
    result = await run_flood(config, data_dir=tmp_path)
    print("\n" + format_table(result))
    base, flood = result["baseline"], result["flood"]
    sent = flood["flooder"]
    # the flood happened, at about ten times what the whole fleet sends
    assert sent["sent"] >= 0.6 * config.window_s * 10 * base["fleet_frames_per_s"]
    assert sum(flood["rejected_frames"].values()) >= 0.6 * sent["sent"]
    # the flooder is quarantined, and only it
    assert flood["quarantined"] == [flood["flooder_device"]]
    assert flood["rejected_frames"].get("quarantined", 0) > 0
    # the others kept trading, answering their Queries in time
    assert flood["trades"] >= 0.5 * base["trades"] > 0
    assert flood["query_latency_ms"]["count"] >= 0.5 * base["query_latency_ms"]["count"]
    assert flood["query_latency_ms"]["p99_ms"] < P99_BOUND_MS
    # no trade lost: every trade the hub counts is one a battery committed, and back
    assert result["trades_committed_by_batteries"] > 0
    assert result["trades_recorded"] == result["trades_committed_by_batteries"]
    assert result["lost_accepted_trades"] == result["trades_not_committed_by_batteries"] == 0
    assert result["mismatched_trades"] == 0 and result["undecided_trades"] == 0
    # the audit log counted every rejection in few events (per device and reason per 10 s)
    audit = result["audit"]
    all_rejected = sum(base["rejected_frames"].values()) + sum(flood["rejected_frames"].values())
    assert audit["frames_rejected_counted"] >= all_rejected
    assert audit["frames_rejected_events"] <= 60
