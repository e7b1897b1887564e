// History: clearing price and premium over the newest trades (/api/v1/trades) and each
// aggregator's share (/api/v1/aggregators); pause/resume an aggregator for operators.

import { Cell, Line, LineChart, Pie, PieChart, ResponsiveContainer, Tooltip, XAxis, YAxis, CartesianGrid } from "recharts";
import { CommandButton, useOperator } from "../components/operator";
import { Card, Empty, Problem, Table, td } from "../components/ui";
import { clock, energy, money, percent, premiumPct } from "../lib/format";
import { useAggregators, useRecentTrades } from "../lib/queries";
import type { Aggregator, Trade } from "../lib/types";
import { PriceChart } from "./PriceChart";

const COLORS = ["#0f766e", "#7c3aed", "#ea580c", "#2563eb", "#db2777", "#65a30d"];

function PremiumChart({ trades }: { trades: Trade[] }) {
  if (trades.length === 0) return <Empty>No trades yet.</Empty>;
  const points = trades.map((t) => ({ t: t.confirmed_ms, premium: premiumPct(t.price_mc, t.reserve_mc) }));
  return (
    <ResponsiveContainer width="100%" height={200}>
      <LineChart data={points} margin={{ top: 5, right: 10, bottom: 0, left: -10 }}>
        <CartesianGrid strokeDasharray="3 3" stroke="#e2e8f0" />
        <XAxis dataKey="t" type="number" domain={["dataMin", "dataMax"]} tickFormatter={(v: number) => clock(v)} fontSize={11} />
        <YAxis unit="%" fontSize={11} />
        <Tooltip labelFormatter={(v) => clock(Number(v))} formatter={(v) => percent(Number(v))} />
        <Line dataKey="premium" name="premium over reserve" stroke="#7c3aed" dot={false} isAnimationActive={false} />
      </LineChart>
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
  const trades = useRecentTrades();
  const aggregators = useAggregators();
  const count = trades.data?.length ?? 0;
  return (
    <div>
      <Card title={`Clearing price vs reserve (newest ${count} trades)`}>
        {trades.error ? <Problem error={trades.error} /> : <PriceChart trades={trades.data ?? []} height={240} />}
      </Card>
      <Card title="Premium over reserve">
        <PremiumChart trades={trades.data ?? []} />
      </Card>
      <Card title="Aggregators: share of energy bought">
        {aggregators.error ? <Problem error={aggregators.error} /> : <Shares aggregators={aggregators.data ?? []} />}
      </Card>
    </div>
  );
}
