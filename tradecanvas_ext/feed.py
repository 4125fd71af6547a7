"""CandleFeed: where newly stored closed candles are announced (ingest, repairs, other processes' writes).

The writers (runtime ingest, the backfill service) and the readers (the hub) know only the feed, so each
is built whole without knowing the other. Listeners are called on the writer's thread and must not block:
the hub only queues. `_lock` guards the listener list and is never held while a listener runs.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from .domain import CandleBatch, SeriesId

log = logging.getLogger(__name__)

Listener = Callable[[SeriesId, CandleBatch], None]


class CandleFeed:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._listeners: tuple[Listener, ...] = ()

    def add_listener(self, listener: Listener) -> None:
        with self._lock:
            self._listeners = (*self._listeners, listener)

    def publish(self, series: SeriesId, candles: CandleBatch) -> None:
        """Announce candles that are now stored (valid, ascending, unique)."""
        if len(candles) == 0:
            return
        with self._lock:
            listeners = self._listeners
        for listener in listeners:
            try:
                listener(series, candles)
            except Exception:  # one listener's bug never reaches the writer
                log.exception("%s: a candle feed listener failed", series)
