// The frame around every view: header (connection, role, trading, exports), navigation
// (a menu on narrow screens) and the operator's error line.

import { useState, type ReactNode } from "react";
import { useStatus, useWhoAmI } from "../lib/queries";
import { navigate, VIEWS, type View } from "../lib/router";
import { useWide } from "../lib/useWide";
import { ConnIndicator } from "./ConnIndicator";
import { Exports } from "./Exports";
import { OperatorError } from "./operator";
import { TradingControls } from "./TradingControls";

const LABELS: Record<View, string> = {
  overview: "Overview", batteries: "Batteries", auctions: "Live auctions", history: "History",
  feed: "Activity", alerts: "Alerts", performance: "Performance", settlement: "Settlement",
};

function NavLinks({ view, onPick }: { view: View; onPick: () => void }) {
  const status = useStatus();
  const openAlerts = status.data?.alerts?.open ?? 0;
  return (
    <>
      {VIEWS.map((name) => (
        <a
          key={name}
          href={`/${name}`}
          data-testid={`nav-${name}`}
          aria-current={view === name ? "page" : undefined}
          onClick={(e) => {
            if (e.metaKey || e.ctrlKey || e.shiftKey || e.button !== 0) return;
            e.preventDefault();
            navigate(name);
            onPick();
          }}
          className={`block rounded px-3 py-1.5 text-sm ${view === name ? "bg-slate-800 text-white" : "hover:bg-slate-200"}`}
        >
          {LABELS[name]}
          {name === "alerts" && openAlerts > 0 && (
            <span className="ml-1 rounded-full bg-red-600 px-1.5 text-xs text-white">{openAlerts}</span>
          )}
        </a>
      ))}
    </>
  );
}

export function Layout({ view, onSignOut, children }: { view: View; onSignOut: () => void; children: ReactNode }) {
  const [menuOpen, setMenuOpen] = useState(false);
  const whoami = useWhoAmI();
  const status = useStatus();
  // One set of nav links at a time (a hidden duplicate would confuse tests and screen readers).
  const wide = useWide();
  return (
    <div className="min-h-screen">
      <header className="z-20 border-b md:sticky md:top-0 border-slate-200 bg-white">
        <div className="flex flex-wrap items-center gap-x-4 gap-y-1 px-4 py-2">
          {!wide && (<button
            type="button"
            data-testid="nav-menu"
            aria-expanded={menuOpen}
            onClick={() => setMenuOpen((open) => !open)}
            className="rounded border border-slate-300 px-2 py-0.5 text-sm"
          >
            ☰ Menu
          </button>)}
          <span className="font-semibold">ETP hub{status.data ? ` · ${status.data.site}` : ""}</span>
          <ConnIndicator />
          <TradingControls />
          <div className="ml-auto flex flex-wrap items-center gap-3">
            <Exports />
            <span className="text-xs text-slate-600">
              {whoami.data?.name}{" "}
              <span data-testid="whoami-role" className="rounded bg-slate-100 px-1.5 py-0.5 font-mono">
                {whoami.data?.role ?? "…"}
              </span>
            </span>
            <button type="button" data-testid="signout" onClick={onSignOut} className="text-xs underline">
              Sign out
            </button>
          </div>
        </div>
        {!wide && menuOpen && (
          <nav className="border-t border-slate-200 px-2 py-2">
            <NavLinks view={view} onPick={() => setMenuOpen(false)} />
          </nav>
        )}
        <OperatorError />
      </header>
      <div className="flex">
        {wide && (
          <nav className="flex w-44 shrink-0 flex-col gap-1 p-2">
            <NavLinks view={view} onPick={() => undefined} />
          </nav>
        )}
        <main className="min-w-0 flex-1 p-3 md:p-4">{children}</main>
      </div>
    </div>
  );
}
