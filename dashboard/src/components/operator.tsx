// Operator commands: whether this key may give them, and the one place a refusal is shown.

import { createContext, useCallback, useContext, useState, type ReactNode } from "react";
import { useQueryClient } from "@tanstack/react-query";
import { ApiError, postJson } from "../lib/api";
import { keys, useWhoAmI } from "../lib/queries";

interface OperatorValue {
  isOperator: boolean;
  pending: boolean;
  error: string | null;
  /** POSTs an operator command; a refusal (or failure) is shown as `operator-error`. */
  command: (path: string) => Promise<void>;
  clearError: () => void;
}

const OperatorContext = createContext<OperatorValue>({
  isOperator: false, pending: false, error: null,
  command: async () => undefined, clearError: () => undefined,
});

export function OperatorProvider({ children }: { children: ReactNode }) {
  const client = useQueryClient();
  const whoami = useWhoAmI();
  const [pending, setPending] = useState(false);
  const [error, setError] = useState<string | null>(null);

  const command = useCallback(async (path: string) => {
    setPending(true);
    setError(null);
    try {
      await postJson<unknown>(path);
      await Promise.all([
        client.invalidateQueries({ queryKey: keys.status }),
        client.invalidateQueries({ queryKey: keys.aggregators }),
        client.invalidateQueries({ queryKey: keys.batteries }),
        client.invalidateQueries({ queryKey: keys.alerts }),
      ]);
    } catch (caught) {
      const reason = caught instanceof ApiError ? `${caught.status}: ${caught.message}` : String(caught);
      setError(`The hub refused the command (${reason})`);
    } finally {
      setPending(false);
    }
  }, [client]);

  const value: OperatorValue = {
    isOperator: whoami.data?.role === "operator",
    pending, error, command, clearError: () => setError(null),
  };
  return <OperatorContext.Provider value={value}>{children}</OperatorContext.Provider>;
}

export function useOperator(): OperatorValue {
  return useContext(OperatorContext);
}

export function OperatorError() {
  const { error, clearError } = useOperator();
  if (error === null) return null;
  return (
    <div className="flex items-start justify-between gap-2 border-b border-red-200 bg-red-50 px-4 py-2 text-sm text-red-800">
      <span data-testid="operator-error">{error}</span>
      <button type="button" onClick={clearError} className="text-red-600 underline">dismiss</button>
    </div>
  );
}

/** A small command button (operator only; the caller checks the role). */
export function CommandButton({ path, label, testId }: { path: string; label: string; testId?: string }) {
  const { command, pending } = useOperator();
  return (
    <button
      type="button"
      data-testid={testId}
      disabled={pending}
      onClick={() => void command(path)}
      className="rounded border border-slate-400 px-2 py-0.5 text-xs hover:bg-slate-100 disabled:opacity-50"
    >
      {label}
    </button>
  );
}
