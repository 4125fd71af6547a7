"""CatchUpBudget: the share of one core that catch-up pages may use, hub-wide, so that clients that
subscribe again and again (or many at once) cannot starve the bot's loop of the interpreter; the hub also
keeps one in seconds of wall time for client-triggered recoveries (the bot's exchange they share). It never
blocks and never sleeps: it says how long the next piece of work must wait. With a `LoopPriority`, the work
also waits while the bot's loop holds it back (priority.py).

`_lock` guards the credit and the time it was last brought up to date; taken alone, for a few additions.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable

from .priority import LoopPriority


class CatchUpBudget:
    """A token bucket in seconds of CPU: `share` seconds come back per second, up to `burst_s` (so that a
    chart opening its series, or a few, gets its catch-up at once). A page may start while the credit is
    positive; what it cost is charged after it, so the credit may go negative: later pages wait it off."""

    def __init__(self, share: float, burst_s: float, clock: Callable[[], float] = time.monotonic,
                 priority: LoopPriority | None = None):
        if not (0 < share <= 1 and burst_s > 0):
            raise ValueError(f"a catch-up budget needs 0 < share <= 1 and burst_s > 0, not {share}, {burst_s}")
        self.share, self.burst_s = share, burst_s
        self._clock = clock
        self._priority = priority
        self._lock = threading.Lock()
        self._credit = burst_s
        self._at = clock()

    def wait_s(self) -> float:
        """0.0 when a page may be read now, else how long until the credit is positive again (or until the
        bot's loop may have let go of the work: a short look-again time)."""
        hold = 0.0 if self._priority is None else self._priority.hold_s()
        with self._lock:
            self._refill()
            wait = 0.0 if self._credit > 0 else -self._credit / self.share + 1e-3
        return max(wait, hold)

    def charge(self, cpu_s: float) -> None:
        with self._lock:
            self._refill()
            self._credit -= cpu_s

    def _refill(self) -> None:  # with _lock held
        now = self._clock()
        self._credit = min(self.burst_s, self._credit + (now - self._at) * self.share)
        self._at = now
