"""Alembic migrations of the hub store (configured in code, no alembic.ini)."""
