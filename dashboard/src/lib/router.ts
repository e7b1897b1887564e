// A small path router: the hub answers index.html for any non-API path, so views live at
// /overview, /batteries, ... and the address bar and back button work.

import { useEffect, useState } from "react";

export const VIEWS = [
  "overview", "batteries", "auctions", "history", "feed", "alerts", "performance", "settlement",
] as const;
export type View = (typeof VIEWS)[number];

export function viewOfPath(pathname: string): View {
  const first = pathname.replace(/^\/+/, "").split("/")[0] ?? "";
  return (VIEWS as readonly string[]).includes(first) ? (first as View) : "overview";
}

export function navigate(view: View): void {
  const path = `/${view}`;
  if (window.location.pathname !== path) window.history.pushState(null, "", path);
  window.dispatchEvent(new PopStateEvent("popstate"));
}

export function useView(): View {
  const [view, setView] = useState<View>(() => viewOfPath(window.location.pathname));
  useEffect(() => {
    const update = () => setView(viewOfPath(window.location.pathname));
    window.addEventListener("popstate", update);
    return () => window.removeEventListener("popstate", update);
  }, []);
  return view;
}
