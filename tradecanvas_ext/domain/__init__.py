"""Domain model: series, timeframes, candles and hole arithmetic.

Pure values and functions only: no I/O, no framework, nothing else of ours imported.
"""
from .candle import Candle, CandleBatch, InvalidCandle
from .holes import (
    Hole,
    count_covered,
    covered_in_runs,
    holes_from_runs,
    list_holes,
    merge_ranges,
    merge_runs,
    runs_of,
    split_by_voids,
)
from .series import CANDLE_TYPES, MARKETS, SeriesId
from .timeframe import (
    EXCHANGE_GRID_OFFSETS,
    MAX_TIME,
    Grid,
    align_down,
    align_up,
    exchange_grid,
    expected_latest_closed_time,
    grid_offset,
    is_aligned,
    is_closed,
    timeframe_to_seconds,
    unaligned,
)

__all__ = [
    "Candle", "CandleBatch", "InvalidCandle", "Hole", "count_covered", "covered_in_runs", "holes_from_runs",
    "list_holes", "merge_ranges", "merge_runs", "runs_of", "split_by_voids", "CANDLE_TYPES", "MARKETS", "MAX_TIME", "SeriesId", "align_down", "align_up", "expected_latest_closed_time",
    "grid_offset", "is_aligned", "is_closed", "timeframe_to_seconds", "EXCHANGE_GRID_OFFSETS", "Grid",
    "exchange_grid", "unaligned",
]
