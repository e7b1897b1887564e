// The page's live picture of the site, built only from /ws messages: a pure reducer.
//
// Events are applied once, in seq order: an event whose seq is not above the last applied
// one is a duplicate (a replay after a reconnect) and is ignored. `resync` drops what was
// built; the hub then sends a fresh snapshot.

import type { Device, HubEvent, WsMessage } from "../lib/types";

export const FEED_LIMIT = 1000;
export const CLOSED_AUCTIONS_KEPT = 24;

export type AuctionStatus = "open" | "cleared" | "no_sale" | "terminated";

export interface AuctionBid {
  seq: number;
  ts_ms: number;
  bidder_id: number;
  price_mc: number;
  round: number | null;
  accepted: boolean;
}

export interface LiveAuction {
  id: number;
  device_id: number | null;
  opened_ms: number;
  closed_ms: number | null;
  mechanism: string | null;
  lot_wh: number | null;
  reserve_mc: number | null;
  status: AuctionStatus;
  bids: AuctionBid[];
  clearing_price_mc: number | null;
  winner_id: number | null;
}

export interface LiveDevice extends Device {
  /** ts_ms of the newest event about this battery the page has seen. */
  last_event_ms: number | null;
}

export interface LiveState {
  /** seq of the last event applied (or of the snapshot): what a reconnect resumes after. */
  lastSeq: number | null;
  hasSnapshot: boolean;
  devices: Record<number, LiveDevice>;
  /** Newest first: every open auction and the last CLOSED_AUCTIONS_KEPT closed ones. */
  auctions: LiveAuction[];
  /** Auctions seen to close since the page loaded. */
  closedSinceLoad: number;
  /** Newest first, at most FEED_LIMIT. */
  feed: HubEvent[];
  resyncs: number;
  duplicatesIgnored: number;
}

export const initialLiveState: LiveState = {
  lastSeq: null,
  hasSnapshot: false,
  devices: {},
  auctions: [],
  closedSinceLoad: 0,
  feed: [],
  resyncs: 0,
  duplicatesIgnored: 0,
};

export type LiveAction =
  /** Messages of /ws in the order they came (batched per animation frame). */
  | { type: "ws"; messages: WsMessage[] }
  /** A fresh /api/v1/batteries list (polled): its numbers replace the devices'. */
  | { type: "devices"; devices: Device[] };

function num(value: unknown): number | null {
  return typeof value === "number" && Number.isFinite(value) ? value : null;
}

function withDevices(state: LiveState, devices: Device[]): Record<number, LiveDevice> {
  const next: Record<number, LiveDevice> = {};
  for (const device of devices) {
    next[device.device_id] = {
      ...device,
      last_event_ms: state.devices[device.device_id]?.last_event_ms ?? null,
    };
  }
  return next;
}

function applyToDevice(devices: Record<number, LiveDevice>, event: HubEvent): Record<number, LiveDevice> {
  const id = event.device_id;
  if (id === null) return devices;
  const current = devices[id];
  if (current === undefined) {
    // A battery the snapshot did not know: it registered since. Known fields come with its
    // next status; the battery list poll fills in the rest.
    if (event.kind !== "battery_status" && event.kind !== "device_online") return devices;
  }
  const base: LiveDevice = current ?? {
    device_id: id, online: false, health: 0, energy_total_wh: null, energy_remaining_wh: null,
    pct_for_sale: null, reserve_mc: null, soc: null, voltage_mv: null, failures: 0,
    in_service: true, last_event_ms: null,
  };
  const p = event.payload;
  const next: LiveDevice = { ...base, last_event_ms: event.ts_ms };
  const health = num(p.health);
  if (health !== null) next.health = health;
  switch (event.kind) {
    case "battery_status":
      if (typeof p.online === "boolean") next.online = p.online;
      next.soc = num(p.soc) ?? next.soc;
      next.energy_remaining_wh = num(p.energy_remaining_wh) ?? next.energy_remaining_wh;
      next.voltage_mv = num(p.voltage_mv) ?? next.voltage_mv;
      break;
    case "device_online":
      next.online = true;
      break;
    case "device_offline":
      next.online = false;
      break;
    case "device_failure":
      next.failures = base.failures + 1;
      break;
    case "operator_action":
      if (p.action === "battery_out_of_service") next.in_service = false;
      else if (p.action === "battery_in_service") next.in_service = true;
      break;
    default:
      break;
  }
  return { ...devices, [id]: next };
}

function newAuction(event: HubEvent): LiveAuction {
  return {
    id: event.auction_id ?? 0,
    device_id: event.device_id,
    opened_ms: event.ts_ms,
    closed_ms: null,
    mechanism: typeof event.payload.mechanism === "string" ? event.payload.mechanism : null,
    lot_wh: num(event.payload.lot_wh),
    reserve_mc: num(event.payload.reserve_mc),
    status: "open",
    bids: [],
    clearing_price_mc: null,
    winner_id: null,
  };
}

