"""Candles: one immutable value, and a columnar batch validated in one vectorised pass."""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from .timeframe import is_aligned, unaligned

FIELDS = ("candle_time", "open", "high", "low", "close", "volume")


class InvalidCandle(ValueError):
    """A candle that breaks contract section 1; `reason` is a short machine-readable code."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def _problem(t: int, o: float, h: float, lo: float, c: float, v: float) -> tuple[str, str] | None:
    prices = (o, h, lo, c)
    if not all(math.isfinite(x) for x in (*prices, v)):
        return "non_finite", f"candle {t}: prices and volume must be finite"
    if min(prices) <= 0:
        return "non_positive_price", f"candle {t}: prices must be > 0"
    if v < 0:
        return "negative_volume", f"candle {t}: volume must be >= 0"
    if lo > min(o, c):
        return "low_above_body", f"candle {t}: low {lo} is above min(open, close)"
    if h < max(o, c):
        return "high_below_body", f"candle {t}: high {h} is below max(open, close)"
    return None


@dataclass(frozen=True, slots=True)
class Candle:
    candle_time: int
    open: float
    high: float
    low: float
    close: float
    volume: float

    def __post_init__(self) -> None:
        t = self.candle_time
        if isinstance(t, bool) or not isinstance(t, (int, np.integer)):
            raise InvalidCandle("bad_time", f"candle_time must be an integer, got {t!r}")
        if t < 0:
            raise InvalidCandle("bad_time", f"candle_time must be >= 0, got {t}")
        for name in FIELDS[1:]:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
                raise InvalidCandle("bad_type", f"candle {t}: {name} must be a number, got {value!r}")
        problem = _problem(int(t), float(self.open), float(self.high), float(self.low), float(self.close),
                           float(self.volume))
        if problem:
            raise InvalidCandle(*problem)

    def check_aligned(self, tf: int) -> None:
        if not is_aligned(self.candle_time, tf):
            raise InvalidCandle("unaligned", f"candle {self.candle_time}: not aligned to {tf}s")

    @classmethod
    def from_dict(cls, d: Mapping) -> Candle:
        if not isinstance(d, Mapping):
            raise InvalidCandle("bad_type", f"a candle must be an object, got {type(d).__name__}")
        missing = [f for f in FIELDS if f not in d]
        if missing:
            raise InvalidCandle("missing_field", f"candle is missing {', '.join(missing)}")
        return cls(*(d[f] for f in FIELDS))

    def to_dict(self) -> dict:
        return {
            "candle_time": int(self.candle_time), "open": float(self.open), "high": float(self.high),
            "low": float(self.low), "close": float(self.close), "volume": float(self.volume),
        }


class CandleBatch:
    """Columns of candles (int64 times, float64 prices). The store and sources move these, not objects."""

    __slots__ = ("times", "open", "high", "low", "close", "volume")

    def __init__(self, times, open, high, low, close, volume):  # the domain's own word
        self.times = np.asarray(times, dtype=np.int64)
        self.open = np.asarray(open, dtype=np.float64)
        self.high = np.asarray(high, dtype=np.float64)
        self.low = np.asarray(low, dtype=np.float64)
        self.close = np.asarray(close, dtype=np.float64)
        self.volume = np.asarray(volume, dtype=np.float64)
        n = len(self.times)
        if any(len(getattr(self, f)) != n for f in self.__slots__):
            raise ValueError("CandleBatch columns must have the same length")

    @classmethod
    def empty(cls) -> CandleBatch:
        return cls([], [], [], [], [], [])

    @classmethod
    def from_rows(cls, rows: Iterable) -> CandleBatch:
        """Candle objects, dicts or (t, o, h, l, c, v) tuples. Malformed rows raise InvalidCandle."""
        out = []
        for r in rows:
            if isinstance(r, Candle):
                out.append((r.candle_time, r.open, r.high, r.low, r.close, r.volume))
            elif isinstance(r, Mapping):
                c = Candle.from_dict(r)
                out.append((c.candle_time, c.open, c.high, c.low, c.close, c.volume))
            else:
                try:
                    t, o, h, lo, c, v = r
                    out.append((int(t), float(o), float(h), float(lo), float(c), float(v)))
                except (TypeError, ValueError) as exc:
                    raise InvalidCandle("bad_type", f"malformed candle row {r!r}: {exc}") from None
        if not out:
            return cls.empty()
        cols = list(zip(*out, strict=True))
        return cls(*cols)

    @classmethod
    def coerce(cls, candles) -> CandleBatch:
        if isinstance(candles, CandleBatch):
            return candles
        return cls.from_rows(candles)

    @classmethod
    def concat(cls, batches) -> CandleBatch:
        batches = [b for b in batches if len(b)]
        if not batches:
            return cls.empty()
        return cls(*(np.concatenate([getattr(b, f) for b in batches]) for f in cls.__slots__))

    def __len__(self) -> int:
        return len(self.times)

    def take(self, index) -> CandleBatch:
        return CandleBatch(*(getattr(self, f)[index] for f in self.__slots__))

    def problems(self, tf: int, now: float | None = None, signed: bool = False) -> np.ndarray:
        """Vectorised validation: an object array with a reason per row, '' where the row is valid.
        `signed`: values that may be zero or negative and need not form a candle body (a premium index,
        freqtrade's funding-rate rows [rate, 0, 0, 0]): finite values, volume >= 0 and the grid only."""
        reasons = np.full(len(self), "", dtype=object)
        prices = np.vstack([self.open, self.high, self.low, self.close])
        checks = [
            (self.times < 0, "bad_time"),
            (~np.isfinite(prices).all(axis=0) | ~np.isfinite(self.volume), "non_finite"),
            (self.volume < 0, "negative_volume"),
            (unaligned(self.times, tf), "unaligned"),
        ]
        if not signed:
            checks[2:2] = [((prices <= 0).any(axis=0), "non_positive_price")]
            checks[4:4] = [(self.low > np.minimum(self.open, self.close), "low_above_body"),
                           (self.high < np.maximum(self.open, self.close), "high_below_body")]
        if now is not None:
            checks.append((self.times + tf > now, "not_closed"))
        with np.errstate(invalid="ignore"):
            for mask, reason in reversed(checks):  # the first failing check names the row
                reasons[mask] = reason
        return reasons

    def split_valid(self, tf: int, now: float | None = None,
                    signed: bool = False) -> tuple[CandleBatch, list[tuple[int, str]]]:
        reasons = self.problems(tf, now, signed)
        bad = reasons != ""
        rejected = [(int(t), str(r)) for t, r in zip(self.times[bad], reasons[bad], strict=True)]
        return self.take(~bad), rejected

    def dedupe_sorted(self) -> CandleBatch:
        """Ascending, one row per time; for a repeated time the LAST row given wins."""
        if len(self) == 0:
            return self
        rev = self.times[::-1]
        _, first_in_rev = np.unique(rev, return_index=True)
        idx = len(self.times) - 1 - first_in_rev  # np.unique sorts, so idx is ascending by time
        return self.take(idx)

    def to_candles(self) -> list[Candle]:
        return [
            Candle(int(t), o, h, lo, c, v)
            for t, o, h, lo, c, v in zip(
                self.times.tolist(), self.open.tolist(), self.high.tolist(), self.low.tolist(),
                self.close.tolist(), self.volume.tolist(), strict=True,
            )
        ]

    def to_dicts(self) -> list[dict]:
        return [
            {"candle_time": t, "open": o, "high": h, "low": lo, "close": c, "volume": v}
            for t, o, h, lo, c, v in zip(
                self.times.tolist(), self.open.tolist(), self.high.tolist(), self.low.tolist(),
                self.close.tolist(), self.volume.tolist(), strict=True,
            )
        ]

    def rows(self) -> list[tuple]:
        return list(zip(
            self.times.tolist(), self.open.tolist(), self.high.tolist(), self.low.tolist(),
            self.close.tolist(), self.volume.tolist(), strict=True,
        ))
