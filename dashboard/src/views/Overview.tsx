// Overview: the site at a glance, all from /api/v1/status (kept fresh by the socket's
// metrics_snapshot events and polling) and the hub's auction list for the last minute.

import { Kpi, Card, Problem } from "../components/ui";
import { centsPerKwh, count, money, percent } from "../lib/format";
import { useAuctionsLastMinute, useCompetition, useRecentTrades, useStatus } from "../lib/queries";
import { sum } from "../lib/rates";
import { useThroughput } from "../lib/useThroughput";
import { PriceChart } from "./PriceChart";

export default function Overview() {
  const status = useStatus();
  const perMinute = useAuctionsLastMinute();
  const trades = useRecentTrades();
  const rates = useThroughput(status.data);
  const competition = useCompetition().data;
  if (status.error) return <Problem error={status.error} />;
  const s = status.data;
  const m = s?.market;
  const gain = competition?.available ? competition.improvement?.recorded_vs_single_price_per_kwh_pct ?? null : null;
  return (
    <div>
      <div className="mb-4 grid grid-cols-2 gap-3 lg:grid-cols-4">
        <Kpi testId="kpi-online" label="Batteries online"
          value={s ? `${s.devices.online ?? "?"} / ${s.devices.known}` : "…"} />
        <Kpi testId="kpi-auctions-per-min" label="Auctions / min"
          value={perMinute.data ? `${perMinute.data.count}${perMinute.data.more ? "+" : ""}` : "…"}
          hint="opened in the last 60 s" />
        <Kpi testId="kpi-clearing-price" label="Clearing price (last)"
          value={centsPerKwh(m?.last_clearing_mc)}
          hint={m ? `median ${centsPerKwh(m.median_clearing_mc)} · reserve ⌀ ${centsPerKwh(m.mean_reserve_mc)}` : undefined} />
        <Kpi testId="kpi-premium" label="Premium over reserve"
          value={percent(m?.mean_premium_pct ?? null)} hint="mean over sales" />
        <Kpi testId="kpi-improvement" label="Gain from competition"
          value={gain === null ? "—" : `${gain >= 0 ? "+" : ""}${percent(gain)}`}
          hint={competition?.available
            ? `price per kWh vs one aggregator alone, last ${count(competition.auctions)} auctions`
            : competition?.reason ?? "vs one aggregator alone"} />
        <Kpi testId="kpi-deadline-misses" label="Deadline misses"
          value={s ? count(sum(s.metrics.deadline_misses)) : "…"}
          hint={s ? `timeouts ${count(sum(s.metrics.timeouts))}` : undefined} />
        <Kpi testId="kpi-trades" label="Trades"
          value={m ? count(m.trades) : "…"}
          hint={m ? `revenue ${money(m.revenue_mc)} · unverified ${m.trades_unverified}` : undefined} />
        <Kpi testId="kpi-throughput" label="Messages / s"
          value={rates ? `${rates.in.toFixed(1)} in · ${rates.out.toFixed(1)} out` : "…"}
          hint="MQTT, over the last minute" />
      </div>
      <Card title="Clearing price vs reserve (newest 200 trades)">
        <PriceChart trades={(trades.data ?? []).slice(-200)} height={220} />
      </Card>
      {m && (
        <Card title="Auctions">
          <p className="text-sm">
            opened {count(m.auctions_opened)} · open {m.auctions_open} · cleared {count(m.auctions_cleared)} ·
            no sale {count(m.auctions_no_sale)} · terminated {count(m.auctions_terminated)} · void trades {m.trades_voided}
          </p>
        </Card>
      )}
    </div>
  );
}
