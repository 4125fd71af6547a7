"""The gap-aware candle store (SQLite by default, PostgreSQL for a shared store)."""
from .candle_store import CandleStore, UpsertResult, Void

__all__ = ["CandleStore", "UpsertResult", "Void"]
