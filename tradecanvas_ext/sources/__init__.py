"""Candle sources for the backfill decision tree: freqtrade, local rollup, ccxt. Each is a thin adapter."""
from .base import CandleSource, SourceResult

__all__ = ["CandleSource", "SourceResult"]
