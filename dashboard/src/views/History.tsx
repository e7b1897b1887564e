// History: clearing price, reserve and premium over a chosen range, and what each aggregator
// bought per bucket, from the hub's per-bucket aggregation of verified trades
// (/api/v1/history); each aggregator's standing from /api/v1/aggregators (operators may pause
// or resume one here).

import { useState } from "react";
import {
  Bar, BarChart, CartesianGrid, Cell, Legend, Line, LineChart, Pie, PieChart, ResponsiveContainer,
  Tooltip, XAxis, YAxis,
} from "recharts";
import { CommandButton, useOperator } from "../components/operator";
import { Card, Empty, Problem, Table, td } from "../components/ui";
import { clock, energy, money, percent } from "../lib/format";
import { useAggregators, useHistory, type HistoryBucket } from "../lib/queries";
import type { Aggregator } from "../lib/types";

const COLORS = ["#0f766e", "#7c3aed", "#ea580c", "#2563eb", "#db2777", "#65a30d"];

/** The ranges offered, each with a bucket width that keeps the charts to 60..100 points. */
export const RANGES = [
  { label: "15 min", rangeS: 900, bucketS: 15 },
  { label: "1 h", rangeS: 3600, bucketS: 60 },
  { label: "24 h", rangeS: 86_400, bucketS: 900 },
  { label: "7 days", rangeS: 604_800, bucketS: 7200 },
] as const;

function when(ms: number, rangeS: number): string {
  return rangeS > 86_400 ? new Date(ms).toLocaleString([], { weekday: "short", hour: "2-digit", minute: "2-digit" }) : clock(ms);
}

function PriceChart({ buckets, rangeS }: { buckets: HistoryBucket[]; rangeS: number }) {
  const points = buckets.map((b) => ({ t: b.t_ms, price: b.mean_price_mc / 1000, reserve: b.mean_reserve_mc / 1000 }));
  return (
    <ResponsiveContainer width="100%" height={240}>
      <LineChart data={points} margin={{ top: 5, right: 10, bottom: 0, left: -10 }}>
        <CartesianGrid strokeDasharray="3 3" stroke="#e2e8f0" />
        <XAxis dataKey="t" type="number" domain={["dataMin", "dataMax"]} tickFormatter={(v: number) => when(v, rangeS)} fontSize={11} />
        <YAxis unit="¢" fontSize={11} domain={["auto", "auto"]} />
        <Tooltip labelFormatter={(v) => when(Number(v), rangeS)} formatter={(v) => `${Number(v).toFixed(2)} c/kWh`} />
        <Legend wrapperStyle={{ fontSize: 12 }} />
        <Line dataKey="price" name="mean clearing price" stroke="#0f766e" dot={false} isAnimationActive={false} />
        <Line dataKey="reserve" name="mean reserve" stroke="#94a3b8" dot={false} strokeDasharray="4 2" isAnimationActive={false} />
      </LineChart>
    </ResponsiveContainer>
  );
}

function PremiumChart({ buckets, rangeS }: { buckets: HistoryBucket[]; rangeS: number }) {
  const points = buckets.map((b) => ({ t: b.t_ms, premium: b.mean_premium_pct }));
  return (
    <ResponsiveContainer width="100%" height={200}>
      <LineChart data={points} margin={{ top: 5, right: 10, bottom: 0, left: -10 }}>
        <CartesianGrid strokeDasharray="3 3" stroke="#e2e8f0" />
        <XAxis dataKey="t" type="number" domain={["dataMin", "dataMax"]} tickFormatter={(v: number) => when(v, rangeS)} fontSize={11} />
        <YAxis unit="%" fontSize={11} />
        <Tooltip labelFormatter={(v) => when(Number(v), rangeS)} formatter={(v) => percent(Number(v))} />
        <Line dataKey="premium" name="mean premium over reserve" stroke="#7c3aed" dot={false} isAnimationActive={false} />
      </LineChart>
    </ResponsiveContainer>
  );
}

function BoughtChart({ buckets, names, rangeS }: { buckets: HistoryBucket[]; names: Map<string, string>; rangeS: number }) {
  const ids = [...new Set(buckets.flatMap((b) => Object.keys(b.energy_wh_by_aggregator)))].sort();
  const points = buckets.map((b) => ({ t: b.t_ms, ...Object.fromEntries(ids.map((id) => [id, (b.energy_wh_by_aggregator[id] ?? 0) / 1000])) }));
  return (
    <ResponsiveContainer width="100%" height={200}>
      <BarChart data={points} margin={{ top: 5, right: 10, bottom: 0, left: -10 }}>
        <CartesianGrid strokeDasharray="3 3" stroke="#e2e8f0" />
        <XAxis dataKey="t" tickFormatter={(v: number) => when(v, rangeS)} fontSize={11} />
        <YAxis unit=" kWh" fontSize={11} />
        <Tooltip labelFormatter={(v) => when(Number(v), rangeS)} formatter={(v) => `${Number(v).toFixed(2)} kWh`} />
        <Legend wrapperStyle={{ fontSize: 12 }} />
        {ids.map((id, i) => (
          <Bar key={id} dataKey={id} name={names.get(id) ?? id} stackId="bought" fill={COLORS[i % COLORS.length]} isAnimationActive={false} />
        ))}
      </BarChart>
    </ResponsiveContainer>
  );
}

