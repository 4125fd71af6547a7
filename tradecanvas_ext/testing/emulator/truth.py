"""The one truth model every dialect serves from: per market and timeframe, which candles exist at a given
"now" (listing time, outages cut out, quiet stretches flat with volume 0), what they are, and the mark prices
derived from them (`mark_of`), and the order book around the last price (`Truth.book`). Holds no lock of its own (the data faults are read through
`FaultController`); never formats an exchange answer."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from .candles import Rows, build_rows, grid_down, grid_up, minute_block, present_times
from .faults import FaultController
from .markets import GOLDEN, Market, Markets, mix64, unit_float

# Mark prices: the trade candle's open/high/low/close times (1 + MARK_BASIS_BP / 10^4), floored to 1e-8 (monotonic, so
# high stays the highest); no volume; Binance's "number of basic data" = one sample a second of the bucket.
# The same times as the trade candles (listing, outages, quiet stretches alike).
MARK_BASIS_BP = 4  # basis points: a perpetual trading slightly above its index
PRICES = (None, "mark")


def mark_of(rows: Rows, tf: int) -> Rows:
    """The mark-price candles of trade candles `rows` (timeframe `tf` seconds)."""
    def up(col: np.ndarray) -> np.ndarray:
        return col * (10_000 + MARK_BASIS_BP) // 10_000
    zero = np.zeros(len(rows), dtype=np.int64)
    return replace(rows, o=up(rows.o), h=up(rows.h), l=up(rows.l), c=up(rows.c), v=zero,
                   quote=np.zeros(len(rows), dtype=np.float64), trades=np.full(len(rows), tf, dtype=np.int64),
                   taker_base=zero, taker_quote=np.zeros(len(rows), dtype=np.float64))


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


@dataclass(frozen=True)
class Book:
    """An order book (1e-8 units), best first: `bids`/`asks` as (price, quantity) pairs."""

    bids: list[tuple[int, int]]
    asks: list[tuple[int, int]]


class Truth:
    """The candles the emulated exchange has; every dialect's rows and the test oracle come from here."""

    def __init__(self, markets: Markets, faults: FaultController) -> None:
        self.markets = markets
        self._faults = faults

    def first_open(self, mk: Market, tf: int, off: int = 0) -> int:
        """The open time of the market's first candle of timeframe `tf` (the listing, aligned up to the grid
        of offset `off`: a dialect's 3d / 1w grid)."""
        return max(0, grid_up(self._faults.listed_at(mk.symbol), tf, off))

    def rows(self, mk: Market, tf: int, lo: int, hi: int, now: float, limit: int | None = None,
             from_end: bool = False, price: str | None = None, off: int = 0) -> Rows:
        """The candles with open time in [lo, hi] (any ints; the forming candle is the latest there is) on
        the grid of offset `off` (t % tf == off), ascending: the first (or, `from_end`, the last) `limit` of
        them. Quiet candles are included (volume 0); a dialect that omits them filters on `Rows.v`.
        `price="mark"`: their mark-price candles."""
        if price not in PRICES:
            raise ValueError(f"price {price!r} must be one of {PRICES}")
        lo = max(grid_up(lo, tf, off), self.first_open(mk, tf, off))
        hi = min(grid_down(hi, tf, off), grid_down(now, tf, off))
        outages = self._faults.outage_intervals(mk.symbol)
        if hi < lo:
            times = np.empty(0, dtype=np.int64)
        else:
            times = present_times(tf, lo, hi, outages, limit, from_end, off)
        rows = build_rows(mk, tf, times, now, outages, self._faults.quiet_intervals(mk.symbol))
        return rows if price is None else mark_of(rows, tf)

    def closed(self, mk: Market, tf: int, start: float, end: float, now: float, price: str | None = None,
               off: int = 0) -> Rows:
        """Closed candles with open time in [start, end] (`price="mark"`: their mark prices)."""
        hi = min(grid_down(end, tf, off), grid_down(now, tf, off) - tf)
        return self.rows(mk, tf, grid_up(start, tf, off), hi, now, price=price, off=off)

    def forming(self, mk: Market, tf: int, now: float, off: int = 0) -> Rows:
        """The candle containing `now` (partial): one row, or none inside an outage or before the listing."""
        t = grid_down(now, tf, off)
        return self.rows(mk, tf, t, t, now, off=off)

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

    def book(self, mk: Market, now: float, depth: int) -> Book:
        """`depth` levels a side, one tick apart from the last price outwards (bids above 0 only), with
        quantities from the market's hash and the second: the same book on every dialect."""
        last, tick = self.day(mk, now).last, mk.tick_units
        lvl = np.arange(depth, dtype=np.int64)
        with np.errstate(over="ignore"):
            hq = mix64((lvl.astype(np.uint64) + np.uint64(int(now) & 0xFFFFFFFF)) * GOLDEN ^ np.uint64(mk.key))
        qty_b = (np.floor((0.1 + 5 * unit_float(hq, 0, 20)) * 100) * mk.step_units).astype(np.int64) + mk.step_units
        qty_a = (np.floor((0.1 + 5 * unit_float(hq, 20, 20)) * 100) * mk.step_units).astype(np.int64) + mk.step_units
        bids = [(p, q) for p, q in zip((last - tick * (1 + lvl)).tolist(), qty_b.tolist(), strict=True) if p > 0]
        asks = list(zip((last + tick * (1 + lvl)).tolist(), qty_a.tolist(), strict=True))
        return Book(bids, asks)
