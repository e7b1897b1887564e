// Server state through TanStack Query: one hook per API resource the views read.

import { useQuery } from "@tanstack/react-query";
import { ApiError, getJson, withQuery } from "./api";
import type { Aggregator, Alert, Device, Page, Settlement, Status, Trade, WhoAmI } from "./types";

export const keys = {
  whoami: ["whoami"] as const,
  status: ["status"] as const,
  batteries: ["batteries"] as const,
  aggregators: ["aggregators"] as const,
  trades: ["trades"] as const,
  recentAuctions: ["auctions", "recent"] as const,
  settlements: ["settlements"] as const,
  alerts: ["alerts"] as const,
  competition: ["competition"] as const,
  history: ["history"] as const,
};

/** One bucket of /api/v1/history (verified trades only). */
export interface HistoryBucket {
  t_ms: number;
  trades: number;
  energy_wh: number;
  revenue_mc: number;
  mean_price_mc: number;
  min_price_mc: number;
  max_price_mc: number;
  mean_reserve_mc: number;
  mean_premium_pct: number | null;
  energy_wh_by_aggregator: Record<string, number>;
}

/** The last `rangeS` seconds of trading in buckets of `bucketS`, refreshed every bucket
 * (at least every 15 s, at most every minute). */
export function useHistory(rangeS: number, bucketS: number) {
  return useQuery({
    queryKey: [...keys.history, rangeS, bucketS],
    queryFn: () => {
      const to = Date.now();
      return getJson<{ buckets: HistoryBucket[] }>(
        withQuery("/api/v1/history", { from_ms: to - rangeS * 1000, to_ms: to, bucket_s: bucketS }),
      );
    },
    refetchInterval: Math.min(60_000, Math.max(15_000, bucketS * 1000)),
  });
}

/** /api/v1/competition: the report's counterfactual over the most recent 1,000 auctions
 * (the hub recomputes it at most every 30 s). */
export interface Competition {
  available: boolean;
  reason?: string;
  auctions?: number;
  computed_ms: number;
  improvement?: { recorded_vs_single_price_per_kwh_pct: number | null; recorded_minus_single_premium_points: number | null };
}

export function useCompetition() {
  return useQuery({
    queryKey: keys.competition,
    queryFn: () => getJson<Competition>("/api/v1/competition"),
    refetchInterval: 30_000,
  });
}

export function useWhoAmI() {
  return useQuery({ queryKey: keys.whoami, queryFn: () => getJson<WhoAmI>("/api/v1/whoami"), staleTime: Infinity });
}

/** /api/v1/status; also replaced by the socket's snapshot and metrics_snapshot events. */
export function useStatus() {
  return useQuery({
    queryKey: keys.status,
    queryFn: () => getJson<Status>("/api/v1/status"),
    refetchInterval: 5_000,
  });
}

export function useBatteryList() {
  return useQuery({
    queryKey: keys.batteries,
    queryFn: async () => (await getJson<Page<Device>>(withQuery("/api/v1/batteries", { limit: 1000 }))).items,
    refetchInterval: 15_000,
  });
}

export function useAggregators() {
  return useQuery({
    queryKey: keys.aggregators,
    queryFn: async () => (await getJson<Page<Aggregator>>("/api/v1/aggregators")).items,
    refetchInterval: 15_000,
  });
}

/** The newest trades (up to 1000), oldest first for charts. */
export function useRecentTrades() {
  return useQuery({
    queryKey: keys.trades,
    queryFn: async () => {
      const page = await getJson<Page<Trade>>(
        withQuery("/api/v1/trades", { sort: "time", order: "desc", limit: 1000 }),
      );
      return [...page.items].reverse();
    },
    refetchInterval: 15_000,
  });
}

/** How many auctions opened in the last minute (the hub's auction list, by opened_ms). */
export function useAuctionsLastMinute() {
  return useQuery({
    queryKey: keys.recentAuctions,
    queryFn: async () => {
      const from = Date.now() - 60_000;
      const page = await getJson<Page<unknown>>(
        withQuery("/api/v1/auctions", { from_ms: from, limit: 1000, sort: "time" }),
      );
      return { count: page.items.length, more: page.next_cursor !== null };
    },
    refetchInterval: 10_000,
  });
}

export function useSettlements() {
  return useQuery({
    queryKey: keys.settlements,
    queryFn: async () =>
      (await getJson<Page<Settlement>>(withQuery("/api/v1/settlements", { order: "desc", limit: 200 }))).items,
    refetchInterval: 15_000,
  });
}

/** Alerts, or `null` when this hub has no alerts API yet (404). */
export function useAlerts(state: "" | "open" | "acknowledged") {
  return useQuery({
    queryKey: [...keys.alerts, state],
    queryFn: async (): Promise<Alert[] | null> => {
      try {
        const page = await getJson<Page<Alert>>(
          withQuery("/api/v1/alerts", { state: state || undefined, limit: 200 }),
        );
        return page.items;
      } catch (error) {
        if (error instanceof ApiError && error.status === 404) return null;
        throw error;
      }
    },
    refetchInterval: 15_000,
  });
}
