"""open_store: the store of one db_url, built whole — dialect, candles and voids, tracker rows, leases.

The one place that wires the store's parts together; it holds no state of its own and no lock.
"""
from __future__ import annotations

from dataclasses import dataclass

from .candle_store import CandleStore
from .dialect import Dialect, dialect_for
from .leases import Leases
from .listener import CandleListener, NoListener, OnWrite
from .reach_rows import ReachRows
from .series_keys import SeriesKeys
from .tracker_rows import TrackerRows


@dataclass(frozen=True)
class Store:
    dialect: Dialect
    candles: CandleStore
    tracker_rows: TrackerRows
    leases: Leases
    origin: str  # this process, in write notifications (and whose listener ignores its own writes)

    def listen(self, on_write: OnWrite) -> CandleListener | NoListener:
        """What delivers other processes' candle writes to `on_write` (call `.start()`)."""
        return self.dialect.listener(self.origin, on_write)

    def close(self) -> None:
        self.leases.close()
        self.dialect.close()


def open_store(db_url: str, origin: str, *, create: bool = True) -> Store:
    """`origin` names this process (the tracker's owner); `create` makes the tables if they are missing."""
    dialect = dialect_for(db_url)
    if create:
        dialect.create_schema()
    keys = SeriesKeys(dialect)
    return Store(dialect, CandleStore(dialect, keys, origin, ReachRows(dialect)), TrackerRows(dialect, keys),
                 dialect.leases(keys), origin)
