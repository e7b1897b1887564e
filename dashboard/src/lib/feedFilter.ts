// The activity feed's filter: an event kind and a free text matched against the event.

import type { HubEvent } from "./types";

/** Whether `event` matches: `kind` ("" = any) exactly, and every word of `text`
 * (case-insensitive) somewhere in its kind, device id, auction id or payload. */
export function matchesFeed(event: HubEvent, kind: string, text: string): boolean {
  if (kind && event.kind !== kind) return false;
  const words = text.toLowerCase().split(/\s+/).filter(Boolean);
  if (words.length === 0) return true;
  const haystack = [
    event.kind,
    event.device_id === null ? "" : `device ${event.device_id} battery ${event.device_id}`,
    event.auction_id === null ? "" : `auction ${event.auction_id} #${event.auction_id}`,
    JSON.stringify(event.payload),
  ].join(" ").toLowerCase();
  return words.every((word) => haystack.includes(word));
}
