"""Settlement of verified trades on a Solana ledger (see README.md): the Cluster interface, the
embedded ledger, the program's client, the site's set-up and the SettlementService. Import the
modules themselves (they need solders); this package imports nothing at load time."""

__all__: list[str] = []
