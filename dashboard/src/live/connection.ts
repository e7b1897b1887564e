// Reconnect and resume bookkeeping for /ws, free of sockets and timers (the driver uses it).

import type { WsMessage } from "../lib/types";

export type ConnState = "live" | "connecting" | "offline";

export const BACKOFF_BASE_MS = 500;
export const BACKOFF_MAX_MS = 15_000;

/** Wait before reconnect attempt `attempt` (0 = first retry): doubling, capped, with jitter
 * in [50 %, 100 %] so many pages do not come back in step after a hub restart. */
export function backoffMs(attempt: number, random: () => number = Math.random): number {
  const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** Math.max(0, attempt));
  return Math.round(ceiling * (0.5 + random() / 2));
}

/** The last seq a client has, after one more message: what the next reconnect resumes after.
 * A snapshot sets it, an event advances it (never backwards), resync forgets it (the next
 * connection then starts fresh, with a snapshot). */
export function nextLastSeq(lastSeq: number | null, message: WsMessage): number | null {
  switch (message.type) {
    case "snapshot":
      return message.seq;
    case "event":
      return lastSeq === null || message.seq > lastSeq ? message.seq : lastSeq;
    case "resume":
      return lastSeq;
    case "resync":
      return null;
  }
}

/** The /ws address on the page's own origin, with the ticket and (when resuming) after_seq. */
export function socketUrl(
  location: { protocol: string; host: string },
  ticket: string,
  afterSeq: number | null,
): string {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const params = new URLSearchParams({ ticket });
  if (afterSeq !== null) params.set("after_seq", String(afterSeq));
  return `${scheme}//${location.host}/ws?${params.toString()}`;
}

/** What the hub's close code asks of the client. */
export type CloseAdvice = "retry" | "retry-slowly";

export function adviceForClose(code: number): CloseAdvice {
  // 4429: too many sockets for this key or in all: come back later rather than soon.
  return code === 4429 ? "retry-slowly" : "retry";
}

/** Parses one text frame; null for anything that is not a /ws message. */
export function parseMessage(text: string): WsMessage | null {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return null;
  }
  if (typeof value !== "object" || value === null) return null;
  const type = (value as { type?: unknown }).type;
  if (type === "event") {
    const seq = (value as { seq?: unknown }).seq;
    return typeof seq === "number" ? (value as WsMessage) : null;
  }
  if (type === "snapshot" || type === "resume" || type === "resync") return value as WsMessage;
  return null;
}
