"""Tests of the hub store (SQLite and PostgreSQL)."""
