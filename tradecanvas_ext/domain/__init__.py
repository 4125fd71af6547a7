"""Domain model: series, timeframes, candles and hole arithmetic.

Pure values and functions only: no I/O, no framework, nothing else of ours imported.
"""
from .candle import Candle, CandleBatch, InvalidCandle
from .holes import Hole, count_covered, list_holes, merge_ranges, split_by_voids
from .series import MARKETS, SeriesId
from .timeframe import (
    MAX_TIME,
    align_down,
    align_up,
    expected_latest_closed_time,
    grid_offset,
    is_aligned,
    is_closed,
    timeframe_to_seconds,
)

__all__ = [
    "Candle", "CandleBatch", "InvalidCandle", "Hole", "count_covered", "list_holes", "merge_ranges",
    "split_by_voids", "MARKETS", "MAX_TIME", "SeriesId", "align_down", "align_up", "expected_latest_closed_time",
    "grid_offset", "is_aligned", "is_closed", "timeframe_to_seconds",
]
