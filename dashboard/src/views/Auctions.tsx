// Live auctions: built from auction_opened / bid_placed / bid_accepted / auction_closed
// events of the socket; one small chart of the bids per auction.

import { memo } from "react";
import { Card, Empty } from "../components/ui";
import { centsPerKwh, clock, energy } from "../lib/format";
import { useAggregators } from "../lib/queries";
import { useLive } from "../live/LiveProvider";
import type { LiveAuction } from "../live/state";
import { BidChart } from "./BidChart";

const statusLook: Record<LiveAuction["status"], string> = {
  open: "bg-sky-100 text-sky-800",
  cleared: "bg-emerald-100 text-emerald-800",
  no_sale: "bg-slate-100 text-slate-700",
  terminated: "bg-red-100 text-red-800",
};

const AuctionCard = memo(function AuctionCard({ auction, names }: { auction: LiveAuction; names: Record<number, string> }) {
  const placed = auction.bids.filter((b) => !b.accepted).length;
  const accepted = auction.bids.length - placed;
  return (
    <div data-testid="live-auction" data-auction-id={auction.id} data-status={auction.status}
      className="rounded-lg bg-white p-3 shadow-sm ring-1 ring-slate-200">
      <div className="mb-1 flex items-center justify-between gap-2 text-sm">
        <span className="font-semibold">#{auction.id}</span>
        <span className="text-slate-600">battery {auction.device_id ?? "?"}</span>
        <span className={`rounded px-1.5 text-xs ${statusLook[auction.status]}`}>{auction.status.replace("_", " ")}</span>
      </div>
      <div className="mb-1 text-xs text-slate-600">
        {clock(auction.opened_ms)} · lot {energy(auction.lot_wh)} · reserve {centsPerKwh(auction.reserve_mc)} ·
        bids {placed} (accepted {accepted})
      </div>
      <BidChart auction={auction} names={names} />
      {auction.status === "cleared" && (
        <div className="mt-1 text-xs">
          sold at <b>{centsPerKwh(auction.clearing_price_mc)}</b> to{" "}
          {auction.winner_id === null ? "?" : names[auction.winner_id] ?? auction.winner_id}
        </div>
      )}
    </div>
  );
});

export default function Auctions() {
  const { live } = useLive();
  const aggregators = useAggregators();
  const names: Record<number, string> = {};
  for (const a of aggregators.data ?? []) names[a.config.aggregator_id] = a.config.name;
  const open = live.auctions.filter((a) => a.status === "open").length;
  return (
    <Card title={`Live auctions — ${open} open`}
      actions={<span className="text-xs text-slate-600">closed since this page loaded:{" "}
        <b data-testid="live-auction-count">{live.closedSinceLoad}</b></span>}>
      {live.auctions.length === 0 ? (
        <Empty>No auction has opened since this page connected; they appear here as the hub runs them.</Empty>
      ) : (
        <div className="grid grid-cols-1 gap-3 sm:grid-cols-2 xl:grid-cols-3">
          {live.auctions.map((a) => <AuctionCard key={a.id} auction={a} names={names} />)}
        </div>
      )}
    </Card>
  );
}
