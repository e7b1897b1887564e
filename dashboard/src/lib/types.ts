// Shapes of the hub's API answers (hub/gateway/README.md), as the dashboard reads them.

export type Role = "viewer" | "operator";

export interface WhoAmI {
  id: number;
  name: string;
  role: Role;
}

export interface Page<T> {
  items: T[];
  next_cursor: string | null;
}

export interface LatencyStats {
  count: number;
  mean_ms: number;
  p50_ms: number;
  p99_ms: number;
  max_ms: number;
}

export interface AggregatorSummary {
  id: number;
  name: string;
  strategy: string;
  wins: number;
  losses: number;
  success_rate: number;
  spent_mc: number;
  energy_bought_wh: number;
}

export interface MarketStatus {
  auctions_opened: number;
  auctions_open: number;
  auctions_cleared: number;
  auctions_no_sale: number;
  auctions_terminated: number;
  trades: number;
  trades_unverified: number;
  trades_unresolvable: number;
  trades_voided: number;
  revenue_mc: number;
  mean_price_mc: number | null;
  mean_reserve_mc: number | null;
  mean_premium_pct: number | null;
  median_clearing_mc: number | null;
  last_clearing_mc: number | null;
  aggregators: AggregatorSummary[];
}

export interface HubMetrics {
  latency_ms: Record<string, LatencyStats>;
  deadline_misses: Record<string, number>;
  timeouts: Record<string, number>;
  rejected_frames: Record<string, number>;
  bid_rejections: Record<string, number>;
  messages_in: Record<string, number>;
  messages_out: Record<string, number>;
  loop_lag_ms?: LatencyStats;
  store_ms?: Record<string, LatencyStats>;
}

export interface TradingState {
  paused: boolean;
  by: { key_id: number; name: string } | null;
  since_ms: number | null;
}

export interface Status {
  site: string;
  mechanism: string;
  ready: boolean;
  uptime_s: number;
  devices: { known: number; online: number | null; state: string };
  market: MarketStatus;
  trading?: TradingState;
  metrics: HubMetrics;
  ws?: { clients: number; events_sent: number };
  alerts?: { open: number };
  settlement?: { cluster?: string };
}

export interface Device {
  device_id: number;
  online: boolean;
  health: number;
  energy_total_wh: number | null;
  energy_remaining_wh: number | null;
  pct_for_sale: number | null;
  reserve_mc: number | null;
  soc: number | null;
  voltage_mv: number | null;
  failures: number;
  in_service: boolean;
  last_seen_ms?: number;
}

export interface Aggregator {
  config: { aggregator_id: number; name: string; strategy: string; max_price_mc: number };
  standing: {
    aggregator_id: number;
    name: string;
    spent_mc: number;
    total_spent_mc: number;
    total_bought_wh: number;
    wins: number;
    losses: number;
    success_rate: number;
  };
  paused: boolean;
}

export interface Trade {
  id: number;
  auction_id: number;
  device_id: number;
  bidder_id: number;
  price_mc: number;
  energy_wh: number;
  reserve_mc: number;
  confirmed_ms: number;
  status: string;
}

export interface Settlement {
  trade_id: number;
  status: "pending" | "submitted" | "settled" | "failed";
  attempts: number;
  signature: string | null;
  error: string | null;
  updated_ms: number;
}

export type AlertKind =
  | "device_failure"
  | "device_offline"
  | "deadline_misses"
  | "rejected_frames"
  | "settlement_failed"
  | "trade_unresolvable";

export interface Alert {
  id: number;
  kind: AlertKind;
  severity: "critical" | "warning";
  device_id: number | null;
  message: string;
  raised_ms: number;
  last_ms: number;
  count: number;
  state: "open" | "acknowledged";
  acknowledged_ms: number | null;
  acknowledged_by: { key_id: number; name: string } | null;
  detail: Record<string, unknown>;
}

/** One event of the hub's log, as /ws and /api/v1/events send it. */
export interface HubEvent {
  seq: number;
  kind: string;
  ts_ms: number;
  device_id: number | null;
  auction_id: number | null;
  payload: Record<string, unknown>;
}

/** A message of the /ws protocol. */
export type WsMessage =
  | { type: "snapshot"; seq: number; status: Status; devices: Device[] }
  | ({ type: "event" } & HubEvent)
  | { type: "resume"; after_seq: number; missed: number }
  | { type: "resync"; reason: string };
