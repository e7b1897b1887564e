// Settlement: each trade's settlement on Solana (/api/v1/settlements, refetched on
// settlement_changed events); signatures link to the explorer of the cluster the hub reports
// (`status.settlement.cluster`); without one they are shown as text, not guessed.

import { Card, Empty, Problem, Table, td } from "../components/ui";
import { explorerTxUrl } from "../lib/explorer";
import { clock } from "../lib/format";
import { useSettlements, useStatus } from "../lib/queries";

const look: Record<string, string> = {
  pending: "text-slate-600", submitted: "text-sky-700", settled: "text-emerald-700", failed: "text-red-700",
  // disputes (etp settle dispute|resolve): open, then refunded to the buyer or upheld
  disputed: "text-amber-700", refunded: "text-violet-700", upheld: "text-emerald-700",
};

function Signature({ signature, cluster }: { signature: string | null; cluster: string | null }) {
  if (signature === null) return <>—</>;
  const short = `${signature.slice(0, 10)}…${signature.slice(-6)}`;
  if (cluster === null) return <span className="font-mono" title={signature}>{short}</span>;
  return (
    <a className="font-mono text-sky-700 underline" target="_blank" rel="noreferrer" title={signature}
      href={explorerTxUrl(signature, cluster)}>
      {short}
    </a>
  );
}

export default function Settlement() {
  const settlements = useSettlements();
  const status = useStatus();
  const cluster = status.data?.settlement?.cluster ?? null;
  if (settlements.error) return <Problem error={settlements.error} />;
  const rows = settlements.data ?? [];
  const counts: Record<string, number> = {};
  for (const r of rows) counts[r.status] = (counts[r.status] ?? 0) + 1;
  return (
    <Card title={`Settlement (newest ${rows.length}; cluster ${cluster ?? "not reported by the hub"})`}
      actions={<span className="text-xs text-slate-600">
        {Object.entries(counts).map(([k, v]) => `${k} ${v}`).join(" · ")}
      </span>}>
      {rows.length === 0 ? (
        <Empty>No settlements yet: trades appear here once the hub settles them on Solana.</Empty>
      ) : (
        <Table head={["trade", "status", "attempts", "signature", "updated", "error"]}>
          {rows.map((r) => (
            <tr key={r.trade_id} data-testid="settlement-row" data-trade-id={r.trade_id} data-status={r.status}>
              <td className={td}>{r.trade_id}</td>
              <td className={`${td} ${look[r.status] ?? ""}`}>{r.status}</td>
              <td className={td}>{r.attempts}</td>
              <td className={td}>
                <Signature signature={r.signature} cluster={cluster} />
              </td>
              <td className={td}>{clock(r.updated_ms)}</td>
              <td className={`${td} text-red-700`}>{r.error ?? ""}</td>
            </tr>
          ))}
        </Table>
      )}
    </Card>
  );
}
