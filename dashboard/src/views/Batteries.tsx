// Batteries: the devices of the socket's snapshot, kept current by battery_status and
// device_* events and by polling /api/v1/batteries; in/out of service for operators.

import { CommandButton, useOperator } from "../components/operator";
import { Card, Empty, Table, td } from "../components/ui";
import { ago, basisPoints, centsPerKwh, energy, energyForSaleWh, healthName, volts } from "../lib/format";
import { useNow } from "../lib/useNow";
import { useLive } from "../live/LiveProvider";

const healthLook: Record<number, string> = { 0: "text-emerald-700", 1: "text-amber-700", 2: "text-red-700", 3: "text-slate-500" };

export default function Batteries() {
  const { live } = useLive();
  const { isOperator } = useOperator();
  const now = useNow();
  const devices = Object.values(live.devices).sort((a, b) => a.device_id - b.device_id);
  const head = ["id", "online", "health", "charge", "for sale", "remaining", "reserve", "voltage", "failures", "last event", "service"];
  return (
    <Card title={`Batteries (${devices.filter((d) => d.online).length} online of ${devices.length})`}>
      {devices.length === 0 ? (
        <Empty>No battery has registered with the hub yet.</Empty>
      ) : (
        <Table head={head}>
          {devices.map((d) => (
            <tr key={d.device_id} data-testid="battery-row" data-device-id={d.device_id}
              className={d.in_service ? "" : "bg-slate-100 text-slate-500"}>
              <td className={td}>{d.device_id}</td>
              <td className={td}>
                <span className={`mr-1 inline-block h-2 w-2 rounded-full ${d.online ? "bg-emerald-500" : "bg-red-500"}`} />
                {d.online ? "online" : "offline"}
              </td>
              <td className={`${td} ${healthLook[d.health] ?? ""}`}>{healthName(d.health)}</td>
              <td className={td}>
                <div className="flex items-center gap-1">
                  <div className="h-2 w-14 rounded bg-slate-200">
                    <div className="h-2 rounded bg-emerald-500" style={{ width: `${Math.min(100, (d.soc ?? 0) / 100)}%` }} />
                  </div>
                  {basisPoints(d.soc)}
                </div>
              </td>
              <td className={td} title={`share for sale ${basisPoints(d.pct_for_sale)}`}>
                {energy(energyForSaleWh(d.energy_remaining_wh, d.pct_for_sale))}
              </td>
              <td className={td}>{energy(d.energy_remaining_wh)} / {energy(d.energy_total_wh)}</td>
              <td className={td}>{centsPerKwh(d.reserve_mc)}</td>
              <td className={td}>{volts(d.voltage_mv)}</td>
              <td className={td}>{d.failures}</td>
              <td className={td}>{ago(d.last_seen_ms ?? d.last_event_ms, now)}</td>
              <td className={td}>
                <span className="mr-2">{d.in_service ? "in service" : "out of service"}</span>
                {isOperator && (d.in_service
                  ? <CommandButton path={`/api/v1/batteries/${d.device_id}/out-of-service`} label="take out" testId="battery-out" />
                  : <CommandButton path={`/api/v1/batteries/${d.device_id}/in-service`} label="return" testId="battery-in" />)}
              </td>
            </tr>
          ))}
        </Table>
      )}
      <p className="mt-2 text-xs text-slate-500">
        “For sale”: remaining energy × the battery's share for sale, as the hub reckons it.
        “Last event”: the newest event about the battery this page has seen.
      </p>
    </Card>
  );
}
