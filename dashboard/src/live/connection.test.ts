import { describe, expect, it } from "vitest";
import type { WsMessage } from "../lib/types";
import { BACKOFF_MAX_MS, backoffMs, nextLastSeq, parseMessage, socketUrl } from "./connection";

const ev = (seq: number): WsMessage => ({
  type: "event", seq, kind: "battery_status", ts_ms: 0, device_id: 1, auction_id: null, payload: {},
});

describe("reconnect bookkeeping", () => {
  it("resumes after the last seq seen: snapshot sets it, events advance it, never backwards", () => {
    let last: number | null = null;
    last = nextLastSeq(last, { type: "snapshot", seq: 100, status: {} as never, devices: [] });
    expect(last).toBe(100);
    for (const seq of [101, 102, 102, 99]) last = nextLastSeq(last, ev(seq));
    expect(last).toBe(102);
    last = nextLastSeq(last, { type: "resume", after_seq: 102, missed: 0 });
    expect(last).toBe(102);
  });

  it("forgets the seq on resync, so the next connection starts with a snapshot", () => {
    expect(nextLastSeq(500, { type: "resync", reason: "slow" })).toBeNull();
  });

  it("asks for after_seq only when it has one, on the page's own origin", () => {
    expect(socketUrl({ protocol: "http:", host: "hub:8000" }, "t1", null)).toBe("ws://hub:8000/ws?ticket=t1");
    expect(socketUrl({ protocol: "https:", host: "hub" }, "a b", 42)).toBe("wss://hub/ws?ticket=a+b&after_seq=42");
    expect(socketUrl({ protocol: "http:", host: "h" }, "t", 0)).toContain("after_seq=0");
  });

  it("backs off exponentially with jitter, up to a ceiling", () => {
    expect(backoffMs(0, () => 0)).toBe(250);
    expect(backoffMs(0, () => 1)).toBe(500);
    expect(backoffMs(3, () => 1)).toBe(4000);
    expect(backoffMs(50, () => 1)).toBe(BACKOFF_MAX_MS);
    expect(backoffMs(50, () => 0)).toBe(BACKOFF_MAX_MS / 2);
  });

  it("reads the hub's messages and ignores anything else", () => {
    expect(parseMessage('{"type":"event","seq":3,"kind":"x","ts_ms":1,"device_id":null,"auction_id":null,"payload":{}}'))
      .toMatchObject({ type: "event", seq: 3 });
    expect(parseMessage('{"type":"resync","reason":"behind"}')).toEqual({ type: "resync", reason: "behind" });
    expect(parseMessage("not json")).toBeNull();
    expect(parseMessage('{"type":"event"}')).toBeNull();
    expect(parseMessage('{"type":"hello"}')).toBeNull();
    expect(parseMessage("42")).toBeNull();
  });
});
