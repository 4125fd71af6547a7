"""The gap-aware candle store (SQLite by default, PostgreSQL for a shared store); `open_store` builds it."""
from .candle_store import CandleStore, UpsertResult, Void
from .factory import Store, open_store
from .tracker_rows import TrackerRows

__all__ = ["CandleStore", "Store", "TrackerRows", "UpsertResult", "Void", "open_store"]
