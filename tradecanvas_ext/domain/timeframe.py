"""Timeframes and epoch alignment. Calendar units (w, M) are refused: they are not epoch-aligned."""
from __future__ import annotations

import re
from functools import lru_cache

# Largest time (or count) any edge accepts: exact in a float, so every JSON reader sees the same number, and
# far inside SQL's int64.
MAX_TIME = 2**53 - 1
_UNIT_SECONDS = {"m": 60, "h": 3600, "d": 86400}
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
    if unit in ("w", "M", "y"):
        raise ValueError(
            f"timeframe {timeframe!r}: unit {unit!r} is not supported (calendar-aligned, not epoch-aligned); "
            "use m, h or d"
        )
    if unit not in _UNIT_SECONDS:
        raise ValueError(f"timeframe {timeframe!r}: unknown unit {unit!r}; use m, h or d")
    if n < 1:
        raise ValueError(f"timeframe {timeframe!r}: the count must be at least 1")
    return n * _UNIT_SECONDS[unit]


def align_down(t: int, tf: int) -> int:
    return (int(t) // tf) * tf


def align_up(t: int, tf: int) -> int:
    return -((-int(t)) // tf) * tf


def is_aligned(t: int, tf: int) -> bool:
    return int(t) % tf == 0


def expected_latest_closed_time(now: float, tf: int) -> int:
    """Open time of the newest candle that has closed at `now` (contract section 1)."""
    return max(0, (int(now // tf) * tf) - tf)


def is_closed(candle_time: int, tf: int, now: float) -> bool:
    return candle_time + tf <= now
