"""One clock for the whole runtime: every "now" the contract puts on the runtime clock reads a `Clock`.

A clock is any zero-argument callable returning unix seconds (so `time.time` is one). `SystemClock` is the
production clock, `ManualClock` the settable one for tests and replays. Durations and deadlines (how long
a request may take) use `time.monotonic()` instead: they are not "now" in the contract's sense.
"""
from __future__ import annotations

import threading
import time
from typing import Protocol


class Clock(Protocol):
    def __call__(self) -> float:
        """Unix seconds, as the runtime sees them."""
        ...


class SystemClock:
    """The wall clock (`time.time`)."""

    __slots__ = ()

    def __call__(self) -> float:
        return time.time()

    def __repr__(self) -> str:
        return "SystemClock()"


SYSTEM_CLOCK = SystemClock()


class ManualClock:
    """A settable clock: `clock()` returns the time it was set to or advanced to; thread-safe."""

    def __init__(self, now: float) -> None:
        self._now = float(now)
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self._now

    @property
    def now(self) -> float:
        return self()

    def set(self, now: float) -> None:
        with self._lock:
            self._now = float(now)

    def advance(self, seconds: float) -> float:
        with self._lock:
            self._now += float(seconds)
            return self._now

    def __repr__(self) -> str:
        return f"ManualClock({self():.3f})"
