"""The WebSocket candle hub: per-subscription ordered delivery with gap recovery (contract section 4)."""
from .candle_hub import CandleHub, HubClient

__all__ = ["CandleHub", "HubClient"]
