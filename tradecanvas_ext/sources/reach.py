"""History reach: how far back an exchange serves one timeframe of a market (contract section 1), as a value.

Pure: it never asks an exchange or a store; the known reaches live in exchange_facts.py, learned ones in the
store (store/reach_rows.py).
"""
from __future__ import annotations

from dataclasses import dataclass

from ..domain import align_down

RELEARN_AFTER_S = 86_400.0  # a learned reach is trusted for a day, then learned again


@dataclass(frozen=True)
class Reach:
    """How far back an exchange serves one timeframe of a market: its latest `candles` grid times (the
    forming one included), known (freqtrade's records, the exchange's documentation) or learned from an
    answer at `learned_at`. Older times are *unavailable*: never fetched, never a void."""

    candles: int
    learned_at: float
    how: str = "learned"  # "known" | "learned"

    def oldest(self, now: float, tf: int) -> int:
        """The oldest grid time the exchange serves at `now`."""
        return align_down(now, tf) - (self.candles - 1) * tf

    def fresh(self, now: float) -> bool:
        """A known reach always is; a learned one for a day."""
        return self.how == "known" or now - self.learned_at < RELEARN_AFTER_S


def reach_from_oldest(oldest: int, now: float, tf: int, learned_at: float) -> Reach:
    """The reach of an exchange whose oldest served candle at `now` is `oldest`."""
    return Reach(max(1, (align_down(now, tf) - oldest) // tf + 1), learned_at)


def effective_reach(known: Reach | None, learned: Reach | None, now: float) -> Reach | None:
    """The reach to use at `now`: a fresh learned one (what the exchange showed), else the known one."""
    if learned is not None and learned.fresh(now):
        return learned
    return known


def split_by_reach(ranges: list[tuple[int, int]], oldest: int | None, tf: int
                   ) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """(inside, unavailable): the ranges cut at `oldest`, the oldest time the exchange serves."""
    if oldest is None:
        return list(ranges), []
    inside = [(max(s, oldest), e) for s, e in ranges if e >= oldest]
    older = [(s, min(e, oldest - tf)) for s, e in ranges if s < oldest]
    return inside, older
