"""Local rollup: rebuild derived-timeframe candles from stored closed 1m candles, vectorised.

It never builds a bucket unless every one of its 1m candles is stored, and never a bucket not closed yet.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from ..domain import CandleBatch, Hole, SeriesId, expected_latest_closed_time, grid_offset, merge_ranges
from .base import SourceResult

log = logging.getLogger(__name__)

BASE_TF = 60
_READ_GAP_1M = 2000  # two hole spans closer than this many 1m candles are read in one query
_MAX_READS = 16


def times_in_holes(times: np.ndarray, holes: Sequence[Hole]) -> np.ndarray:
    """Boolean mask: which of `times` fall inside one of the (inclusive) holes."""
    t = np.asarray(times, dtype=np.int64)
    if not holes or len(t) == 0:
        return np.zeros(len(t), dtype=bool)
    ranges = merge_ranges(((h.start, h.end) for h in holes), 1)
    starts = np.fromiter((s for s, _ in ranges), dtype=np.int64, count=len(ranges))
    ends = np.fromiter((e for _, e in ranges), dtype=np.int64, count=len(ranges))
    idx = np.searchsorted(starts, t, side="right") - 1
    inside = idx >= 0
    mask = np.zeros(len(t), dtype=bool)
    mask[inside] = t[inside] <= ends[idx[inside]]
    return mask


def rollup_batch(batch_1m: CandleBatch, tf: int) -> CandleBatch:
    """Aggregate 1m candles into `tf` buckets on its grid (`align_down`, vectorised: the Monday of 1w, the
    exchange's offset of a `Grid`); only complete buckets are returned.

    A bucket is complete when all tf/60 of its 1m open times are present. open = first, close = last,
    high = max, low = min, volume = sum. Unaligned 1m rows are ignored; repeated times keep the last row.
    """
    if tf < BASE_TF or tf % BASE_TF:
        raise ValueError(f"rollup: timeframe {tf}s is not a whole multiple of 1m")
    b = CandleBatch.coerce(batch_1m)
    if len(b) == 0:
        return CandleBatch.empty()
    b = b.take(b.times % BASE_TF == 0).dedupe_sorted()  # ascending, unique, 1m-aligned
    if len(b) == 0:
        return CandleBatch.empty()
    per_bucket = tf // BASE_TF
    off = grid_offset(tf)
    buckets = (b.times - off) // tf * tf + off
    keys, first, counts = np.unique(buckets, return_index=True, return_counts=True)
    last = first + counts - 1
    complete = counts == per_bucket  # unique aligned minutes inside one bucket: all present iff count == n
    if not complete.any():
        return CandleBatch.empty()
    out = CandleBatch(
        keys,
        b.open[first],
        np.maximum.reduceat(b.high, first),
        np.minimum.reduceat(b.low, first),
        b.close[last],
        np.add.reduceat(b.volume, first),
    )
    return out.take(complete)


def _read_spans(holes: Sequence[Hole], tf: int, last_closed: int) -> list[tuple[int, int]]:
    """1m time spans to read: the holes' buckets (closed only), grouped so that only a few reads run."""
    spans = [(h.start, min(h.end, last_closed) + tf - BASE_TF) for h in holes if h.start <= last_closed]
    if not spans:
        return []
    merged = merge_ranges(spans, BASE_TF)
    if len(merged) == 1:
        return merged
    starts = np.array([s for s, _ in merged], dtype=np.int64)
    ends = np.array([e for _, e in merged], dtype=np.int64)
    gaps = starts[1:] - ends[:-1]
    split = gaps > _READ_GAP_1M * BASE_TF
    if split.sum() > _MAX_READS - 1:  # too many far-apart holes: split only at the largest gaps
        keep = np.argsort(gaps, kind="stable")[-(_MAX_READS - 1):]
        split = np.zeros_like(split)
        split[keep] = True
    group_start = np.concatenate(([0], np.nonzero(split)[0] + 1))
    group_end = np.concatenate((np.nonzero(split)[0], [len(merged) - 1]))
    return [(int(starts[a]), int(ends[z])) for a, z in zip(group_start, group_end, strict=True)]


class RollupSource:
    """Level 2 of the decision tree (contract section 5): `tf` candles from the sibling 1m series."""

    name = "rollup"

    def __init__(self, store, max_timeframe_s: int = 900):
        self.store = store
        self.max_timeframe_s = int(max_timeframe_s)

    def applicable(self, series: SeriesId) -> bool:
        tf = series.tf_seconds  # a funding rate is one value per period: nothing to roll up
        return (tf > BASE_TF and tf % BASE_TF == 0 and tf <= self.max_timeframe_s
                and series.candle_type != "funding_rate")

    def offers(self, series: SeriesId) -> bool:
        """A derived timeframe whose 1m series the store holds."""
        if not self.applicable(series):
            return False
        try:
            return str(SeriesId(series.exchange, series.market, series.symbol, "1m")) in self.store.known_series()
        except Exception:
            log.debug("rollup: offers(%s) failed", series, exc_info=True)
            return False

    def fetch(self, series: SeriesId, holes: list[Hole], now: float,
              deadline: float | None = None) -> SourceResult:
        result = SourceResult()
        if not holes or not self.applicable(series):
            return result
        tf = series.tf_seconds
        last_closed = expected_latest_closed_time(now, tf)  # newest bucket with bucket + tf <= now
        spans = _read_spans(holes, tf, last_closed)
        if not spans:
            return result
        sibling = replace(series, timeframe="1m")  # the same candle type: mark 5m from mark 1m
        try:
            if str(sibling) not in self.store.known_series():  # never create the sibling by reading it
                return result
            parts = [self.store.read_between(sibling, s, e) for s, e in spans]
        except Exception as exc:  # a source reports trouble, it never raises
            log.debug("rollup %s: reading %s failed", series, sibling, exc_info=True)
            result.errors.append(f"rollup: reading {sibling} failed: {type(exc).__name__}: {exc}")
            return result
        parts = [p for p in parts if len(p)]
        if not parts:
            return result
        base = parts[0] if len(parts) == 1 else CandleBatch(
            *(np.concatenate([getattr(p, f) for p in parts]) for f in CandleBatch.__slots__))
        built = rollup_batch(base, tf)
        keep = times_in_holes(built.times, holes) & (built.times + tf <= now)
        result.candles = built.take(keep)
        return result
