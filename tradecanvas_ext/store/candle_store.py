"""CandleStore: closed candles, voids and tracker rows, with set-based SQL only (no per-row statements).

Threads: SQLAlchemy's pool gives each thread its own connection. On SQLite, `_write_lock` serialises
this process's write transactions and `BEGIN IMMEDIATE` + busy_timeout serialise them across processes
on one file (WAL lets readers run alongside). `_keys_lock` protects the series_id -> key cache.
"""
from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Iterable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sqlalchemy import and_, create_engine, delete, event, func, insert, select, text
from sqlalchemy.engine import Engine

from ..domain import CandleBatch, Hole, SeriesId, align_down, align_up, split_by_voids
from . import schema
from .leases import FileLeases, LeaseTimeout, PostgresLeases  # noqa: F401 - LeaseTimeout re-exported
from .schema import candles as C
from .schema import voids as V

log = logging.getLogger(__name__)

_CHUNK = 50_000
NOTIFY_CHANNEL = "tc_candles"
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


def _sid(series_id: SeriesId | str) -> SeriesId:
    return series_id if isinstance(series_id, SeriesId) else SeriesId.parse(series_id)


def _make_engine(db_url: str) -> Engine:
    if db_url.startswith("sqlite"):
        path = db_url.split(":///", 1)[1] if ":///" in db_url else ""
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(db_url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn, _record):
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (below)
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn):
            write = conn.get_execution_options().get("tc_write", False)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

        return engine
    return create_engine(db_url, pool_pre_ping=True, pool_size=10, max_overflow=20)


