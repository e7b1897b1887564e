"""Tests of hub.events: the numbered event log, its store and its in-process bus."""
