// CSV export buttons: trades, auctions, events (every row, streamed by the hub).

import { useState } from "react";
import { downloadCsv } from "../lib/download";

const EXPORTS = [
  { id: "trades", path: "/api/v1/trades.csv" },
  { id: "auctions", path: "/api/v1/auctions.csv" },
  { id: "events", path: "/api/v1/events.csv" },
] as const;

export function Exports() {
  const [busy, setBusy] = useState<string | null>(null);
  const [error, setError] = useState<string | null>(null);
  const save = async (id: string, path: string) => {
    setBusy(id);
    setError(null);
    try {
      await downloadCsv(path, `etp-${id}-${new Date().toISOString().replace(/[:.]/g, "-")}.csv`);
    } catch (caught) {
      setError(`export failed: ${String(caught)}`);
    } finally {
      setBusy(null);
    }
  };
  return (
    <div className="flex flex-wrap items-center gap-1 text-xs">
      <span className="text-slate-500">CSV</span>
      {EXPORTS.map(({ id, path }) => (
        <button
          key={id}
          type="button"
          data-testid={`export-${id}`}
          disabled={busy !== null}
          onClick={() => void save(id, path)}
          className="rounded border border-slate-300 px-2 py-0.5 hover:bg-slate-100 disabled:opacity-50"
        >
          {busy === id ? "…" : id}
        </button>
      ))}
      {error && <span className="text-red-700">{error}</span>}
    </div>
  );
}
