// How the hub's units read on screen. Prices are millicents per kWh (mc), shares and states of
// charge basis points (1/100 %), energy Wh, voltage mV, times Unix ms.

const dash = "—";

/** 27604 mc/kWh → "27.60 c/kWh". */
export function centsPerKwh(mc: number | null | undefined): string {
  if (mc === null || mc === undefined || !Number.isFinite(mc)) return dash;
  return `${(mc / 1000).toFixed(2)} c/kWh`;
}

/** 5824 bp → "58.2 %". */
export function basisPoints(bp: number | null | undefined): string {
  if (bp === null || bp === undefined) return dash;
  return `${(bp / 100).toFixed(1)} %`;
}

export function percent(value: number | null | undefined, digits = 1): string {
  if (value === null || value === undefined || !Number.isFinite(value)) return dash;
  return `${value.toFixed(digits)} %`;
}

/** 17762 → "17.76 kWh", 950 → "950 Wh". */
export function energy(wh: number | null | undefined): string {
  if (wh === null || wh === undefined) return dash;
  if (Math.abs(wh) >= 1000) return `${(wh / 1000).toFixed(2)} kWh`;
  return `${wh} Wh`;
}

/** 52360 mV → "52.36 V". */
export function volts(mv: number | null | undefined): string {
  if (mv === null || mv === undefined) return dash;
  return `${(mv / 1000).toFixed(2)} V`;
}

/** Millicents (money, not a price) → "$12.02" (100,000 mc = 1 dollar). */
export function money(mc: number | null | undefined): string {
  if (mc === null || mc === undefined) return dash;
  return `$${(mc / 100_000).toFixed(2)}`;
}

export function ms(value: number | null | undefined): string {
  if (value === null || value === undefined || !Number.isFinite(value)) return dash;
  return value < 10 ? `${value.toFixed(2)} ms` : `${value.toFixed(1)} ms`;
}

export function count(value: number | null | undefined): string {
  if (value === null || value === undefined) return dash;
  return value.toLocaleString("en-US");
}

/** Time of day, "14:03:07". */
export function clock(tsMs: number | null | undefined): string {
  if (tsMs === null || tsMs === undefined) return dash;
  return new Date(tsMs).toLocaleTimeString("en-GB", { hour12: false });
}

/** "4 s ago", "3 min ago", "2 h ago" relative to `nowMs`. */
export function ago(tsMs: number | null | undefined, nowMs: number): string {
  if (tsMs === null || tsMs === undefined) return dash;
  const seconds = Math.max(0, Math.round((nowMs - tsMs) / 1000));
  if (seconds < 60) return `${seconds} s ago`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ago`;
  return `${Math.floor(seconds / 3600)} h ago`;
}

/** Battery health codes (shared_etp/schema.py). */
export const HEALTH_NAMES: Record<number, string> = { 0: "ok", 1: "degraded", 2: "fault", 3: "offline" };

export function healthName(code: number): string {
  return HEALTH_NAMES[code] ?? `code ${code}`;
}

/** Energy a battery offers now, as the hub reckons it: remaining × share for sale. */
export function energyForSaleWh(remainingWh: number | null, pctForSaleBp: number | null): number | null {
  if (remainingWh === null || pctForSaleBp === null) return null;
  return Math.floor((remainingWh * pctForSaleBp) / 10_000);
}

/** Price over reserve in percent: what competition added to the seller's floor. */
export function premiumPct(priceMc: number, reserveMc: number): number | null {
  if (reserveMc <= 0) return null;
  return ((priceMc - reserveMc) / reserveMc) * 100;
}
