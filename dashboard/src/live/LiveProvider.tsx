// Runs the page's one /ws connection and shares the live state and connection state.

import { createContext, useContext, useEffect, useReducer, useState, type ReactNode } from "react";
import { useQueryClient, type QueryClient } from "@tanstack/react-query";
import { postJson } from "../lib/api";
import { keys, useBatteryList } from "../lib/queries";
import type { Status, WsMessage } from "../lib/types";
import type { ConnState } from "./connection";
import { LiveSocket } from "./socket";
import { initialLiveState, liveReducer, type LiveState } from "./state";

interface LiveContextValue {
  live: LiveState;
  conn: ConnState;
}

const LiveContext = createContext<LiveContextValue>({ live: initialLiveState, conn: "connecting" });

/** Event kinds after which a REST resource is stale (refetched at once, not at its next poll). */
const STALE_AFTER: Record<string, readonly (readonly string[])[]> = {
  alert_raised: [keys.alerts],
  alert_acknowledged: [keys.alerts],
  settlement_changed: [keys.settlements],
  operator_action: [keys.aggregators, keys.status, keys.batteries],
  aggregator_update: [keys.aggregators],
};

function updateQueries(client: QueryClient, messages: WsMessage[]): void {
  const stale = new Set<readonly string[]>();
  for (const message of messages) {
    if (message.type === "snapshot") client.setQueryData(keys.status, message.status);
    if (message.type !== "event") continue;
    if (message.kind === "metrics_snapshot") client.setQueryData(keys.status, message.payload as unknown as Status);
    for (const key of STALE_AFTER[message.kind] ?? []) stale.add(key);
  }
  for (const key of stale) void client.invalidateQueries({ queryKey: key });
}

export function LiveProvider({ children }: { children: ReactNode }) {
  const client = useQueryClient();
  const [live, dispatch] = useReducer(liveReducer, initialLiveState);
  const [conn, setConn] = useState<ConnState>("connecting");
  const batteries = useBatteryList();

  useEffect(() => {
    const socket = new LiveSocket({
      fetchTicket: async () => (await postJson<{ ticket: string }>("/api/v1/ws-ticket")).ticket,
      onMessages: (messages) => {
        dispatch({ type: "ws", messages });
        updateQueries(client, messages);
      },
      onState: setConn,
    });
    socket.start();
    return () => socket.stop();
  }, [client]);

  useEffect(() => {
    if (batteries.data) dispatch({ type: "devices", devices: batteries.data });
  }, [batteries.data]);

  return <LiveContext.Provider value={{ live, conn }}>{children}</LiveContext.Provider>;
}

export function useLive(): LiveContextValue {
  return useContext(LiveContext);
}
