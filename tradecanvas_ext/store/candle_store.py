"""CandleStore: closed candles, voids and unavailable ranges of each series, with set-based SQL only (no
per-row statements).

It takes SeriesId values only (strings are parsed at the edges) and never branches on the database: the
Dialect does that. Holes and counts come from the coverage index (store/coverage.py), updated in each
write's transaction; reads of recent candles come from the in-memory windows (store/recent_windows.py),
updated after each write commits (write-through: the store first). Locks: none of its own; the
dialect's write transaction and series locks (see store/dialect.py) make each write atomic, SeriesKeys
and RecentWindows guard their own state, and no lock is held while calling the other.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
from sqlalchemy import and_, delete, func, insert, select
from sqlalchemy.engine import Engine

from ..domain import (
    CandleBatch,
    Hole,
    SeriesId,
    align_down,
    align_up,
    covered_in_runs,
    holes_from_runs,
    list_holes,
    split_by_voids,
)
from .coverage import CoverageIndex
from .dialect import Dialect
from .reach_rows import ReachRows
from .recent_windows import WHOLE, RecentWindows, Window
from .schema import candles as C
from .schema import unavailable as U
from .schema import voids as V
from .series_keys import SeriesKeys
from .write_seq import WriteSeq

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


def _batch(rows) -> CandleBatch:
    return CandleBatch(*zip(*rows, strict=True)) if rows else CandleBatch.empty()


def _bounds(batch: CandleBatch, start: int, end: int) -> tuple[int, int]:
    """The index range of times in [start, end] of a sorted batch."""
    return (int(np.searchsorted(batch.times, int(start), side="left")),
            int(np.searchsorted(batch.times, int(end), side="right")))


def _copy(batch: CandleBatch, i: int, j: int) -> CandleBatch:
    """Rows i..j-1 as new arrays: a caller may change what it gets, never the window."""
    return CandleBatch(*(getattr(batch, f)[i:j].copy() for f in CandleBatch.__slots__))


class CandleStore:
    def __init__(self, dialect: Dialect, keys: SeriesKeys, coverage: CoverageIndex, seq: WriteSeq,
                 windows: RecentWindows, origin: str, reach: ReachRows):
        """`origin` names this process in the write notifications other processes receive; `reach` holds
        the learned history reach of each exchange, market and timeframe."""
        self._dialect, self._keys, self._coverage, self._origin = dialect, keys, coverage, origin
        self._seq, self._windows = seq, windows
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
            valid, rejected = CandleBatch.coerce(candles).split_valid(sid.tf_seconds, now, sid.signed_prices)
            if rejected:
                log.warning("%s: rejected %d candle(s), first: %s", sid, len(rejected), rejected[:3])
            valid = valid.dedupe_sorted()
            results[sid] = UpsertResult(len(valid), rejected, valid)
            if len(valid):
                prepared.append((sid, self.series_key(sid), valid))
        if not prepared:
            return results
        sql, positional = self._upsert_sql
        try:
            with self._dialect.write() as conn:
                self._dialect.lock_series(conn, [key for _, key, _ in prepared])
                for sid, key, valid in prepared:
                    n = len(valid)
                    cols = [np.full(n, key, dtype=np.int64), valid.times, valid.open, valid.high, valid.low,
                            valid.close, valid.volume]
                    for lo in range(0, n, _CHUNK):
                        rows = list(zip(*(c[lo:lo + _CHUNK].tolist() for c in cols), strict=True))
                        if not positional:
                            rows = [dict(zip(_CANDLE_COLS, r, strict=True)) for r in rows]
                        conn.exec_driver_sql(sql, rows)
                    self._coverage.record(conn, key, sid.tf_seconds, valid.times)
                    # delivered to listeners at commit, so they read what we wrote
                    self._dialect.notify(conn, sid, int(valid.times[0]), int(valid.times[-1]), self._origin)
                seqs = self._seq.bump(conn, [key for _, key, _ in prepared])
        except BaseException:
            for sid, _, _ in prepared:  # committed or not is unknown: the windows reload
                self._windows.invalidate(sid)
            raise
        written: dict[SeriesId, tuple[int, list[CandleBatch]]] = {}
        for sid, key, valid in prepared:  # a series listed twice: its batches in order, last wins
            written.setdefault(sid, (key, []))[1].append(valid)
        for sid, (key, parts) in written.items():  # after the commit: write-through
            self._windows.wrote(sid, key, seqs[key], parts[0] if len(parts) == 1 else
                                CandleBatch.concat(parts).dedupe_sorted())
        return results

    # ---- the write sequence -----------------------------------------------------------------------
    def write_seq(self, sid: SeriesId) -> int:
        """The series' write sequence as the store holds it now (bumped by every transaction that writes
        its candles or voids, in any process): what a cache of answers is tagged with. A loaded window
        behind it is dropped, so every read after this one sees at least this state."""
        key = self.series_key(sid)
        seq = self._seq.current(key)
        self._windows.drop_behind(sid, seq)
        return seq

    # ---- the recent window ------------------------------------------------------------------------
    def _window(self, sid: SeriesId) -> Window | None:
        """The series' recent window, loaded on first use (None when windows are off)."""
        if not self._windows.enabled:
            return None
        w = self._windows.get(sid)
        if w is not None:
            return w
        key, size = self.series_key(sid), self._windows.size
        ticket = self._windows.ticket(sid, key)
        q = (select(C.c.candle_time, C.c.open, C.c.high, C.c.low, C.c.close, C.c.volume)
             .where(C.c.series_key == key).order_by(C.c.candle_time.desc()).limit(size))
        with self._dialect.snapshot() as conn:  # the sequence and the candles of one state
            seq = self._seq.read(conn, [key]).get(key, 0)
            batch = _batch(conn.execute(q).all()[::-1])
        lo = WHOLE if len(batch) < size else int(batch.times[0])
        self._windows.install(sid, ticket, seq, batch, lo)
        return Window(batch, lo)  # this read's own snapshot serves it either way

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
        return _batch(rows)

    def read_tail(self, sid: SeriesId, limit: int) -> CandleBatch:
        w = self._window(sid) if limit <= self._windows.size else None
        if w is not None and (len(w.batch) >= limit or w.lo == WHOLE):
            n = len(w.batch)
            return _copy(w.batch, max(0, n - max(0, int(limit))), n)
        return self._select(self.series_key(sid), (), order_desc=True, limit=limit)

    def read_after(self, sid: SeriesId, since: int, limit: int) -> CandleBatch:
        w = self._window(sid)
        if w is not None and align_down(int(since), sid.tf_seconds) + sid.tf_seconds >= w.lo:
            i = int(np.searchsorted(w.batch.times, int(since), side="right"))
            return _copy(w.batch, i, i + max(0, int(limit)))
        return self._select(self.series_key(sid), (C.c.candle_time > int(since),), limit=limit)

    def read_between(self, sid: SeriesId, start: int, end: int, limit: int | None = None) -> CandleBatch:
        w = self._window(sid)
        if w is not None and align_up(int(start), sid.tf_seconds) >= w.lo:
            i, j = _bounds(w.batch, start, end)
            return _copy(w.batch, i, j if limit is None else min(j, i + max(0, int(limit))))
        return self._select(self.series_key(sid),
                            (C.c.candle_time >= int(start), C.c.candle_time <= int(end)), limit=limit)

    def times_between(self, sid: SeriesId, start: int, end: int) -> np.ndarray:
        w = self._window(sid)
        if w is not None and align_up(int(start), sid.tf_seconds) >= w.lo:
            i, j = _bounds(w.batch, start, end)
            return w.batch.times[i:j].copy()
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
        w = self._windows.get(sid)  # only a window already loaded: this alone never loads one
        if w is not None and (len(w.batch) or w.lo == WHOLE):
            return int(w.batch.times[-1]) if len(w.batch) else None
        v = self._agg(sid, func.max(C.c.candle_time))
        return None if v is None else int(v)

    def first_time(self, sid: SeriesId) -> int | None:
        v = self._agg(sid, func.min(C.c.candle_time))
        return None if v is None else int(v)

    def count_between(self, sid: SeriesId, start: int, end: int) -> int:
        return covered_in_runs(*self._coverage.runs(self.series_key(sid), start, end), start, end,
                               sid.tf_seconds)

    def stats(self, sid: SeriesId) -> dict:
        first, head, count = self._coverage.totals(self.series_key(sid), sid.tf_seconds)
        return {"first_time": first, "head_time": head, "candle_count": count}

    def raw_holes(self, sid: SeriesId, start: int, end: int) -> list[Hole]:
        """Holes in [start, end] from the coverage index (costs the runs in the window, not the candles),
        or from the recent window when [start, end] lies inside it (no SQL)."""
        tf = sid.tf_seconds
        s, e = align_up(start, tf), align_down(end, tf)
        if e < s:
            return []
        w = self._windows.get(sid)  # a loaded window holds every candle from its lo: the same rule on it
        if w is not None and s >= w.lo:
            return list_holes(w.batch.times, s, e, tf)
        return holes_from_runs(*self._coverage.runs(self.series_key(sid), s, e), s, e, tf)

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

    # ---- the coverage index on demand (`tradecanvas coverage verify|rebuild`) ------------------------
    def verify_coverage(self) -> list[str]:
        """The series ids whose coverage runs differ from their candles ([] = right); a mismatch marks the
        store, so the next open rebuilds it even if nobody asks."""
        bad = self._coverage.verify()
        return self._keys.ids_of(bad) if bad else []

    def rebuild_coverage(self) -> int:
        """Recompute every series' coverage runs from its candles and move every write sequence in the same
        transaction, so the recent windows and kept answers of every process built on the old runs are
        dropped. Returns the number of series."""
        with self._dialect.write() as conn:
            self._dialect.lock_store(conn)
            self._coverage.rebuild_in(conn, None)
            keys = self._keys.all_keys(conn)
            if keys:
                self._seq.bump(conn, keys)
        self._windows.invalidate_all()
        return len(keys)

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
        try:
            with self._dialect.write() as conn:
                self._dialect.lock_series(conn, [key])
                conn.execute(delete(table).where(table.c.series_key == key,
                                                 table.c.start_time.in_([r["start_time"] for r in rows])))
                conn.execute(insert(table), rows)
                # the holes' void / unavailable parts changed: kept answers are stale
                seq = self._seq.bump(conn, [key])[key]
        except BaseException:
            self._windows.invalidate(sid)
            raise
        self._windows.wrote(sid, key, seq, CandleBatch.empty())  # candles unchanged: the window moves on

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
        try:
            with self._dialect.write() as conn:
                self._dialect.lock_series(conn, [key])
                conn.execute(delete(table).where(table.c.series_key == key,
                                                 table.c.start_time.in_([v.start for v in hit])))
                if keep:
                    conn.execute(insert(table), [{"series_key": key, "start_time": s, "end_time": e,
                                                  "source": v.source, "checked_at": v.checked_at}
                                                 for v, (s, e) in keep])
                seq = self._seq.bump(conn, [key])[key]  # as in _record_ranges: kept answers are stale
        except BaseException:
            self._windows.invalidate(sid)
            raise
        self._windows.wrote(sid, key, seq, CandleBatch.empty())
        return len(hit)
