import { describe, expect, it } from "vitest";
import type { HubEvent } from "./types";
import { keyFromHash } from "./auth";
import { explorerTxUrl } from "./explorer";
import { matchesFeed } from "./feedFilter";
import { ago, basisPoints, centsPerKwh, energy, energyForSaleWh, money, premiumPct, volts } from "./format";
import { addSample, messageRates } from "./rates";

describe("formatting the hub's units", () => {
  it("shows prices, shares, energy, voltage and money in readable units", () => {
    expect(centsPerKwh(27_604)).toBe("27.60 c/kWh");
    expect(centsPerKwh(null)).toBe("—");
    expect(basisPoints(5824)).toBe("58.2 %");
    expect(energy(17_762)).toBe("17.76 kWh");
    expect(energy(950)).toBe("950 Wh");
    expect(volts(52_360)).toBe("52.36 V");
    expect(money(1_202_269)).toBe("$12.02");
  });

  it("reckons energy for sale and premium as the hub does", () => {
    expect(energyForSaleWh(29_119, 5500)).toBe(16_015);
    expect(energyForSaleWh(null, 5500)).toBeNull();
    expect(premiumPct(25_000, 20_000)).toBe(25);
    expect(premiumPct(1, 0)).toBeNull();
  });

  it("says how long ago", () => {
    expect(ago(10_000, 14_400)).toBe("4 s ago");
    expect(ago(0, 180_000)).toBe("3 min ago");
    expect(ago(null, 0)).toBe("—");
  });
});

describe("sign-in key from the address", () => {
  it("reads #key= and nothing else", () => {
    expect(keyFromHash("#key=etp_1_abc")).toBe("etp_1_abc");
    expect(keyFromHash("#other=1&key=etp_2_x")).toBe("etp_2_x");
    expect(keyFromHash("")).toBeNull();
    expect(keyFromHash("#key=")).toBeNull();
  });
});

describe("explorer links", () => {
  it("names the cluster the way the explorer expects", () => {
    expect(explorerTxUrl("sig", "mainnet-beta")).toBe("https://explorer.solana.com/tx/sig");
    expect(explorerTxUrl("sig", "devnet")).toBe("https://explorer.solana.com/tx/sig?cluster=devnet");
    expect(explorerTxUrl("sig", "http://127.0.0.1:8899"))
      .toBe("https://explorer.solana.com/tx/sig?cluster=custom&customUrl=http%3A%2F%2F127.0.0.1%3A8899");
  });
});

describe("feed filter", () => {
  const e: HubEvent = {
    seq: 5, kind: "bid_placed", ts_ms: 0, device_id: 7, auction_id: 42,
    payload: { bidder_id: 100003, price_mc: 25_755 },
  };
  it("matches kind exactly and every search word anywhere in the event", () => {
    expect(matchesFeed(e, "", "")).toBe(true);
    expect(matchesFeed(e, "bid_placed", "")).toBe(true);
    expect(matchesFeed(e, "bid_accepted", "")).toBe(false);
    expect(matchesFeed(e, "", "device 7")).toBe(true);
    expect(matchesFeed(e, "", "auction 42")).toBe(true);
    expect(matchesFeed(e, "", "100003 BID")).toBe(true);
    expect(matchesFeed(e, "", "device 8")).toBe(false);
  });
});

describe("message throughput", () => {
  it("is the counters' growth over the window, restarting with the hub", () => {
    let samples = addSample([], { uptime_s: 10, messages_in: 100, messages_out: 50 });
    expect(messageRates(samples)).toBeNull();
    samples = addSample(samples, { uptime_s: 20, messages_in: 300, messages_out: 150 });
    expect(messageRates(samples)).toEqual({ in: 20, out: 10 });
    samples = addSample(samples, { uptime_s: 2, messages_in: 5, messages_out: 1 }); // restarted
    expect(samples).toHaveLength(1);
    samples = addSample(samples, { uptime_s: 100, messages_in: 5, messages_out: 1 }, 60);
    expect(samples).toHaveLength(1);
  });
});
