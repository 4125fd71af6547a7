"""CandleStore: closed candles, voids and unavailable ranges of each series, with set-based SQL only (no
per-row statements).

It takes SeriesId values only (strings are parsed at the edges) and never branches on the database: the
Dialect does that. Locks: none of its own; the dialect's write transaction (see store/dialect.py) makes
each write atomic, and SeriesKeys guards its own cache.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
from sqlalchemy import and_, delete, func, insert, select
from sqlalchemy.engine import Engine

from ..domain import CandleBatch, Hole, SeriesId, align_down, align_up, split_by_voids
from .dialect import Dialect
from .reach_rows import ReachRows
from .schema import candles as C
from .schema import unavailable as U
from .schema import voids as V
from .series_keys import SeriesKeys

log = logging.getLogger(__name__)

_CHUNK = 50_000
_CANDLE_COLS = ("series_key", "candle_time", "open", "high", "low", "close", "volume")


@dataclass(frozen=True)
class UpsertResult:
    accepted: int
    rejected: list[tuple[int, str]] = field(default_factory=list)
    candles: CandleBatch = field(default_factory=CandleBatch.empty)  # what was written: valid, sorted, unique


@dataclass(frozen=True)
class Void:
    start: int
    end: int
    source: str
    checked_at: float

    def to_dict(self) -> dict:
        return {"start": self.start, "end": self.end, "source": self.source, "checked_at": self.checked_at}


def _compile_upsert(engine: Engine) -> tuple[str, bool]:
    """One INSERT .. ON CONFLICT DO UPDATE statement, run by the driver's executemany (both dialects
    spell it the same; only the driver's parameter style differs)."""
    d = engine.dialect
    cols = ", ".join(_CANDLE_COLS)
    positional = d.paramstyle in ("qmark", "format", "numeric")
    if d.paramstyle == "qmark":
        params = ", ".join("?" for _ in _CANDLE_COLS)
    elif d.paramstyle == "format":
        params = ", ".join("%s" for _ in _CANDLE_COLS)
    else:
        params = ", ".join(f"%({c})s" for c in _CANDLE_COLS)
    updates = ", ".join(f"{c} = excluded.{c}" for c in _CANDLE_COLS[2:])
    sql = (f"INSERT INTO tc_candles ({cols}) VALUES ({params}) "
           f"ON CONFLICT (series_key, candle_time) DO UPDATE SET {updates}")
    return sql, positional


