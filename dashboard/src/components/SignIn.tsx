// The sign-in form: paste an API key (the demo prints a link that fills it in).

import { useState, type FormEvent } from "react";

export function SignIn({ message, onSubmit }: { message: string | null; onSubmit: (key: string) => void }) {
  const [value, setValue] = useState("");
  const submit = (event: FormEvent) => {
    event.preventDefault();
    if (value.trim()) onSubmit(value);
  };
  return (
    <main className="mx-auto mt-16 max-w-md px-4">
      <h1 className="mb-2 text-2xl font-semibold">ETP hub</h1>
      <p className="mb-4 text-sm text-slate-600">
        Sign in with an API key: <code>etp demo</code> prints a dashboard link with one, or make one
        with <code>etp apikey create --role viewer</code>.
      </p>
      <form onSubmit={submit} className="flex flex-col gap-3 rounded-lg bg-white p-4 shadow">
        <label className="text-sm font-medium" htmlFor="signin-key">API key</label>
        <input
          id="signin-key"
          data-testid="signin-key"
          type="password"
          autoComplete="off"
          className="rounded border border-slate-300 px-2 py-1 font-mono"
          placeholder="etp_1_…"
          value={value}
          onChange={(e) => setValue(e.target.value)}
        />
        {message && (
          <p data-testid="signin-error" className="text-sm text-red-700">{message}</p>
        )}
        <button data-testid="signin-submit" type="submit" className="rounded bg-slate-800 px-3 py-1.5 text-white">
          Sign in
        </button>
      </form>
    </main>
  );
}
