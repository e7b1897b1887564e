// The connection indicator: live / connecting / offline and the last event seq applied.

import { useLive } from "../live/LiveProvider";

const look = {
  live: "bg-emerald-500",
  connecting: "bg-amber-400",
  offline: "bg-red-500",
} as const;

export function ConnIndicator() {
  const { conn, live } = useLive();
  return (
    <div data-testid="conn-state" data-state={conn} className="flex items-center gap-1.5 text-xs" title="WebSocket /ws">
      <span className={`inline-block h-2.5 w-2.5 rounded-full ${look[conn]}`} />
      <span>{conn}</span>
      <span className="text-slate-400">seq</span>
      <span data-testid="last-seq" className="font-mono">{live.lastSeq ?? 0}</span>
    </div>
  );
}
