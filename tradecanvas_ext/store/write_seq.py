"""The write sequence of each series (tc_write_seq) and the watcher thread that compares it with the
recent windows in memory, dropping those another process's writes made stale (on SQLite as on
PostgreSQL, where LISTEN additionally drops them at once).

It never reads candles. Locks: none of its own; `bump` runs inside a candle write's transaction after the
dialect's series locks (so each sequence number belongs to exactly one transaction); the watcher's
`_stop` is an event and it calls RecentWindows (which locks itself) only after its SQL read.
"""
from __future__ import annotations

import logging
import threading

from sqlalchemy import bindparam, select
from sqlalchemy.engine import Connection

from .dialect import Dialect
from .recent_windows import RecentWindows
from .schema import write_seq as W

log = logging.getLogger(__name__)


class WriteSeq:
    def __init__(self, dialect: Dialect):
        self._dialect = dialect
        self._bump = (dialect.insert(W).values(series_key=bindparam("k"), seq=1)
                      .on_conflict_do_update(index_elements=["series_key"], set_={"seq": W.c.seq + 1})
                      .returning(W.c.seq))

    def bump(self, conn: Connection, keys: list[int]) -> dict[int, int]:
        """Inside a write transaction: the next sequence number of each series, now stored (one
        INSERT .. ON CONFLICT DO UPDATE .. RETURNING per series, built once)."""
        return {k: int(conn.execute(self._bump, {"k": k}).scalar_one()) for k in sorted(set(keys))}

    def current(self, key: int) -> int:
        """The series' sequence now, in a statement of its own (the market read's freshness check)."""
        row = self._dialect.fetch_one("SELECT seq FROM tc_write_seq WHERE series_key = ?", (int(key),))
        return 0 if row is None else int(row[0])

    def read(self, conn: Connection, keys: list[int]) -> dict[int, int]:
        """series_key -> sequence (a series never written has none: read it as 0)."""
        q = select(W.c.series_key, W.c.seq).where(W.c.series_key.in_(keys))
        return {int(k): int(s) for k, s in conn.execute(q)}


class SeqWatcher:
    """Every `interval_s`, the stored sequences of the loaded windows' series; a window behind its
    series' sequence is dropped. A failed read drops every window (nothing could be checked)."""

    def __init__(self, dialect: Dialect, seq: WriteSeq, windows: RecentWindows, interval_s: float):
        self._dialect, self._seq, self._windows, self._interval_s = dialect, seq, windows, interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tc-window-watch", daemon=True)

    def start(self) -> SeqWatcher:
        if self._windows.enabled and self._dialect.shared:  # no other process can write a private one
            self._thread.start()
        return self

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def check(self) -> int:
        """One comparison now (the thread's step; tests call it to avoid waiting): windows dropped."""
        loaded = self._windows.loaded()
        if not loaded:
            return 0
        with self._dialect.read() as conn:
            stored = self._seq.read(conn, list(loaded))
        return self._windows.drop_stale(stored)

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                self.check()
            except Exception:
                log.warning("could not check the recent windows against the store; dropping them",
                            exc_info=True)
                self._windows.invalidate_all()