function Shares({ aggregators }: { aggregators: Aggregator[] }) {
  const { isOperator } = useOperator();
  const data = aggregators.map((a) => ({ name: a.config.name, value: a.standing.total_bought_wh }));
  const total = data.reduce((s, d) => s + d.value, 0);
  return (
    <div className="flex flex-col gap-3 lg:flex-row">
      {total > 0 && (
        <div className="h-48 w-full lg:w-64">
          <ResponsiveContainer width="100%" height="100%">
            <PieChart>
              <Pie data={data} dataKey="value" nameKey="name" outerRadius={70} isAnimationActive={false}>
                {data.map((d, i) => <Cell key={d.name} fill={COLORS[i % COLORS.length]} />)}
              </Pie>
              <Tooltip formatter={(v) => energy(Number(v))} />
            </PieChart>
          </ResponsiveContainer>
        </div>
      )}
      <Table head={["aggregator", "strategy", "share", "bought", "spent", "wins", "losses", "success", "bidding"]}>
        {aggregators.map((a, i) => (
          <tr key={a.config.aggregator_id} data-testid="aggregator-row" data-aggregator-id={a.config.aggregator_id}>
            <td className={td}>
              <span className="mr-1 inline-block h-2 w-2 rounded-full" style={{ background: COLORS[i % COLORS.length] }} />
              {a.config.name}
            </td>
            <td className={td}>{a.config.strategy}</td>
            <td className={td}>{total > 0 ? percent((a.standing.total_bought_wh / total) * 100) : "—"}</td>
            <td className={td}>{energy(a.standing.total_bought_wh)}</td>
            <td className={td}>{money(a.standing.total_spent_mc)}</td>
            <td className={td}>{a.standing.wins}</td>
            <td className={td}>{a.standing.losses}</td>
            <td className={td}>{percent(a.standing.success_rate * 100)}</td>
            <td className={td}>
              <span className="mr-2">{a.paused ? "paused" : "bidding"}</span>
              {isOperator && (a.paused
                ? <CommandButton path={`/api/v1/aggregators/${a.config.aggregator_id}/resume`} label="resume" testId="aggregator-resume" />
                : <CommandButton path={`/api/v1/aggregators/${a.config.aggregator_id}/pause`} label="pause" testId="aggregator-pause" />)}
            </td>
          </tr>
        ))}
      </Table>
    </div>
  );
}

export default function History() {
  const [range, setRange] = useState<(typeof RANGES)[number]>(RANGES[1]);
  const history = useHistory(range.rangeS, range.bucketS);
  const aggregators = useAggregators();
  const buckets = history.data?.buckets ?? [];
  const names = new Map((aggregators.data ?? []).map((a) => [String(a.config.aggregator_id), a.config.name]));
  const trades = buckets.reduce((n, b) => n + b.trades, 0);
  return (
    <div>
      <div className="mb-3 flex flex-wrap items-center gap-2 text-sm">
        <span className="text-slate-500">range</span>
        {RANGES.map((r) => (
          <button key={r.label} type="button" data-testid={`history-range-${r.rangeS}`}
            onClick={() => setRange(r)}
            className={`rounded border px-2 py-0.5 ${r === range ? "border-slate-800 bg-slate-800 text-white" : "border-slate-300 bg-white"}`}>
            {r.label}
          </button>
        ))}
        <span className="text-slate-500" data-testid="history-trades">{trades} verified trades, per {range.bucketS >= 60 ? `${range.bucketS / 60} min` : `${range.bucketS} s`}</span>
      </div>
      {history.error ? <Problem error={history.error} /> : buckets.length === 0 ? (
        <Card title="Clearing price vs reserve"><Empty>No verified trades in this range.</Empty></Card>
      ) : (
        <>
          <Card title="Clearing price vs reserve (mean per bucket)"><PriceChart buckets={buckets} rangeS={range.rangeS} /></Card>
          <Card title="Premium over reserve"><PremiumChart buckets={buckets} rangeS={range.rangeS} /></Card>
          <Card title="Energy bought per bucket, by aggregator"><BoughtChart buckets={buckets} names={names} rangeS={range.rangeS} /></Card>
        </>
      )}
      <Card title="Aggregators: share of energy bought (since the hub started)">
        {aggregators.error ? <Problem error={aggregators.error} /> : <Shares aggregators={aggregators.data ?? []} />}
      </Card>
    </div>
  );
}