function isClosed(status: AuctionStatus): boolean {
  return status !== "open";
}

/** Keeps every open auction and the newest closed ones, newest first. */
function trimAuctions(auctions: LiveAuction[]): LiveAuction[] {
  let closed = 0;
  return auctions.filter((a) => !isClosed(a.status) || ++closed <= CLOSED_AUCTIONS_KEPT);
}

function closedStatus(outcome: unknown): AuctionStatus {
  if (outcome === "no_sale" || outcome === "terminated") return outcome;
  return "cleared"; // cleared, and "unverified" (a sale awaiting the battery's word)
}

interface AuctionChange {
  auctions: LiveAuction[];
  closed: number;
}

function applyToAuctions(auctions: LiveAuction[], event: HubEvent): AuctionChange {
  const id = event.auction_id;
  if (id === null) return { auctions, closed: 0 };
  const index = auctions.findIndex((a) => a.id === id);
  if (event.kind === "auction_opened") {
    if (index >= 0) return { auctions, closed: 0 };
    return { auctions: trimAuctions([newAuction(event), ...auctions]), closed: 0 };
  }
  // Events of an auction opened before the page loaded: only its later events are known.
  if (index < 0) {
    if (!["bid_placed", "bid_accepted", "bid_rejected", "auction_closed"].includes(event.kind)) {
      return { auctions, closed: 0 };
    }
  }
  const found = index >= 0 ? auctions[index] : undefined;
  const auction: LiveAuction = found ?? { ...newAuction(event), mechanism: null, lot_wh: null, reserve_mc: null };
  const p = event.payload;
  let next: LiveAuction = auction;
  let closed = 0;
  switch (event.kind) {
    case "query_answered":
      next = { ...auction, reserve_mc: num(p.reserve_mc) ?? auction.reserve_mc };
      break;
    case "bid_placed":
    case "bid_accepted": {
      const bidder = num(p.bidder_id);
      const price = num(p.price_mc);
      if (bidder === null || price === null) return { auctions, closed: 0 };
      const bid: AuctionBid = {
        seq: event.seq, ts_ms: event.ts_ms, bidder_id: bidder, price_mc: price,
        round: num(p.round), accepted: event.kind === "bid_accepted",
      };
      next = { ...auction, bids: [...auction.bids, bid] };
      break;
    }
    case "auction_closed": {
      if (isClosed(auction.status)) return { auctions, closed: 0 };
      const status = closedStatus(p.outcome);
      next = {
        ...auction, status, closed_ms: event.ts_ms,
        clearing_price_mc: status === "cleared" ? num(p.price_mc) : null,
        winner_id: status === "cleared" ? num(p.bidder_id) : null,
      };
      closed = 1;
      break;
    }
    default:
      return { auctions, closed: 0 };
  }
  const rest = auctions.filter((a) => a.id !== id);
  const merged = index >= 0 ? auctions.map((a) => (a.id === id ? next : a)) : [next, ...rest];
  return { auctions: trimAuctions(merged), closed };
}

function applyEvent(state: LiveState, event: HubEvent): LiveState {
  if (state.lastSeq !== null && event.seq <= state.lastSeq) {
    return { ...state, duplicatesIgnored: state.duplicatesIgnored + 1 };
  }
  const { auctions, closed } = applyToAuctions(state.auctions, event);
  const feed = [event, ...state.feed];
  if (feed.length > FEED_LIMIT) feed.length = FEED_LIMIT;
  return {
    ...state,
    lastSeq: event.seq,
    devices: applyToDevice(state.devices, event),
    auctions,
    closedSinceLoad: state.closedSinceLoad + closed,
    feed,
  };
}

export function liveReducer(state: LiveState, action: LiveAction): LiveState {
  if (action.type === "devices") return { ...state, devices: withDevices(state, action.devices) };
  return action.messages.reduce(applyMessage, state);
}

function applyMessage(state: LiveState, message: WsMessage): LiveState {
  switch (message.type) {
    case "snapshot":
      return {
        ...state,
        hasSnapshot: true,
        lastSeq: message.seq,
        devices: withDevices(state, message.devices),
      };
    case "event": {
      const { type: _type, ...event } = message;
      return applyEvent(state, event);
    }
    case "resume":
      return state;
    case "resync":
      // What was built may have a gap: drop it; the snapshot that follows rebuilds it.
      return { ...initialLiveState, closedSinceLoad: state.closedSinceLoad, resyncs: state.resyncs + 1 };
  }
}
