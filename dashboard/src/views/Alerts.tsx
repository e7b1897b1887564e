// Alerts from /api/v1/alerts (refetched on alert_raised / alert_acknowledged events);
// operators acknowledge them. A hub without the alerts API (404) says so.

import { useState } from "react";
import { CommandButton, useOperator } from "../components/operator";
import { Card, Empty, Problem } from "../components/ui";
import { ago, clock } from "../lib/format";
import { useAlerts } from "../lib/queries";
import { useNow } from "../lib/useNow";

export default function Alerts() {
  const [state, setState] = useState<"" | "open" | "acknowledged">("open");
  const alerts = useAlerts(state);
  const { isOperator } = useOperator();
  const now = useNow(5000);
  const filter = (
    <select value={state} onChange={(e) => setState(e.target.value as typeof state)}
      data-testid="alert-state" className="rounded border border-slate-300 px-1 py-0.5 text-sm">
      <option value="open">open</option>
      <option value="acknowledged">acknowledged</option>
      <option value="">all</option>
    </select>
  );
  let body;
  if (alerts.error) body = <Problem error={alerts.error} />;
  else if (alerts.data === undefined) body = <Empty>Loading…</Empty>;
  else if (alerts.data === null) body = <Empty>Alerts are not available on this hub (no alerts API).</Empty>;
  else if (alerts.data.length === 0) body = <Empty>No {state || ""} alerts.</Empty>;
  else body = (
    <ul className="divide-y divide-slate-100">
      {alerts.data.map((a) => (
        <li key={a.id} data-testid="alert-row" data-alert-id={a.id} data-state={a.state}
          className="flex flex-wrap items-center gap-x-3 gap-y-1 py-2 text-sm">
          <span className={`rounded px-1.5 text-xs ${a.severity === "critical" ? "bg-red-100 text-red-800" : "bg-amber-100 text-amber-800"}`}>
            {a.severity}
          </span>
          <span className="font-medium">{a.kind}</span>
          {a.device_id !== null && <span className="text-slate-600">battery {a.device_id}</span>}
          <span className="min-w-0 flex-1">{a.message}{a.count > 1 ? ` (×${a.count})` : ""}</span>
          <span className="text-xs text-slate-500" title={`raised ${clock(a.raised_ms)}`}>last {ago(a.last_ms, now)}</span>
          {a.state === "acknowledged" ? (
            <span className="text-xs text-slate-500">
              acknowledged {a.acknowledged_by ? `by ${a.acknowledged_by.name}` : ""} {clock(a.acknowledged_ms)}
            </span>
          ) : isOperator && (
            <CommandButton path={`/api/v1/alerts/${a.id}/acknowledge`} label="acknowledge" testId="alert-ack" />
          )}
        </li>
      ))}
    </ul>
  );
  return <Card title="Alerts" actions={filter}>{body}</Card>;
}
