// Activity feed: the socket's events, newest first, filtered by kind and text.

import { useDeferredValue, useState } from "react";
import { Card, Empty } from "../components/ui";
import { clock } from "../lib/format";
import { matchesFeed } from "../lib/feedFilter";
import { useLive } from "../live/LiveProvider";
import { FEED_LIMIT } from "../live/state";

/** Event kinds of the hub (hub/events/kinds.py) and the alerts API; others seen are added. */
const KNOWN_KINDS = [
  "auction_opened", "query_answered", "bid_placed", "bid_accepted", "bid_rejected",
  "trade_recorded", "confirm_answered", "trade_verified", "trade_unverified", "trade_void",
  "trade_unresolvable", "auction_closed", "auction_recovered", "battery_status", "device_online",
  "device_offline", "device_failure", "aggregator_update", "trading_period", "operator_action",
  "settlement_changed", "metrics_snapshot", "alert_raised", "alert_acknowledged",
];
const SHOWN = 200;

function summary(payload: Record<string, unknown>): string {
  const text = JSON.stringify(payload);
  return text.length > 160 ? `${text.slice(0, 157)}…` : text;
}

export default function Feed() {
  const { live } = useLive();
  const [kind, setKind] = useState("");
  const [text, setText] = useState("");
  const search = useDeferredValue(text);
  const kinds = [...new Set([...KNOWN_KINDS, ...live.feed.map((e) => e.kind)])].sort();
  const matching = live.feed.filter((e) => matchesFeed(e, kind, search));
  return (
    <Card title={`Activity (${matching.length} of the last ${live.feed.length} events; keeps ${FEED_LIMIT})`}
      actions={
        <div className="flex flex-wrap gap-2">
          <select data-testid="feed-kind" value={kind} onChange={(e) => setKind(e.target.value)}
            className="rounded border border-slate-300 px-1 py-0.5 text-sm">
            <option value="">all kinds</option>
            {kinds.map((k) => <option key={k} value={k}>{k}</option>)}
          </select>
          <input data-testid="feed-search" type="search" placeholder="search: kind, device, auction, payload"
            value={text} onChange={(e) => setText(e.target.value)}
            className="w-64 max-w-full rounded border border-slate-300 px-2 py-0.5 text-sm" />
        </div>
      }>
      {matching.length === 0 ? (
        <Empty>{live.feed.length === 0 ? "No events since this page connected." : "No event matches."}</Empty>
      ) : (
        <ul className="divide-y divide-slate-100 text-sm">
          {matching.slice(0, SHOWN).map((e) => (
            <li key={e.seq} data-testid="feed-item" data-kind={e.kind} data-seq={e.seq}
              className="flex flex-wrap gap-x-3 py-1">
              <span className="font-mono text-xs text-slate-400">{e.seq}</span>
              <span className="text-xs text-slate-500">{clock(e.ts_ms)}</span>
              <span className="font-medium">{e.kind}</span>
              {e.device_id !== null && <span className="text-slate-600">battery {e.device_id}</span>}
              {e.auction_id !== null && <span className="text-slate-600">auction #{e.auction_id}</span>}
              <span className="min-w-0 break-all font-mono text-xs text-slate-500">{summary(e.payload)}</span>
            </li>
          ))}
        </ul>
      )}
    </Card>
  );
}
