"""The ETP hub: broker, aggregators, auction engine, store, gateway, settlement, CLI."""