class CandleStore:
    def __init__(self, dialect: Dialect, keys: SeriesKeys, origin: str, reach: ReachRows):
        """`origin` names this process in the write notifications other processes receive; `reach` holds
        the learned history reach of each exchange, market and timeframe."""
        self._dialect, self._keys, self._origin = dialect, keys, origin
        self.reach = reach
        self._upsert_sql = _compile_upsert(dialect.engine)

    @property
    def db_url(self) -> str:
        return self._dialect.url

    @property
    def engine(self) -> Engine:
        return self._dialect.engine

    # ---- series -----------------------------------------------------------------------------------
    def series_key(self, sid: SeriesId) -> int:
        return self._keys.key(sid)

    def known_series(self) -> list[str]:
        return self._keys.known()

    # ---- candles ----------------------------------------------------------------------------------
    def upsert_closed(self, sid: SeriesId, candles, now: float | None = None) -> UpsertResult:
        """Bulk, idempotent; last write wins per time. Invalid, unaligned or (given `now`) not-yet-closed
        candles are rejected with a reason and the rest are stored."""
        return self.upsert_closed_many([(sid, candles)], now)[sid]

    def upsert_closed_many(self, items: Iterable[tuple[SeriesId, object]],
                           now: float | None = None) -> dict[SeriesId, UpsertResult]:
        """`upsert_closed` for several series in ONE write transaction (the bot loop's ingest of every
        series that got a new candle): one commit instead of one per series."""
        prepared = []
        results: dict[SeriesId, UpsertResult] = {}
        for sid, candles in items:
            valid, rejected = CandleBatch.coerce(candles).split_valid(sid.tf_seconds, now)
            if rejected:
                log.warning("%s: rejected %d candle(s), first: %s", sid, len(rejected), rejected[:3])
            valid = valid.dedupe_sorted()
            results[sid] = UpsertResult(len(valid), rejected, valid)
            if len(valid):
                prepared.append((sid, self.series_key(sid), valid))
        if not prepared:
            return results
        sql, positional = self._upsert_sql
        with self._dialect.write() as conn:
            for sid, key, valid in prepared:
                n = len(valid)
                cols = [np.full(n, key, dtype=np.int64), valid.times, valid.open, valid.high, valid.low,
                        valid.close, valid.volume]
                for lo in range(0, n, _CHUNK):
                    rows = list(zip(*(c[lo:lo + _CHUNK].tolist() for c in cols), strict=True))
                    if not positional:
                        rows = [dict(zip(_CANDLE_COLS, r, strict=True)) for r in rows]
                    conn.exec_driver_sql(sql, rows)
                # delivered to listeners at commit, so they read what we wrote
                self._dialect.notify(conn, sid, int(valid.times[0]), int(valid.times[-1]), self._origin)
        return results

    def _select(self, key: int, where, order_desc: bool = False, limit: int | None = None):
        q = select(C.c.candle_time, C.c.open, C.c.high, C.c.low, C.c.close, C.c.volume).where(
            C.c.series_key == key, *where)
        q = q.order_by(C.c.candle_time.desc() if order_desc else C.c.candle_time)
        if limit is not None:
            q = q.limit(int(limit))
        with self._dialect.read() as conn:
            rows = conn.execute(q).all()
        if order_desc:
            rows.reverse()
        if not rows:
            return CandleBatch.empty()
        return CandleBatch(*zip(*rows, strict=True))

    def read_tail(self, sid: SeriesId, limit: int) -> CandleBatch:
        return self._select(self.series_key(sid), (), order_desc=True, limit=limit)

    def read_after(self, sid: SeriesId, since: int, limit: int) -> CandleBatch:
        return self._select(self.series_key(sid), (C.c.candle_time > int(since),), limit=limit)

    def read_between(self, sid: SeriesId, start: int, end: int, limit: int | None = None) -> CandleBatch:
        return self._select(self.series_key(sid),
                            (C.c.candle_time >= int(start), C.c.candle_time <= int(end)), limit=limit)

    def times_between(self, sid: SeriesId, start: int, end: int) -> np.ndarray:
        key = self.series_key(sid)
        q = select(C.c.candle_time).where(C.c.series_key == key, C.c.candle_time >= int(start),
                                          C.c.candle_time <= int(end)).order_by(C.c.candle_time)
        with self._dialect.read() as conn:  # scalars().all(): a third faster than iterating Row objects
            return np.array(conn.execute(q).scalars().all(), dtype=np.int64)

    def _agg(self, sid: SeriesId, agg, start: int | None = None, end: int | None = None):
        key = self.series_key(sid)
        where = [C.c.series_key == key]
        if start is not None:
            where.append(C.c.candle_time >= int(start))
        if end is not None:
            where.append(C.c.candle_time <= int(end))
        with self._dialect.read() as conn:
            return conn.execute(select(agg).where(*where)).scalar()

    def head_time(self, sid: SeriesId) -> int | None:
        v = self._agg(sid, func.max(C.c.candle_time))
        return None if v is None else int(v)

    def first_time(self, sid: SeriesId) -> int | None:
        v = self._agg(sid, func.min(C.c.candle_time))
        return None if v is None else int(v)

    def count_between(self, sid: SeriesId, start: int, end: int) -> int:
        return int(self._agg(sid, func.count(), start, end) or 0)

    def stats(self, sid: SeriesId) -> dict:
        key = self.series_key(sid)
        where = C.c.series_key == key
        with self._dialect.read() as conn:  # separate aggregates: MIN and MAX alone are index probes
            first = conn.execute(select(func.min(C.c.candle_time)).where(where)).scalar()
            head = conn.execute(select(func.max(C.c.candle_time)).where(where)).scalar()
            count = conn.execute(select(func.count()).where(where)).scalar()
        return {"first_time": None if first is None else int(first),
                "head_time": None if head is None else int(head), "candle_count": int(count)}

    def raw_holes(self, sid: SeriesId, start: int, end: int) -> list[Hole]:
        """Holes in [start, end] computed by the database: LAG() over the window's candle times."""
        tf = sid.tf_seconds
        s, e = align_up(start, tf), align_down(end, tf)
        if e < s:
            return []
        key = self.series_key(sid)
        inner = select(
            C.c.candle_time.label("t"),
            func.lag(C.c.candle_time).over(order_by=C.c.candle_time).label("prev"),
        ).where(C.c.series_key == key, C.c.candle_time >= s, C.c.candle_time <= e).subquery()
        gaps = select(inner.c.prev, inner.c.t).where(inner.c.t - inner.c.prev > tf).order_by(inner.c.t)
        in_window = (C.c.series_key == key, C.c.candle_time >= s, C.c.candle_time <= e)
        with self._dialect.read() as conn:
            # Two single-aggregate queries: each is one index probe (a combined MIN, MAX scans).
            lo = conn.execute(select(func.min(C.c.candle_time)).where(*in_window)).scalar()
            if lo is None:
                return [Hole(s, e, (e - s) // tf + 1)]
            hi = conn.execute(select(func.max(C.c.candle_time)).where(*in_window)).scalar()
            n = conn.execute(select(func.count()).where(*in_window)).scalar()
            full = (hi - lo) // tf + 1 == n  # no inner hole: skip the window function
            inner_rows = [] if full else conn.execute(gaps).all()
        out: list[Hole] = []
        if lo > s:
            out.append(Hole(s, int(lo) - tf, (int(lo) - s) // tf))
        out.extend(Hole(int(p) + tf, int(t) - tf, (int(t) - int(p)) // tf - 1) for p, t in inner_rows)
        if hi < e:
            out.append(Hole(int(hi) + tf, e, (e - int(hi)) // tf))
        return out

    def holes(self, sid: SeriesId, start: int, end: int) -> list[Hole]:
        """Holes in the window, each cut into parts that are confirmed voids (void=True), parts older than
        the exchange serves (unavailable=True) and open parts."""
        raw = self.raw_holes(sid, start, end)
        if not raw:
            return raw
        vs = self.voids(sid, start, end)
        us = self.unavailable(sid, start, end)
        if not vs and not us:
            return raw
        return split_by_voids(raw, [(v.start, v.end) for v in vs], sid.tf_seconds,
                              [(u.start, u.end) for u in us])

    # ---- voids ------------------------------------------------------------------------------------
    def record_void(self, sid: SeriesId, start: int, end: int, source: str, checked_at: float) -> None:
        """A range a source confirmed it has no data for. Re-recording a start refreshes checked_at."""
        tf = sid.tf_seconds
        s, e = align_up(start, tf), align_down(end, tf)
        if e < s:
            return
        self.record_voids(sid, [(s, e)], source, checked_at)

    def record_voids(self, sid: SeriesId, ranges: Iterable[tuple[int, int]], source: str,
                     checked_at: float) -> None:
        self._record_ranges(V, sid, ranges, source, checked_at)

    def voids(self, sid: SeriesId, start: int | None = None, end: int | None = None) -> list[Void]:
        return self._ranges(V, sid, start, end)

    def clear_voids(self, sid: SeriesId, start: int, end: int) -> int:
        """Forget the voids inside [start, end] (a repair found they were no evidence); a void reaching
        past the range is cut back to what lies outside it. Returns how many records changed."""
        return self._clear_ranges(V, sid, start, end)

    # ---- unavailable (older than the exchange's reach) ----------------------------------------
    def record_unavailable(self, sid: SeriesId, ranges: Iterable[tuple[int, int]], source: str,
                           checked_at: float) -> None:
        """Ranges older than what the exchange serves; re-recording a start refreshes checked_at."""
        self._record_ranges(U, sid, ranges, source, checked_at)

    def unavailable(self, sid: SeriesId, start: int | None = None, end: int | None = None) -> list[Void]:
        return self._ranges(U, sid, start, end)

    def clear_unavailable(self, sid: SeriesId, start: int, end: int) -> int:
        return self._clear_ranges(U, sid, start, end)

    def _record_ranges(self, table, sid: SeriesId, ranges: Iterable[tuple[int, int]], source: str,
                       checked_at: float) -> None:
        key = self.series_key(sid)
        rows = [{"series_key": key, "start_time": int(s), "end_time": int(e), "source": source,
                 "checked_at": float(checked_at)} for s, e in ranges]
        if not rows:
            return
        with self._dialect.write() as conn:
            conn.execute(delete(table).where(table.c.series_key == key,
                                             table.c.start_time.in_([r["start_time"] for r in rows])))
            conn.execute(insert(table), rows)

    def _ranges(self, table, sid: SeriesId, start: int | None, end: int | None) -> list[Void]:
        key = self.series_key(sid)
        where = [table.c.series_key == key]
        if end is not None:
            where.append(table.c.start_time <= int(end))
        if start is not None:
            where.append(table.c.end_time >= int(start))
        q = select(table.c.start_time, table.c.end_time, table.c.source, table.c.checked_at).where(
            and_(*where)).order_by(table.c.start_time)
        with self._dialect.read() as conn:
            return [Void(int(a), int(b), s, float(c)) for a, b, s, c in conn.execute(q)]

    def _clear_ranges(self, table, sid: SeriesId, start: int, end: int) -> int:
        tf = sid.tf_seconds
        key = self.series_key(sid)
        hit = self._ranges(table, sid, start, end)
        if not hit:
            return 0
        keep = [(v, (v.start, start - tf)) for v in hit if v.start < start]
        keep += [(v, (end + tf, v.end)) for v in hit if v.end > end]
        with self._dialect.write() as conn:
            conn.execute(delete(table).where(table.c.series_key == key,
                                             table.c.start_time.in_([v.start for v in hit])))
            if keep:
                conn.execute(insert(table), [{"series_key": key, "start_time": s, "end_time": e,
                                              "source": v.source, "checked_at": v.checked_at}
                                             for v, (s, e) in keep])
        return len(hit)
