// Performance: request latency per message type (p50/p99 over the hub's window), message
// counts and throughput, deadline misses, timeouts, loop lag and store writes — all from
// /api/v1/status → metrics.

import { Bar, BarChart, CartesianGrid, Legend, ResponsiveContainer, Tooltip, XAxis, YAxis } from "recharts";
import { Card, Empty, Kpi, Problem, Table, td } from "../components/ui";
import { count, ms } from "../lib/format";
import { useStatus } from "../lib/queries";
import { sum } from "../lib/rates";
import type { LatencyStats } from "../lib/types";
import { useThroughput } from "../lib/useThroughput";

function LatencyTable({ rows }: { rows: [string, LatencyStats][] }) {
  if (rows.length === 0) return <Empty>No samples yet.</Empty>;
  return (
    <Table head={["type", "count", "p50", "p99", "mean", "max"]}>
      {rows.map(([name, s]) => (
        <tr key={name} data-testid="latency-row" data-type={name}>
          <td className={td}>{name}</td>
          <td className={td}>{count(s.count)}</td>
          <td className={td}>{ms(s.p50_ms)}</td>
          <td className={td}>{ms(s.p99_ms)}</td>
          <td className={td}>{ms(s.mean_ms)}</td>
          <td className={td}>{ms(s.max_ms)}</td>
        </tr>
      ))}
    </Table>
  );
}

function Counts({ title, values }: { title: string; values: Record<string, number> }) {
  const entries = Object.entries(values);
  return (
    <div>
      <h3 className="text-xs font-medium text-slate-500">{title}</h3>
      {entries.length === 0 ? <p className="text-sm text-slate-400">none</p> : (
        <ul className="text-sm tabular-nums">
          {entries.map(([k, v]) => <li key={k}>{k}: {count(v)}</li>)}
        </ul>
      )}
    </div>
  );
}

export default function Performance() {
  const status = useStatus();
  const rates = useThroughput(status.data);
  if (status.error) return <Problem error={status.error} />;
  const metrics = status.data?.metrics;
  if (!metrics) return <Empty>Loading…</Empty>;
  const latency = Object.entries(metrics.latency_ms);
  const chart = latency.map(([name, s]) => ({ name, p50: s.p50_ms, p99: s.p99_ms }));
  return (
    <div>
      <div className="mb-4 grid grid-cols-2 gap-3 lg:grid-cols-4">
        <Kpi testId="perf-in" label="Messages in / s" value={rates ? rates.in.toFixed(1) : "…"} hint={`${count(sum(metrics.messages_in))} since start`} />
        <Kpi testId="perf-out" label="Messages out / s" value={rates ? rates.out.toFixed(1) : "…"} hint={`${count(sum(metrics.messages_out))} since start`} />
        <Kpi testId="perf-deadline-misses" label="Deadline misses" value={count(sum(metrics.deadline_misses))} hint={`timeouts ${count(sum(metrics.timeouts))}`} />
        <Kpi testId="perf-loop-lag" label="Event loop lag p99" value={ms(metrics.loop_lag_ms?.p99_ms)} hint={`p50 ${ms(metrics.loop_lag_ms?.p50_ms)}`} />
      </div>
      <Card title="Request latency per message type (hub → battery → hub)">
        {chart.length > 0 && (
          <ResponsiveContainer width="100%" height={200}>
            <BarChart data={chart} margin={{ top: 5, right: 10, bottom: 0, left: -10 }}>
              <CartesianGrid strokeDasharray="3 3" stroke="#e2e8f0" />
              <XAxis dataKey="name" fontSize={11} />
              <YAxis unit="ms" fontSize={11} />
              <Tooltip formatter={(v) => ms(Number(v))} />
              <Legend wrapperStyle={{ fontSize: 12 }} />
              <Bar dataKey="p50" fill="#0f766e" isAnimationActive={false} />
              <Bar dataKey="p99" fill="#ea580c" isAnimationActive={false} />
            </BarChart>
          </ResponsiveContainer>
        )}
        <LatencyTable rows={latency} />
      </Card>
      <Card title="Store writes">
        <LatencyTable rows={Object.entries(metrics.store_ms ?? {})} />
      </Card>
      <Card title="Messages and faults (since the hub started)">
        <div className="grid grid-cols-2 gap-3 md:grid-cols-3">
          <Counts title="received" values={metrics.messages_in} />
          <Counts title="sent" values={metrics.messages_out} />
          <Counts title="deadline misses" values={metrics.deadline_misses} />
          <Counts title="timeouts" values={metrics.timeouts} />
          <Counts title="rejected frames" values={metrics.rejected_frames} />
          <Counts title="bid rejections" values={metrics.bid_rejections} />
        </div>
      </Card>
    </div>
  );
}
