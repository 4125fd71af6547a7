"""The one truth model every dialect serves from: per market and timeframe, which candles exist at a given
"now" (listing time, outages cut out, quiet stretches flat with volume 0) and what they are. Holds no
lock of its own (the data faults are read through `FaultController`); never formats an exchange answer."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .candles import Rows, build_rows, minute_block, present_times
from .faults import FaultController
from .markets import Market, Markets


@dataclass(frozen=True)
class Day:
    """The last 24 hours of a market (1e-8 units), what tickers report: bid and ask one tick around last."""

    open: int
    high: int
    low: int
    last: int
    volume: int
    quote_volume: float
    trades: int
    tick: int

    @property
    def bid(self) -> int:
        return max(self.tick, self.last - self.tick)

    @property
    def ask(self) -> int:
        return self.last + self.tick


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

    def day(self, mk: Market, now: float) -> Day:
        """The market's last 1440 minutes up to the forming one (flat at the price of the moment when it
        has no candle there)."""
        now_open = math.floor(now / 60) * 60
        rows = self.rows(mk, 60, max(0, now_open - 1439 * 60), now_open, now)
        if len(rows):
            return Day(int(rows.o[0]), int(rows.h.max()), int(rows.l.min()), int(rows.c[-1]), int(rows.v.sum()),
                       float(rows.quote.sum()), int(rows.trades.sum()), mk.tick_units)
        minute = int(now // 60)
        px = int(minute_block(mk, np.array([[minute, minute + 1]], dtype=np.int64))[0][0, 0])
        return Day(px, px, px, px, 0, 0.0, 0, mk.tick_units)
