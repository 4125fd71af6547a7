"""Live tail for `tradecanvas serve` (no bot feeding candles): every few seconds each series' newest closed
candles are topped up through the decision tree, and what gets written reaches WebSocket clients via the
backfill service's `on_written` hook. It never writes a forming candle (the window ends at the latest
closed one)."""
from __future__ import annotations

import logging
import threading

from ..domain import expected_latest_closed_time

log = logging.getLogger(__name__)


class LivePoller:
    def __init__(self, runtime, interval_s: float = 5.0, window: int = 5):
        self.runtime, self.interval_s, self.window = runtime, interval_s, window
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.ticks = 0

    def tick(self) -> int:
        """One pass over every series; returns the candles written."""
        written = 0
        for sid in self.runtime.series_ids:
            if self._stop.is_set():
                break
            try:
                to_time = expected_latest_closed_time(self.runtime.clock(), sid.tf_seconds)
                res = self.runtime.backfill.ensure_tail_coverage(sid, self.window, to_time=to_time)
                written += res.filled
            except Exception:  # one series never stops the others
                log.exception("%s: live poll failed", sid)
        self.ticks += 1
        return written

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.tick()

    def start(self) -> LivePoller:
        self._thread = threading.Thread(target=self._run, name="tc-live-poller", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
