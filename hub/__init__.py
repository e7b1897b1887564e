"""The ETP hub: transport, devices, auctions, buyers, store, event log, gateway, CLI."""
