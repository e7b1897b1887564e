// Rates from successive status samples (the hub's counters since its start).

import type { Status } from "./types";

export interface CounterSample {
  uptime_s: number;
  messages_in: number;
  messages_out: number;
}

export function sum(record: Record<string, number> | undefined): number {
  if (!record) return 0;
  return Object.values(record).reduce((total, value) => total + value, 0);
}

export function sampleOf(status: Status): CounterSample {
  return {
    uptime_s: status.uptime_s,
    messages_in: sum(status.metrics.messages_in),
    messages_out: sum(status.metrics.messages_out),
  };
}

/** Adds a sample, dropping those older than `windowS` before it; a restarted hub (uptime
 * going back) starts the window afresh. */
export function addSample(samples: CounterSample[], next: CounterSample, windowS = 60): CounterSample[] {
  const last = samples[samples.length - 1];
  if (last !== undefined && next.uptime_s <= last.uptime_s) {
    return next.uptime_s < last.uptime_s ? [next] : samples;
  }
  return [...samples, next].filter((s) => next.uptime_s - s.uptime_s <= windowS);
}

/** Messages per second in and out over the samples' window; null until two samples. */
export function messageRates(samples: CounterSample[]): { in: number; out: number } | null {
  const first = samples[0];
  const last = samples[samples.length - 1];
  if (first === undefined || last === undefined || last.uptime_s <= first.uptime_s) return null;
  const seconds = last.uptime_s - first.uptime_s;
  return {
    in: (last.messages_in - first.messages_in) / seconds,
    out: (last.messages_out - first.messages_out) / seconds,
  };
}
