// Clearing price and reserve per trade, over time (Recharts).

import { CartesianGrid, Legend, Line, LineChart, ResponsiveContainer, Tooltip, XAxis, YAxis } from "recharts";
import { clock } from "../lib/format";
import type { Trade } from "../lib/types";
import { Empty } from "../components/ui";

export function PriceChart({ trades, height }: { trades: Trade[]; height: number }) {
  if (trades.length === 0) return <Empty>No trades yet.</Empty>;
  const points = trades.map((t) => ({
    t: t.confirmed_ms,
    price: t.price_mc / 1000,
    reserve: t.reserve_mc / 1000,
  }));
  return (
    <ResponsiveContainer width="100%" height={height}>
      <LineChart data={points} margin={{ top: 5, right: 10, bottom: 0, left: -10 }}>
        <CartesianGrid strokeDasharray="3 3" stroke="#e2e8f0" />
        <XAxis dataKey="t" type="number" domain={["dataMin", "dataMax"]} tickFormatter={(v: number) => clock(v)} fontSize={11} />
        <YAxis unit="¢" fontSize={11} domain={["auto", "auto"]} />
        <Tooltip labelFormatter={(v) => clock(Number(v))} formatter={(v) => `${Number(v).toFixed(2)} c/kWh`} />
        <Legend wrapperStyle={{ fontSize: 12 }} />
        <Line dataKey="price" name="clearing price" stroke="#0f766e" dot={false} isAnimationActive={false} />
        <Line dataKey="reserve" name="reserve" stroke="#94a3b8" dot={false} strokeDasharray="4 2" isAnimationActive={false} />
      </LineChart>
    </ResponsiveContainer>
  );
}
