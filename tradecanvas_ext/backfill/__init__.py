"""Backfill engine: the decision tree, progress tracker, health rules and the startup sync."""
