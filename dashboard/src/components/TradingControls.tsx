// Trading state and pause/resume (operator only).

import { useStatus } from "../lib/queries";
import { CommandButton, useOperator } from "./operator";

export function TradingControls() {
  const { isOperator } = useOperator();
  const status = useStatus();
  if (!isOperator) return null;
  const paused = status.data?.trading?.paused ?? false;
  return (
    <div className="flex items-center gap-1 text-xs">
      <span className="text-slate-500">market</span>
      <span data-testid="trading-state" className={paused ? "font-semibold text-amber-700" : "text-emerald-700"}>
        {paused ? "paused" : "trading"}
      </span>
      <CommandButton path="/api/v1/trading/pause" label="pause" testId="trading-pause" />
      <CommandButton path="/api/v1/trading/resume" label="resume" testId="trading-resume" />
    </div>
  );
}
