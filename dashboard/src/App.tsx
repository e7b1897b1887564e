// The app: the sign-in form without a key, else the live dashboard around the current view.

import { lazy, Suspense, useEffect, useState } from "react";
import { useQueryClient } from "@tanstack/react-query";
import { setUnauthorizedHandler } from "./lib/api";
import { forgetKey, storedKey, storeKey } from "./lib/auth";
import { useView, type View } from "./lib/router";
import { LiveProvider } from "./live/LiveProvider";
import { Layout } from "./components/Layout";
import { OperatorProvider } from "./components/operator";
import { SignIn } from "./components/SignIn";

const views: Record<View, React.LazyExoticComponent<() => React.JSX.Element>> = {
  overview: lazy(() => import("./views/Overview")),
  batteries: lazy(() => import("./views/Batteries")),
  auctions: lazy(() => import("./views/Auctions")),
  history: lazy(() => import("./views/History")),
  feed: lazy(() => import("./views/Feed")),
  alerts: lazy(() => import("./views/Alerts")),
  performance: lazy(() => import("./views/Performance")),
  settlement: lazy(() => import("./views/Settlement")),
};

export function App() {
  const client = useQueryClient();
  const [key, setKey] = useState<string | null>(storedKey);
  const [message, setMessage] = useState<string | null>(null);
  const view = useView();

  useEffect(() => {
    setUnauthorizedHandler((text) => {
      setMessage(text);
      setKey(null);
    });
  }, []);

  const signIn = (value: string) => {
    storeKey(value);
    client.clear();
    setMessage(null);
    setKey(value.trim());
  };
  const signOut = () => {
    forgetKey();
    client.clear();
    setMessage(null);
    setKey(null);
  };

  if (key === null) return <SignIn message={message} onSubmit={signIn} />;
  const Current = views[view];
  return (
    <LiveProvider key={key}>
      <OperatorProvider>
        <Layout view={view} onSignOut={signOut}>
          <Suspense fallback={<p className="p-4 text-slate-500">Loading…</p>}>
            <Current />
          </Suspense>
        </Layout>
      </OperatorProvider>
    </LiveProvider>
  );
}
