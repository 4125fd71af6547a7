"""ReachRows: the learned history reach per exchange, market and timeframe (tc_reach), with when it was learned.

It stores what a range source learned; whether a reach is still fresh is the source's rule (sources/reach.py).
Locks: none of its own; each put is one atomic upsert of the dialect.
"""
from __future__ import annotations

from sqlalchemy import select

from ..domain import SeriesId
from .dialect import Dialect
from .schema import reach as R


class ReachRows:
    def __init__(self, dialect: Dialect):
        self._dialect = dialect

    def learned_reach(self, sid: SeriesId) -> tuple[int, float] | None:
        """(candles, learned_at) last learned for the series' exchange, market and timeframe, or None."""
        q = select(R.c.candles, R.c.learned_at).where(
            R.c.exchange == sid.exchange, R.c.market == sid.market, R.c.timeframe == sid.timeframe)
        with self._dialect.read() as conn:
            row = conn.execute(q).first()
        return None if row is None else (int(row[0]), float(row[1]))

    def record_reach(self, sid: SeriesId, candles: int, learned_at: float) -> None:
        values = {"candles": int(candles), "learned_at": float(learned_at)}
        stmt = self._dialect.insert(R).values(exchange=sid.exchange, market=sid.market,
                                              timeframe=sid.timeframe, **values)
        stmt = stmt.on_conflict_do_update(index_elements=["exchange", "market", "timeframe"], set_=values)
        with self._dialect.write() as conn:
            conn.execute(stmt)
