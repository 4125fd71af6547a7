"""The one truth model every dialect serves from: per market and timeframe, which candles exist at a given
"now" (listing time, outages cut out, quiet stretches flat with volume 0) and what they are. Holds no
lock of its own (the data faults are read through `FaultController`); never formats an exchange answer."""

from __future__ import annotations

import math

import numpy as np

from .candles import Rows, build_rows, present_times
from .faults import FaultController
from .markets import Market, Markets


class Truth:
    """The candles the emulated exchange has; every dialect's rows and the test oracle come from here."""

    def __init__(self, markets: Markets, faults: FaultController) -> None:
        self.markets = markets
        self._faults = faults

    def first_open(self, mk: Market, tf: int) -> int:
        """The open time of the market's first candle of timeframe `tf` (the listing, aligned up)."""
        return max(0, math.ceil(self._faults.listed_at(mk.symbol) / tf) * tf)

    def rows(self, mk: Market, tf: int, lo: int, hi: int, now: float, limit: int | None = None,
             from_end: bool = False) -> Rows:
        """The candles with open time in [lo, hi] (any ints; the forming candle is the latest there is),
        ascending: the first (or, `from_end`, the last) `limit` of them. Quiet candles are included (volume
        0); a dialect that omits them filters on `Rows.v`."""
        lo = max(math.ceil(lo / tf) * tf, self.first_open(mk, tf))
        hi = min(math.floor(hi / tf) * tf, math.floor(now / tf) * tf)
        outages = self._faults.outage_intervals(mk.symbol)
        if hi < lo:
            times = np.empty(0, dtype=np.int64)
        else:
            times = present_times(tf, lo, hi, outages, limit, from_end)
        return build_rows(mk, tf, times, now, outages, self._faults.quiet_intervals(mk.symbol))

    def closed(self, mk: Market, tf: int, start: float, end: float, now: float) -> Rows:
        """Closed candles with open time in [start, end]."""
        hi = min(math.floor(end / tf) * tf, math.floor(now / tf) * tf - tf)
        return self.rows(mk, tf, math.ceil(start / tf) * tf, hi, now)

    def forming(self, mk: Market, tf: int, now: float) -> Rows:
        """The candle containing `now` (partial): one row, or none inside an outage or before the listing."""
        t = math.floor(now / tf) * tf
        return self.rows(mk, tf, t, t, now)
