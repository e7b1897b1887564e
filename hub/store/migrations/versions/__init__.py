"""Alembic revision scripts of the hub store, oldest first."""
