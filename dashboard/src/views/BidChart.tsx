// The bids of one auction over time, one line per bidder, with the reserve (Recharts).

import { Line, LineChart, ReferenceLine, ResponsiveContainer, Tooltip, XAxis, YAxis } from "recharts";
import type { LiveAuction } from "../live/state";

const COLORS = ["#0f766e", "#7c3aed", "#ea580c", "#2563eb", "#db2777", "#65a30d"];

export function BidChart({ auction, names }: { auction: LiveAuction; names: Record<number, string> }) {
  const placed = auction.bids.filter((b) => !b.accepted);
  if (placed.length === 0) return <div className="h-24 text-center text-xs leading-[6rem] text-slate-400">no bids yet</div>;
  const bidders = [...new Set(placed.map((b) => b.bidder_id))];
  const points = placed.map((b) => ({ t: b.ts_ms - auction.opened_ms, [`b${b.bidder_id}`]: b.price_mc / 1000 }));
  return (
    <ResponsiveContainer width="100%" height={96}>
      <LineChart data={points} margin={{ top: 4, right: 4, bottom: 0, left: -24 }}>
        <XAxis dataKey="t" type="number" unit="ms" fontSize={10} domain={[0, "dataMax"]} />
        <YAxis fontSize={10} domain={["auto", "auto"]} />
        <Tooltip formatter={(v) => `${Number(v).toFixed(2)} c/kWh`} labelFormatter={(v) => `${String(v)} ms after opening`} />
        {auction.reserve_mc !== null && (
          <ReferenceLine y={auction.reserve_mc / 1000} stroke="#94a3b8" strokeDasharray="3 2" ifOverflow="extendDomain" />
        )}
        {bidders.map((id, i) => (
          <Line key={id} dataKey={`b${id}`} name={names[id] ?? String(id)} stroke={COLORS[i % COLORS.length]}
            connectNulls dot={{ r: 2 }} isAnimationActive={false} />
        ))}
      </LineChart>
    </ResponsiveContainer>
  );
}
