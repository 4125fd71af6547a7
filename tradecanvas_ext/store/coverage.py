"""CoverageIndex: the runs of consecutive candles of each series (tc_coverage), kept in step with every
candle write inside the write's own transaction, so holes cost the number of runs, never of candles.

It never computes holes itself (domain/holes.py has the one rule) and never writes candles. Locks: none
of its own; a candle write holds the dialect's series locks (store/dialect.py) around `record`, and
`rebuild` / `verify` hold the store lock, so no two writers of one series, in any process, interleave.
"""
from __future__ import annotations

import logging

import numpy as np
from sqlalchemy import bindparam, delete, func, insert, literal, select, update
from sqlalchemy.engine import Connection

from ..domain import merge_runs, runs_of
from .dialect import Dialect
from .schema import candles as C
from .schema import coverage as R
from .schema import series as S
from .schema import store_state as ST

log = logging.getLogger(__name__)

_MARKER = "coverage"
_OK = "ok:v1"  # the index matches the candles and every writer maintains it


def _pairs(rows) -> np.ndarray:
    """(n, 2) int64 from result rows (np.array over Row objects is ~100x slower than this)."""
    return np.fromiter((v for r in rows for v in r), dtype=np.int64, count=2 * len(rows)).reshape(-1, 2)


def _runs_dict(rows) -> dict[int, list[tuple[int, int]]]:
    out: dict[int, list[tuple[int, int]]] = {}
    for k, a, b in rows:
        out.setdefault(int(k), []).append((int(a), int(b)))
    return {k: sorted(v) for k, v in out.items()}


def _near_query():
    """The runs of :key that overlap or touch [:lo, :hi]: the last one starting at or before :lo, and
    every run starting inside (runs are disjoint and sorted, so everything between touches). Built
    once: two index range scans."""
    before = (select(func.max(R.c.run_start))
              .where(R.c.series_key == bindparam("key"), R.c.run_start <= bindparam("lo")).scalar_subquery())
    return (select(R.c.run_start, R.c.run_end)
            .where(R.c.series_key == bindparam("key"), R.c.run_start >= func.coalesce(before, bindparam("lo")),
                   R.c.run_start <= bindparam("hi"))
            .order_by(R.c.run_start))


_NEAR = _near_query()
_STRETCH = (update(R).where(R.c.series_key == bindparam("key"), R.c.run_start == bindparam("start"))
            .values(run_end=bindparam("end")))
_DROP = delete(R).where(R.c.series_key == bindparam("key"), R.c.run_start >= bindparam("first"),
                        R.c.run_start <= bindparam("last"))
_ADD = insert(R)


