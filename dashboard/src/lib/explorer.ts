// Links to a Solana explorer for a settlement's transaction signature.

const EXPLORER = "https://explorer.solana.com";

/** The explorer page of `signature` on `cluster` (mainnet-beta, devnet, testnet, or an RPC
 * URL for a custom/local validator). */
export function explorerTxUrl(signature: string, cluster: string): string {
  const path = `${EXPLORER}/tx/${encodeURIComponent(signature)}`;
  if (cluster === "mainnet-beta" || cluster === "mainnet") return path;
  if (cluster === "devnet" || cluster === "testnet") return `${path}?cluster=${cluster}`;
  const params = new URLSearchParams({ cluster: "custom", customUrl: cluster });
  return `${path}?${params.toString()}`;
}
