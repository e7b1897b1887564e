// The API key a browser holds: taken from `#key=...` once, then kept in localStorage.

export const KEY_STORAGE = "etp.apiKey";

/** The key in a location hash such as `#key=etp_1_abc` (null when there is none). */
export function keyFromHash(hash: string): string | null {
  const params = new URLSearchParams(hash.replace(/^#/, ""));
  const key = params.get("key");
  return key && key.trim() ? key.trim() : null;
}

/** Moves a `#key=` from the address bar into storage and removes it from the address. */
export function adoptKeyFromLocation(): void {
  const key = keyFromHash(window.location.hash);
  if (key === null) return;
  localStorage.setItem(KEY_STORAGE, key);
  const { pathname, search } = window.location;
  window.history.replaceState(null, "", pathname + search);
}

export function storedKey(): string | null {
  return localStorage.getItem(KEY_STORAGE);
}

export function storeKey(key: string): void {
  localStorage.setItem(KEY_STORAGE, key.trim());
}

export function forgetKey(): void {
  localStorage.removeItem(KEY_STORAGE);
}
