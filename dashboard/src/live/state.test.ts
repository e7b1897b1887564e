import { describe, expect, it } from "vitest";
import type { Device, HubEvent, WsMessage } from "../lib/types";
import { CLOSED_AUCTIONS_KEPT, FEED_LIMIT, initialLiveState, liveReducer, type LiveState } from "./state";

const device = (id: number, extra: Partial<Device> = {}): Device => ({
  device_id: id, online: true, health: 0, energy_total_wh: 50_000, energy_remaining_wh: 30_000,
  pct_for_sale: 5000, reserve_mc: 24_000, soc: 6000, voltage_mv: 52_000, failures: 0,
  in_service: true, ...extra,
});

function event(seq: number, kind: string, fields: Partial<HubEvent> = {}): WsMessage {
  return { type: "event", seq, kind, ts_ms: 1000 + seq, device_id: null, auction_id: null, payload: {}, ...fields };
}

const snapshot = (seq: number, devices: Device[] = [device(1)]): WsMessage => ({
  type: "snapshot", seq, devices,
  status: {} as never,
});

function apply(state: LiveState, ...messages: WsMessage[]): LiveState {
  return liveReducer(state, { type: "ws", messages });
}

describe("live state", () => {
  it("starts from the snapshot and applies later events once, in seq order", () => {
    let state = apply(initialLiveState, snapshot(10), event(11, "device_offline", { device_id: 1 }));
    expect(state.lastSeq).toBe(11);
    expect(state.devices[1]?.online).toBe(false);
    // a replay after a reconnect: the same event again changes nothing
    state = apply(state, event(11, "device_online", { device_id: 1 }), event(12, "battery_status", {
      device_id: 1, payload: { online: true, soc: 5500, health: 1 },
    }));
    expect(state.feed.map((e) => e.seq)).toEqual([12, 11]);
    expect(state.duplicatesIgnored).toBe(1);
    expect(state.devices[1]).toMatchObject({ online: true, soc: 5500, health: 1, last_event_ms: 1012 });
  });

  it("follows an auction from opening through bids to its close", () => {
    const a = { device_id: 3, auction_id: 7 };
    const state = apply(
      initialLiveState, snapshot(1),
      event(2, "auction_opened", { ...a, payload: { mechanism: "ascending", lot_wh: 1000, reserve_mc: 20_000 } }),
      event(3, "bid_placed", { ...a, payload: { bidder_id: 100001, price_mc: 21_000, energy_wh: 1000, round: 1 } }),
      event(4, "bid_accepted", { ...a, payload: { bidder_id: 100001, price_mc: 21_000, energy_wh: 1000, round: 1 } }),
      event(5, "bid_placed", { ...a, payload: { bidder_id: 100002, price_mc: 22_500, energy_wh: 1000, round: 2 } }),
      event(6, "auction_closed", { ...a, payload: { outcome: "cleared", bidder_id: 100002, price_mc: 22_500 } }),
    );
    expect(state.auctions).toHaveLength(1);
    expect(state.auctions[0]).toMatchObject({
      id: 7, device_id: 3, status: "cleared", reserve_mc: 20_000, clearing_price_mc: 22_500, winner_id: 100002,
    });
    expect(state.auctions[0]?.bids.map((b) => [b.price_mc, b.accepted])).toEqual([[21_000, false], [21_000, true], [22_500, false]]);
    expect(state.closedSinceLoad).toBe(1);
  });

  it("counts a close once even when the event is delivered twice", () => {
    const a = { device_id: 1, auction_id: 9 };
    const closed = event(3, "auction_closed", { ...a, payload: { outcome: "no_sale" } });
    const state = apply(initialLiveState, snapshot(1), event(2, "auction_opened", a), closed, closed);
    expect(state.closedSinceLoad).toBe(1);
    expect(state.auctions[0]?.status).toBe("no_sale");
  });

  it("keeps every open auction but only the newest closed ones", () => {
    const messages: WsMessage[] = [snapshot(0)];
    let seq = 1;
    messages.push(event(seq++, "auction_opened", { auction_id: 1 })); // stays open
    for (let id = 2; id < 2 + CLOSED_AUCTIONS_KEPT + 5; id++) {
      messages.push(event(seq++, "auction_opened", { auction_id: id }));
      messages.push(event(seq++, "auction_closed", { auction_id: id, payload: { outcome: "no_sale" } }));
    }
    const state = apply(initialLiveState, ...messages);
    expect(state.auctions.filter((a) => a.status !== "open")).toHaveLength(CLOSED_AUCTIONS_KEPT);
    expect(state.auctions.some((a) => a.id === 1 && a.status === "open")).toBe(true);
    expect(state.closedSinceLoad).toBe(CLOSED_AUCTIONS_KEPT + 5);
  });

  it("bounds the feed, newest first", () => {
    const messages: WsMessage[] = [snapshot(0)];
    for (let seq = 1; seq <= FEED_LIMIT + 10; seq++) messages.push(event(seq, "battery_status"));
    const state = apply(initialLiveState, ...messages);
    expect(state.feed).toHaveLength(FEED_LIMIT);
    expect(state.feed[0]?.seq).toBe(FEED_LIMIT + 10);
  });

  it("drops what it built on resync and rebuilds from the next snapshot", () => {
    let state = apply(initialLiveState, snapshot(5), event(6, "auction_opened", { auction_id: 1 }));
    state = apply(state, { type: "resync", reason: "behind" });
    expect(state).toMatchObject({ lastSeq: null, hasSnapshot: false, auctions: [], feed: [], resyncs: 1 });
    state = apply(state, snapshot(900, [device(2)]), event(901, "device_offline", { device_id: 2 }));
    expect(Object.keys(state.devices)).toEqual(["2"]);
    expect(state.lastSeq).toBe(901);
  });

  it("takes a battery out of service and back on operator actions", () => {
    let state = apply(initialLiveState, snapshot(1));
    state = apply(state, event(2, "operator_action", { device_id: 1, payload: { action: "battery_out_of_service" } }));
    expect(state.devices[1]?.in_service).toBe(false);
    state = apply(state, event(3, "operator_action", { device_id: 1, payload: { action: "battery_in_service" } }));
    expect(state.devices[1]?.in_service).toBe(true);
  });

  it("a polled battery list replaces the numbers but keeps the last event time", () => {
    let state = apply(initialLiveState, snapshot(1), event(2, "device_online", { device_id: 1 }));
    state = liveReducer(state, { type: "devices", devices: [device(1, { soc: 4200 })] });
    expect(state.devices[1]).toMatchObject({ soc: 4200, last_event_ms: 1002 });
  });
});
