"""Timeframes and their candle grid. Up to `1d` the grid is epoch-aligned (`t % tf == 0`); `1w` candles open
on Monday 00:00 UTC (the epoch was a Thursday); a grid of several days is the exchange's (`exchange_grid`:
Binance's 3d opens on 1970-01-02 + k x 3d) and is refused where it is not known. Months are refused: not a
fixed length. Every alignment of the package goes through `align_down` / `align_up` / `is_aligned`, so every
hole computation steps on the grid (a `Grid` carries its offset into them)."""
from __future__ import annotations

import math
import re
from functools import lru_cache

# Largest time (or count) any edge accepts: exact in a float, so every JSON reader sees the same number, and
# far inside SQL's int64.
MAX_TIME = 2**53 - 1
_UNIT_SECONDS = {"m": 60, "h": 3600, "d": 86400}
WEEK = 604_800
WEEK_OFFSET = 4 * 86_400  # 1970-01-05, the first Monday: weekly candles open on Mondays 00:00 UTC
_TF_RE = re.compile(r"^([0-9]+)([a-zA-Z]+)$")


@lru_cache(maxsize=256)
def timeframe_to_seconds(timeframe: str) -> int:
    """`5m` -> 300. Raises ValueError naming what is wrong with the timeframe."""
    if not isinstance(timeframe, str) or not timeframe:
        raise ValueError(f"timeframe must be a non-empty string like '1m', '1h' or '1d', got {timeframe!r}")
    m = _TF_RE.match(timeframe)
    if not m:
        raise ValueError(f"timeframe {timeframe!r} is not of the form <n>m, <n>h or <n>d")
    n, unit = int(m.group(1)), m.group(2)
    if unit == "w":
        if n != 1:
            raise ValueError(f"timeframe {timeframe!r}: only 1w is supported (Monday-aligned weeks)")
        return WEEK
    if unit in ("M", "y"):
        raise ValueError(
            f"timeframe {timeframe!r}: unit {unit!r} is not supported (calendar months are not a fixed "
            "length); use m, h, d or 1w"
        )
    if unit not in _UNIT_SECONDS:
        raise ValueError(f"timeframe {timeframe!r}: unknown unit {unit!r}; use m, h or d")
    if n < 1:
        raise ValueError(f"timeframe {timeframe!r}: the count must be at least 1")
    return n * _UNIT_SECONDS[unit]


# Grids of several days are the exchange's own: where its first candle of the grid opens after the epoch, per
# (ccxt exchange id, timeframe). Binance (spot and USD-M futures, one kline service): 3d candles open at
# t % 259200 == 86400 (1970-01-02 + k x 3 days; e.g. 1502668800 = 2017-08-14, a Binance 3d open time): see
# docs/emulator-dialects.md (Binance, "3d and 1w") for where this was read and what is assumed.
EXCHANGE_GRID_OFFSETS: dict[tuple[str, str], int] = {("binance", "3d"): 86_400, ("binanceusdm", "3d"): 86_400}
_DAY = _UNIT_SECONDS["d"]


class Grid(int):
    """A timeframe's length in seconds on a grid that does not start at the epoch: an int (every length
    computation is unchanged) that carries the grid's `offset` into `align_down` / `align_up` / `is_aligned`.
    Arithmetic on it gives plain ints: only the timeframe itself knows its grid."""

    offset: int

    def __new__(cls, seconds: int, offset: int) -> Grid:
        self = super().__new__(cls, seconds)
        self.offset = int(offset) % int(seconds)
        return self

    def __reduce__(self):
        return Grid, (int(self), self.offset)

    def __repr__(self) -> str:
        return f"Grid({int(self)}, offset={self.offset})"


@lru_cache(maxsize=1024)
def exchange_grid(exchange: str, timeframe: str) -> int:
    """`timeframe`'s seconds on `exchange`'s candle grid: a plain int on the epoch grid (Monday for 1w), a
    `Grid` where the exchange's grid is offset. A timeframe of several days whose grid on this exchange is
    not known is refused (ValueError naming both), never guessed."""
    tf = timeframe_to_seconds(timeframe)
    offset = EXCHANGE_GRID_OFFSETS.get((exchange, timeframe))
    if offset is not None:
        return Grid(tf, offset)
    if tf > _DAY and tf != WEEK:
        known = ", ".join(f"{t} on {e}" for e, t in sorted(EXCHANGE_GRID_OFFSETS))
        raise ValueError(
            f"timeframe {timeframe!r} on exchange {exchange!r}: where its candles open on this exchange's grid "
            f"is not known (known: {known}); use a timeframe up to 1d, or 1w")
    return tf


def grid_offset(tf: int) -> int:
    """Where the grid of `tf` starts relative to the epoch: the exchange's for a `Grid`, Monday for 1w, 0
    otherwise."""
    if isinstance(tf, Grid):
        return tf.offset
    return WEEK_OFFSET if tf == WEEK else 0


def align_down(t: int, tf: int) -> int:
    """The grid time at or before `t`."""
    off = grid_offset(tf)
    return ((math.floor(t) - off) // tf) * tf + off


def align_up(t: int, tf: int) -> int:
    """The grid time at or after `t`."""
    off = grid_offset(tf)
    return -((off - math.ceil(t)) // tf) * tf + off


def is_aligned(t: int, tf: int) -> bool:
    return (int(t) - grid_offset(tf)) % tf == 0


def unaligned(times, tf: int):
    """Vectorised: which of `times` (a numpy array) are off the grid."""
    return (times - grid_offset(tf)) % tf != 0


def expected_latest_closed_time(now: float, tf: int) -> int:
    """Open time of the newest candle that has closed at `now` (contract section 1)."""
    return max(0, align_down(now, tf) - tf)


def is_closed(candle_time: int, tf: int, now: float) -> bool:
    return candle_time + tf <= now