class CoverageIndex:
    def __init__(self, dialect: Dialect):
        self._dialect = dialect

    # ---- maintained by every candle write ----------------------------------------------------------
    def record(self, conn: Connection, key: int, tf: int, times: np.ndarray) -> None:
        """Add the candle times just written (sorted, unique, aligned) to the runs of `key`, in the
        writer's transaction, after its `lock_series`. Set-based: one read, then nothing (a rewrite
        inside a run), one update (a run grew at its end: the head append) or one delete + one insert."""
        if len(times) == 0:
            return
        lo, hi = int(times[0]) - tf, int(times[-1]) + tf
        old = _pairs(conn.execute(_NEAR, {"key": key, "lo": lo, "hi": hi}).all())
        old = old[old[:, 1] >= lo]
        bs, be = runs_of(times, tf)
        if len(old):
            bs, be = merge_runs(np.concatenate((old[:, 0], bs)), np.concatenate((old[:, 1], be)), tf)
            if len(bs) == len(old) and np.array_equal(bs, old[:, 0]) and np.array_equal(be, old[:, 1]):
                return  # every time written was already covered
            if len(old) == 1 and len(bs) == 1 and bs[0] == old[0, 0]:
                conn.execute(_STRETCH, {"key": key, "start": int(bs[0]), "end": int(be[0])})
                return
            conn.execute(_DROP, {"key": key, "first": int(old[0, 0]), "last": int(old[-1, 0])})
        conn.execute(_ADD, [{"series_key": key, "run_start": a, "run_end": b}
                            for a, b in zip(bs.tolist(), be.tolist(), strict=True)])

    # ---- read ---------------------------------------------------------------------------------------
    def runs(self, key: int, start: int, end: int) -> tuple[np.ndarray, np.ndarray]:
        """The runs of `key` that overlap [start, end] (sorted): two index range scans, O(runs found)."""
        with self._dialect.read() as conn:
            a = _pairs(conn.execute(_NEAR, {"key": key, "lo": int(start), "hi": int(end)}).all())
        a = a[a[:, 1] >= int(start)]
        return a[:, 0], a[:, 1]

    def totals(self, key: int, tf: int) -> tuple[int | None, int | None, int]:
        """(first candle time, last candle time, candle count) of `key`, from its runs."""
        q = select(func.min(R.c.run_start), func.max(R.c.run_end),
                   func.sum((R.c.run_end - R.c.run_start) // literal(tf) + 1)).where(R.c.series_key == key)
        with self._dialect.read() as conn:
            first, last, n = conn.execute(q).one()
        return (None if first is None else int(first), None if last is None else int(last), int(n or 0))

    # ---- rebuild and verify against the candles -----------------------------------------------------
    def _truth(self, keys: list[int] | None = None):
        """The runs as the candles say (gaps and islands: within a run, time - row_number * tf is
        constant). One scan of the candles: for rebuild / verify only."""
        grp = (C.c.candle_time - func.row_number().over(partition_by=C.c.series_key,
                                                         order_by=C.c.candle_time) * S.c.tf_seconds)
        inner = select(C.c.series_key, C.c.candle_time, grp.label("g")).join(
            S, S.c.series_key == C.c.series_key)
        if keys is not None:
            inner = inner.where(C.c.series_key.in_(keys))
        sub = inner.subquery()
        return (select(sub.c.series_key, func.min(sub.c.candle_time).label("run_start"),
                       func.max(sub.c.candle_time).label("run_end"))
                .group_by(sub.c.series_key, sub.c.g))

    def rebuild(self, keys: list[int] | None = None) -> None:
        """Recompute the runs (of `keys`, or of every series) from the candles, and mark the index good."""
        with self._dialect.write() as conn:
            self._dialect.lock_store(conn)
            self.rebuild_in(conn, keys)

    def rebuild_in(self, conn: Connection, keys: list[int] | None) -> None:
        """`rebuild` inside the caller's write transaction, which holds the store lock."""
        gone = delete(R) if keys is None else delete(R).where(R.c.series_key.in_(keys))
        conn.execute(gone)
        conn.execute(insert(R).from_select(["series_key", "run_start", "run_end"], self._truth(keys)))
        if keys is None:
            self._set_marker(conn, _OK)

    def verify(self) -> list[int]:
        """The series keys whose runs differ from what the candles say ([] = the index is right). A
        mismatch marks the store, so the next open rebuilds even if this process never does."""
        with self._dialect.write() as conn:  # the store lock: a consistent view on both dialects
            self._dialect.lock_store(conn)
            truth = _runs_dict(conn.execute(self._truth()).all())
            have = _runs_dict(conn.execute(select(R.c.series_key, R.c.run_start, R.c.run_end)).all())
            bad = sorted(k for k in truth.keys() | have.keys() if truth.get(k) != have.get(k))
            if bad:
                log.warning("coverage index disagrees with the candles of series keys %s", bad[:10])
                self._set_marker(conn, "mismatch")
        return bad

    def ensure(self) -> bool:
        """On open: rebuild the whole index unless the marker says it is good. True if it rebuilt."""
        if self._marker() == _OK:
            return False
        with self._dialect.write() as conn:
            self._dialect.lock_store(conn)
            if self._marker(conn) == _OK:  # another process rebuilt it meanwhile
                return False
            log.info("rebuilding the coverage index from the candles")
            self.rebuild_in(conn, None)
        return True

    def _marker(self, conn: Connection | None = None) -> str | None:
        q = select(ST.c.value).where(ST.c.name == _MARKER)
        if conn is not None:
            return conn.execute(q).scalar()
        with self._dialect.read() as c:
            return c.execute(q).scalar()

    def _set_marker(self, conn: Connection, value: str) -> None:
        conn.execute(delete(ST).where(ST.c.name == _MARKER))
        conn.execute(insert(ST).values(name=_MARKER, value=value))
