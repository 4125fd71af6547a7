"""Truth model, part 2: which candles the exchange has at a given "now" and what they are (1m candles from
the market's hash, larger ones aggregated from them, outages cut out). Pure functions: no clock, no I/O."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .markets import GOLDEN, UNIT, Market, mix64, unit_float

#: Supported kline intervals (seconds). Up to 1d epoch aligned; 3d and 1w on a dialect's grid
#: (`DialectSpec.grid_offsets`: Binance's 3d opens at t % 3d == 1d, its 1w on Mondays); 1M is not served.
TIMEFRAMES: dict[str, int] = {
    "1m": 60,
    "3m": 180,
    "5m": 300,
    "15m": 900,
    "30m": 1800,
    "1h": 3600,
    "2h": 7200,
    "4h": 14400,
    "6h": 21600,
    "8h": 28800,
    "12h": 43200,
    "1d": 86400,
    "3d": 259200,
    "1w": 604800,
}


def grid_up(t: float, tf: int, off: int = 0) -> int:
    """The grid time (t' % tf == off) at or after `t`."""
    return math.ceil((t - off) / tf) * tf + off


def grid_down(t: float, tf: int, off: int = 0) -> int:
    """The grid time at or before `t`."""
    return math.floor((t - off) / tf) * tf + off


def timeframe_seconds(timeframe: str) -> int:
    try:
        return TIMEFRAMES[timeframe]
    except KeyError:
        raise ValueError(f"unsupported timeframe {timeframe!r}; supported: {', '.join(TIMEFRAMES)}") from None


@dataclass
class Rows:
    """Candles as parallel numpy arrays. Prices/volumes in 1e-8 units (int64)."""

    t: np.ndarray  # open time, seconds
    o: np.ndarray
    h: np.ndarray
    l: np.ndarray  # noqa: E741
    c: np.ndarray
    v: np.ndarray
    quote: np.ndarray  # float, quote asset volume
    trades: np.ndarray
    taker_base: np.ndarray
    taker_quote: np.ndarray

    def __len__(self) -> int:
        return int(self.t.shape[0])

    def as_tuples(self) -> list[tuple]:
        """(t, o, h, l, c, v) tuples with float prices, as ccxt parses klines."""
        if not len(self):
            return []
        cols = [self.o, self.h, self.l, self.c, self.v]
        fl = [(col.astype(np.float64) / UNIT).tolist() for col in cols]
        return list(zip(self.t.tolist(), *fl, strict=True))


_ANCHOR_SCALES = ((13, 0.08), (8, 0.025))  # (log2 of the anchor spacing in minutes, relative amplitude)
_CHUNK_CELLS = 1 << 16  # minute cells per vectorised block (keeps the temporaries in cache)


def _anchor_curve(m: Market, minutes: np.ndarray) -> np.ndarray:
    """A smooth-ish deterministic price factor: value noise (hash-derived anchors every 2**s minutes,
    linearly interpolated) at two scales. Only integer hashing and + - * /, so bit-reproducible."""
    out = np.ones(minutes.shape, dtype=np.float64)
    lo_min, hi_min = int(minutes.min()), int(minutes.max())
    for salt, (shift, amp) in enumerate(_ANCHOR_SCALES):
        a0, a1 = lo_min >> shift, (hi_min >> shift) + 1
        idx = np.arange(a0, a1 + 1, dtype=np.int64)
        with np.errstate(over="ignore"):
            ha = mix64((idx.view(np.uint64) * GOLDEN) ^ np.uint64(m.key ^ (0xA5A5A5A5 + salt)))
        anchors = amp * (2.0 * unit_float(ha, 11, 53) - 1.0)
        rel = (minutes >> shift) - a0
        frac = (minutes & ((1 << shift) - 1)).astype(np.float64) * (1.0 / (1 << shift))
        left = anchors[rel]
        out += left + (anchors[rel + 1] - left) * frac
    return out


def minute_block(m: Market, minutes: np.ndarray):
    """1m candle fields (o, h, l, c, v as int64 in 1e-8 units) for 2-D minute indices `minutes`
    (n x (k+1)): values for columns 0..k-1, column j+1 giving the close of column j (close == next open)."""
    with np.errstate(over="ignore"):
        h = mix64((minutes.view(np.uint64) * GOLDEN) ^ np.uint64(m.key))
    tick = m.tick_units
    # mid price: smooth factor x per-minute noise of +-0.15 %
    noise = ((h & np.uint64(0xFFFFF)).view(np.int64).astype(np.float64) * (0.003 / (1 << 20))) + (1.0 - 0.0015)
    scale = m.base_price * UNIT / tick
    mid = np.maximum(np.rint(_anchor_curve(m, minutes) * noise * scale).astype(np.int64), 1) * tick
    o = mid[:, :-1]
    c = mid[:, 1:]
    hs = h[:, :-1]
    wick_ticks = max(1, int(m.base_price * 0.0012 * UNIT / tick))
    up = ((((hs >> np.uint64(20)) & np.uint64(0xFFF)).view(np.int64) * wick_ticks) >> 12) * tick
    dn = ((((hs >> np.uint64(32)) & np.uint64(0xFFF)).view(np.int64) * wick_ticks) >> 12) * tick
    hi = np.maximum(o, c) + up
    lo = np.maximum(np.minimum(o, c) - dn, tick)
    vol_unit = max(1, int(20000.0 / m.usd_price * UNIT / 1000))  # volume 0.05x .. 2.05x of ~$20k a minute
    v = ((hs >> np.uint64(44)).view(np.int64) * (2 * vol_unit)) // (1 << 10) + 50 * vol_unit
    return o, hi, lo, c, v


def _in_intervals(t: np.ndarray, intervals: Sequence[tuple[float, float]]) -> np.ndarray:
    mask = np.zeros(t.shape, dtype=bool)
    for s, e in intervals:
        mask |= (t >= s) & (t < e)
    return mask


def present_times(tf: int, lo: int, hi: int, outages: Sequence[tuple[float, float]],
                  limit: int | None, from_end: bool, off: int = 0) -> np.ndarray:
    """Grid open times in [lo, hi] (lo, hi on the grid of offset `off`) not inside a merged outage interval;
    the first (or, from_end, the last) `limit` of them, ascending."""
    if hi < lo:
        return np.empty(0, dtype=np.int64)
    segments: list[tuple[int, int]] = []
    cur = lo
    for s, e in outages:
        if e <= cur:
            continue
        if s > hi:
            break
        last_before = grid_up(s, tf, off) - tf
        if last_before >= cur:
            segments.append((cur, min(last_before, hi)))
        cur = max(cur, grid_up(e, tf, off))
        if cur > hi:
            break
    if cur <= hi:
        segments.append((cur, hi))
    parts: list[np.ndarray] = []
    need = limit
    order = reversed(segments) if from_end else segments
    for a, b in order:
        count = (b - a) // tf + 1
        if need is not None:
            count = min(count, need)
        if count <= 0:
            break
        if from_end:
            parts.append(np.arange(b - (count - 1) * tf, b + 1, tf, dtype=np.int64))
        else:
            parts.append(np.arange(a, a + count * tf, tf, dtype=np.int64))
        if need is not None:
            need -= count
            if need <= 0:
                break
    if not parts:
        return np.empty(0, dtype=np.int64)
    if from_end:
        parts.reverse()
    return np.concatenate(parts)


def _quiet_prices(m: Market, quiet: Sequence[tuple[float, float]]) -> list[tuple[int, int, int]]:
    """(first minute, end minute, flat price) per quiet stretch: no trade, so every minute in it is
    flat at the price the market stood at when the stretch began (the open of its first minute)."""
    out = []
    for s, e in quiet:
        q0, q1 = math.ceil(s / 60), math.ceil(e / 60)
        if q1 > q0:
            price = int(minute_block(m, np.array([[q0, q0 + 1]], dtype=np.int64))[0][0, 0])
            out.append((q0, q1, price))
    return out


def build_rows(m: Market, tf: int, times: np.ndarray, now: float,
               outages: Sequence[tuple[float, float]], quiet: Sequence[tuple[float, float]] = ()) -> Rows:
    """Candles of timeframe `tf` at the given open times (none may be in an outage or after `now`),
    aggregated from the 1m candles; the 1m candle containing `now` is partial, later ones absent.
    Minutes in a `quiet` stretch had no trade: flat at the stretch's price, volume 0."""
    flat = _quiet_prices(m, quiet)
    n = int(times.shape[0])
    times = times.astype(np.int64)
    out = {name: np.empty(n, dtype=np.int64) for name in ("o", "h", "l", "c", "v")}
    k = tf // 60
    cols = np.arange(k + 1, dtype=np.int64)
    step = max(1, _CHUNK_CELLS // (k + 1))
    for a in range(0, n, step):
        t = times[a:a + step]
        grid = (t // 60)[:, None] + cols[None, :]
        o, hi, lo, c, v = minute_block(m, grid)
        first, last_start = int(t[0]), int(t[-1]) + tf - 60
        hushed = [(q0, q1, p) for q0, q1, p in flat if q0 * 60 <= last_start + 60 and q1 * 60 > first]
        if hushed:  # p is the open of the stretch's first minute, i.e. the close of the one before it
            o, hi, lo, c, v = o.copy(), hi.copy(), lo.copy(), c.copy(), v.copy()
            for q0, q1, p in hushed:
                cell = (grid[:, :-1] >= q0) & (grid[:, :-1] < q1)
                o[cell] = hi[cell] = lo[cell] = c[cell] = p
                v[cell] = 0
        masked = last_start > now - 60 or any(s <= last_start and e > first for s, e in outages)
        sl = slice(a, a + t.shape[0])
        if not masked:
            out["o"][sl] = o[:, 0]
            out["c"][sl] = c[:, -1]
            out["h"][sl] = hi.max(axis=1)
            out["l"][sl] = lo.min(axis=1)
            out["v"][sl] = v.sum(axis=1)
            continue
        starts = grid[:, :-1] * 60
        present = starts <= now
        if outages:
            present &= ~_in_intervals(starts, outages)
        partial = present & (starts + 60 > now)
        if partial.any():
            c, hi, lo, v = c.copy(), hi.copy(), lo.copy(), v.copy()
            f = np.clip((now - starts[partial]) / 60.0, 0.0, 1.0)
            tick = m.tick_units
            po, pc, ph, pl = o[partial], c[partial], hi[partial], lo[partial]
            pc2 = po + np.rint((pc - po) // tick * f).astype(np.int64) * tick
            up = (ph - np.maximum(po, pc)) // tick
            dn = (np.minimum(po, pc) - pl) // tick
            c[partial] = pc2
            hi[partial] = np.maximum(po, pc2) + np.floor(up * f).astype(np.int64) * tick
            lo[partial] = np.maximum(np.minimum(po, pc2) - np.floor(dn * f).astype(np.int64) * tick, tick)
            pv = v[partial]
            v[partial] = np.where(pv > 0, np.maximum(np.floor(pv * f).astype(np.int64), 1), 0)
        last = k - 1 - np.argmax(present[:, ::-1], axis=1)
        out["o"][sl] = o[:, 0]
        out["c"][sl] = c[np.arange(t.shape[0]), last]
        out["h"][sl] = np.where(present, hi, 0).max(axis=1)
        out["l"][sl] = np.where(present, lo, np.iinfo(np.int64).max).min(axis=1)
        out["v"][sl] = np.where(present, v, 0).sum(axis=1)
    # per-candle extras (not part of the OHLCV contract): quote volume, trades, taker volumes
    avg_price = (out["o"] + out["h"] + out["l"] + out["c"]).astype(np.float64) / (4.0 * UNIT)
    quote = out["v"].astype(np.float64) / UNIT * avg_price
    trades = np.where(out["v"] > 0, np.maximum(1, np.floor(quote / 60.0)), 0).astype(np.int64)
    taker_base = out["v"] * 12 // 25
    taker_quote = taker_base.astype(np.float64) / UNIT * avg_price
    return Rows(times, out["o"], out["h"], out["l"], out["c"], out["v"], quote, trades, taker_base, taker_quote)


def closed_candles(m: Market, tf: int, start: float, end: float, now: float,
                   outages: Sequence[tuple[float, float]]) -> list[tuple]:
    """Closed candles (t, o, h, l, c, v) with open time t in [start, end], ascending, outages applied."""
    lo = max(0, math.ceil(start / tf) * tf)
    hi = min(math.floor(end / tf) * tf, math.floor(now / tf) * tf - tf)
    times = present_times(tf, lo, hi, outages, None, False)
    return build_rows(m, tf, times, now, outages).as_tuples()


def forming_candle(m: Market, tf: int, now: float, outages: Sequence[tuple[float, float]]) -> tuple | None:
    """The candle containing `now` (partial), or None inside an outage."""
    t = math.floor(now / tf) * tf
    times = present_times(tf, t, t, outages, None, False)
    rows = build_rows(m, tf, times, now, outages).as_tuples()
    return rows[0] if rows else None