class CandleStore:
    def __init__(self, db_url: str, *, create: bool = True):
        self.db_url = db_url
        self.engine = _make_engine(db_url)
        self.dialect = self.engine.dialect.name
        self._write_lock = threading.Lock() if self.dialect == "sqlite" else None
        self._keys: dict[str, int] = {}
        self._keys_lock = threading.Lock()
        self._upsert_sql = self._compile_upsert()
        self.origin = uuid.uuid4().hex  # who wrote a change, in notifications to other processes
        self.notify_writes = self.dialect == "postgresql"
        if self.dialect == "postgresql":
            self.leases = PostgresLeases(self.engine)
        else:
            path = db_url.split(":///", 1)[1] if ":///" in db_url else ""
            self.leases = FileLeases(f"{path}.repair-locks") if path and path != ":memory:" else None
        if create:
            self.create_schema()

    # ---- plumbing -------------------------------------------------------------------------------
    def create_schema(self) -> None:
        with self._write() as conn:
            if self.dialect == "postgresql":  # several processes may start at once
                conn.execute(text("SELECT pg_advisory_xact_lock(7710001)"))
            schema.metadata.create_all(conn, checkfirst=True)

    @contextmanager
    def _write(self):
        lock = self._write_lock
        if lock is not None:
            lock.acquire()
        try:
            with self.engine.connect() as conn:
                conn.execution_options(tc_write=True)
                with conn.begin():
                    yield conn
        finally:
            if lock is not None:
                lock.release()

    @contextmanager
    def _read(self):
        with self.engine.connect() as conn:
            yield conn

    def _insert(self, table):
        if self.dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as dialect_insert
        else:
            from sqlalchemy.dialects.sqlite import insert as dialect_insert
        return dialect_insert(table)

    def close(self) -> None:
        if isinstance(self.leases, FileLeases):
            self.leases.close()
        self.engine.dispose()

    @contextmanager
    def repair_lease(self, series_id, timeout_s: float):
        """Held while one process repairs a series; others wait (LeaseTimeout past `timeout_s`)."""
        if self.leases is None:
            yield
            return
        with self.leases.hold(self.series_key(series_id), timeout_s):
            yield

    def _compile_upsert(self) -> tuple[str, bool]:
        """One INSERT .. ON CONFLICT DO UPDATE statement, run by the driver's executemany."""
        d = self.engine.dialect
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

    # ---- series -----------------------------------------------------------------------------------
    def series_key(self, series_id: SeriesId | str) -> int:
        sid = _sid(series_id)
        key = str(sid)
        with self._keys_lock:
            if key in self._keys:
                return self._keys[key]
        with self._read() as conn:
            found = conn.execute(select(schema.series.c.series_key).where(
                schema.series.c.series_id == key)).scalar()
        if found is None:
            with self._write() as conn:  # ON CONFLICT: another process may create it at the same time
                conn.execute(self._insert(schema.series).values(series_id=key, tf_seconds=sid.tf_seconds)
                             .on_conflict_do_nothing(index_elements=["series_id"]))
                found = conn.execute(select(schema.series.c.series_key).where(
                    schema.series.c.series_id == key)).scalar_one()
        with self._keys_lock:
            self._keys[key] = int(found)
        return int(found)

    def known_series(self) -> list[str]:
        with self._read() as conn:
            return [r[0] for r in conn.execute(select(schema.series.c.series_id).order_by(
                schema.series.c.series_id))]

    # ---- candles ----------------------------------------------------------------------------------
    def upsert_closed(self, series_id: SeriesId | str, candles, now: float | None = None) -> UpsertResult:
        """Bulk, idempotent; last write wins per time. Invalid, unaligned or (given `now`) not-yet-closed
        candles are rejected with a reason and the rest are stored."""
        sid = _sid(series_id)
        return self.upsert_closed_many([(sid, candles)], now)[sid]

    def upsert_closed_many(self, items, now: float | None = None) -> dict[SeriesId, UpsertResult]:
        """`upsert_closed` for several series in ONE write transaction (the bot loop's ingest of every
        series that got a new candle): one commit instead of one per series."""
        prepared = []
        results: dict[str, UpsertResult] = {}
        for series_id, candles in items:
            sid = _sid(series_id)
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
        with self._write() as conn:
            for sid, key, valid in prepared:
                n = len(valid)
                cols = [np.full(n, key, dtype=np.int64), valid.times, valid.open, valid.high, valid.low,
                        valid.close, valid.volume]
                for lo in range(0, n, _CHUNK):
                    rows = list(zip(*(c[lo:lo + _CHUNK].tolist() for c in cols), strict=True))
                    if not positional:
                        rows = [dict(zip(_CANDLE_COLS, r, strict=True)) for r in rows]
                    conn.exec_driver_sql(sql, rows)
                if self.notify_writes:  # delivered to LISTENers at commit, so they read what we wrote
                    payload = json.dumps({"s": str(sid), "a": int(valid.times[0]), "b": int(valid.times[-1]),
                                          "o": self.origin})
                    conn.execute(text("SELECT pg_notify(:ch, :p)"), {"ch": NOTIFY_CHANNEL, "p": payload})
        return results

    def _select(self, key: int, where, order_desc: bool = False, limit: int | None = None):
        q = select(C.c.candle_time, C.c.open, C.c.high, C.c.low, C.c.close, C.c.volume).where(
            C.c.series_key == key, *where)
        q = q.order_by(C.c.candle_time.desc() if order_desc else C.c.candle_time)
        if limit is not None:
            q = q.limit(int(limit))
        with self._read() as conn:
            rows = conn.execute(q).all()
        if order_desc:
            rows.reverse()
        if not rows:
            return CandleBatch.empty()
        return CandleBatch(*zip(*rows, strict=True))

    def read_tail(self, series_id, limit: int) -> CandleBatch:
        return self._select(self.series_key(series_id), (), order_desc=True, limit=limit)

    def read_after(self, series_id, since: int, limit: int) -> CandleBatch:
        return self._select(self.series_key(series_id), (C.c.candle_time > int(since),), limit=limit)

    def read_between(self, series_id, start: int, end: int, limit: int | None = None) -> CandleBatch:
        return self._select(self.series_key(series_id),
                            (C.c.candle_time >= int(start), C.c.candle_time <= int(end)), limit=limit)

    def times_between(self, series_id, start: int, end: int) -> np.ndarray:
        key = self.series_key(series_id)
        q = select(C.c.candle_time).where(C.c.series_key == key, C.c.candle_time >= int(start),
                                          C.c.candle_time <= int(end)).order_by(C.c.candle_time)
        with self._read() as conn:  # scalars().all(): a third faster than iterating Row objects
            return np.array(conn.execute(q).scalars().all(), dtype=np.int64)

    def _agg(self, series_id, agg, start: int | None = None, end: int | None = None):
        key = self.series_key(series_id)
        where = [C.c.series_key == key]
        if start is not None:
            where.append(C.c.candle_time >= int(start))
        if end is not None:
            where.append(C.c.candle_time <= int(end))
        with self._read() as conn:
            return conn.execute(select(agg).where(*where)).scalar()

    def head_time(self, series_id) -> int | None:
        v = self._agg(series_id, func.max(C.c.candle_time))
        return None if v is None else int(v)

    def first_time(self, series_id) -> int | None:
        v = self._agg(series_id, func.min(C.c.candle_time))
        return None if v is None else int(v)

    def count_between(self, series_id, start: int, end: int) -> int:
        return int(self._agg(series_id, func.count(), start, end) or 0)

    def stats(self, series_id) -> dict:
        key = self.series_key(series_id)
        where = C.c.series_key == key
        with self._read() as conn:  # separate aggregates: MIN and MAX alone are index probes
            first = conn.execute(select(func.min(C.c.candle_time)).where(where)).scalar()
            head = conn.execute(select(func.max(C.c.candle_time)).where(where)).scalar()
            count = conn.execute(select(func.count()).where(where)).scalar()
        return {"first_time": None if first is None else int(first),
                "head_time": None if head is None else int(head), "candle_count": int(count)}

    def raw_holes(self, series_id, start: int, end: int) -> list[Hole]:
        """Holes in [start, end] computed by the database: LAG() over the window's candle times."""
        sid = _sid(series_id)
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
        with self._read() as conn:
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

    def holes(self, series_id, start: int, end: int) -> list[Hole]:
        """Holes in the window, each cut into parts that are confirmed voids (void=True) and parts not."""
        sid = _sid(series_id)
        raw = self.raw_holes(sid, start, end)
        if not raw:
            return raw
        vs = self.voids(sid, start, end)
        if not vs:
            return raw
        return split_by_voids(raw, [(v.start, v.end) for v in vs], sid.tf_seconds)

    # ---- voids ------------------------------------------------------------------------------------
    def record_void(self, series_id, start: int, end: int, source: str, checked_at: float) -> None:
        """A range a source confirmed it has no data for. Re-recording a start refreshes checked_at."""
        sid = _sid(series_id)
        tf = sid.tf_seconds
        s, e = align_up(start, tf), align_down(end, tf)
        if e < s:
            return
        self.record_voids(sid, [(s, e)], source, checked_at)

    def record_voids(self, series_id, ranges: Iterable[tuple[int, int]], source: str,
                     checked_at: float) -> None:
        key = self.series_key(series_id)
        rows = [{"series_key": key, "start_time": int(s), "end_time": int(e), "source": source,
                 "checked_at": float(checked_at)} for s, e in ranges]
        if not rows:
            return
        with self._write() as conn:
            conn.execute(delete(V).where(V.c.series_key == key,
                                         V.c.start_time.in_([r["start_time"] for r in rows])))
            conn.execute(insert(V), rows)

    def voids(self, series_id, start: int | None = None, end: int | None = None) -> list[Void]:
        key = self.series_key(series_id)
        where = [V.c.series_key == key]
        if end is not None:
            where.append(V.c.start_time <= int(end))
        if start is not None:
            where.append(V.c.end_time >= int(start))
        q = select(V.c.start_time, V.c.end_time, V.c.source, V.c.checked_at).where(and_(*where)).order_by(
            V.c.start_time)
        with self._read() as conn:
            return [Void(int(a), int(b), s, float(c)) for a, b, s, c in conn.execute(q)]

    def delete_voids(self, series_id, start: int, end: int) -> int:
        """Forget voids overlapping [start, end] (before a re-check of an old void)."""
        key = self.series_key(series_id)
        with self._write() as conn:
            return conn.execute(delete(V).where(V.c.series_key == key, V.c.start_time <= int(end),
                                                V.c.end_time >= int(start))).rowcount

    # ---- tracker rows -----------------------------------------------------------------------------
    def tracker_get(self, series_id) -> dict | None:
        key = self.series_key(series_id)
        T = schema.tracker
        with self._read() as conn:
            row = conn.execute(select(T).where(T.c.series_key == key)).mappings().first()
        if row is None:
            return None
        out = dict(row)
        out.pop("series_key", None)
        return out

    def tracker_put(self, series_id, values: dict) -> None:
        """Upsert the given fields of one series' tracker row."""
        key = self.series_key(series_id)
        T = schema.tracker
        bad = set(values) - {c.name for c in T.columns} - {"series_key"}
        if bad:
            raise ValueError(f"tracker: unknown field(s) {sorted(bad)}")
        stmt = self._insert(T).values(series_key=key, **values)
        if values:
            stmt = stmt.on_conflict_do_update(index_elements=["series_key"], set_=values)
        else:
            stmt = stmt.on_conflict_do_nothing(index_elements=["series_key"])
        with self._write() as conn:
            conn.execute(stmt)

    def tracker_all(self) -> dict[str, dict]:
        T, S = schema.tracker, schema.series
        q = select(S.c.series_id, T).join(T, T.c.series_key == S.c.series_key)
        with self._read() as conn:
            rows = conn.execute(q).mappings().all()
        out = {}
        for r in rows:
            d = dict(r)
            sid = d.pop("series_id")
            d.pop("series_key", None)
            out[sid] = d
        return out
