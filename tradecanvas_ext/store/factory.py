"""open_store: the store of one db_url, built whole — dialect, candles and voids, coverage index, recent
windows and their watcher, tracker rows, leases.

The one place that wires the store's parts together; it holds no state of its own and no lock.
"""
from __future__ import annotations

from dataclasses import dataclass

from .candle_store import CandleStore
from .coverage import CoverageIndex
from .dialect import Dialect, dialect_for
from .leases import Leases
from .listener import CandleListener, NoListener, OnWrite
from .reach_rows import ReachRows
from .recent_windows import RecentWindows
from .series_keys import SeriesKeys
from .tracker_rows import TrackerRows
from .write_seq import SeqWatcher, WriteSeq

WINDOW_CANDLES = 3000  # per series: the HTTP tail (500), a hub catch-up (2,000) and a margin
WATCH_INTERVAL_S = 0.1  # how soon another process's write reaches this one's windows at the latest


@dataclass(frozen=True)
class Store:
    dialect: Dialect
    candles: CandleStore
    coverage: CoverageIndex  # the runs behind holes(); `rebuild()` / `verify()` against the candles
    windows: RecentWindows  # the recent candles in memory (read through `candles`)
    watcher: SeqWatcher  # drops windows other processes' writes made stale (started by open_store)
    tracker_rows: TrackerRows
    leases: Leases
    origin: str  # this process, in write notifications (and whose listener ignores its own writes)

    def listen(self, on_write: OnWrite) -> CandleListener | NoListener:
        """What delivers other processes' candle writes to `on_write` (call `.start()`). The series'
        window is dropped first, so what `on_write` reads back is the store's."""
        windows = self.windows

        def fresh_then(series_id: str, first: int, last: int) -> None:
            windows.invalidate_text(series_id)
            on_write(series_id, first, last)

        return self.dialect.listener(self.origin, fresh_then)

    def close(self) -> None:
        self.watcher.stop()
        self.leases.close()
        self.dialect.close()


def open_store(db_url: str, origin: str, *, create: bool = True, window_candles: int = WINDOW_CANDLES,
               watch_interval_s: float = WATCH_INTERVAL_S) -> Store:
    """`origin` names this process (the tracker's owner); `create` makes the tables if they are missing
    and the coverage index if it is missing or marked bad; `window_candles=0` keeps no recent window."""
    dialect = dialect_for(db_url)
    coverage = CoverageIndex(dialect)
    if create:
        dialect.create_schema()
        coverage.ensure()  # a store without the index, or marked after a mismatch, is rebuilt
    keys = SeriesKeys(dialect)
    seq, windows = WriteSeq(dialect), RecentWindows(window_candles)
    watcher = SeqWatcher(dialect, seq, windows, watch_interval_s).start()
    return Store(dialect, CandleStore(dialect, keys, coverage, seq, windows, origin, ReachRows(dialect)), coverage, windows,
                 watcher, TrackerRows(dialect, keys), dialect.leases(keys), origin)
