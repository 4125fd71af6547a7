"""LoopPriority: the bot's loop goes first. While freqtrade refreshes and analyses its pairs, the work the
extension does for chart clients in the bot's interpreter (catch-up pages and fills, client-triggered
recoveries, WebSocket handshakes and frames) waits, so that it does not take the GIL from the loop at the
moment the loop is the slowest (the first loop after a candle closes). Live candles never wait: they are
queued by the bot's own thread and written as before.

A hold ends LINGER_S after the loop says so (what freqtrade does after `analyze` — orders, exits,
entries — is short; the work held back would otherwise rush in during it), or MAX_HOLD_S after it began,
whichever comes first: a loop that never says (an exception in freqtrade, a bot that detached) cannot
starve the clients, and a loop that is slow every time still leaves the clients the rest of it.

Thread safety: `enter`/`leave` are called by the bot's thread only; the others read. The state is one
`threading.Event` (set = the loop said it is done), the monotonic time the hold began (written before the
event is cleared) and the time it ends (written before the event is set); no other lock is taken, and
waiting (on the event, then a sleep of at most LINGER_S) releases the GIL.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable

MAX_HOLD_S = 2.0  # the longest one loop may hold the clients' work back
LINGER_S = 0.2  # after the loop's analysis: the rest of its iteration
POLL_S = 0.05  # how often a budget's waiter looks again while a hold lasts


class LoopPriority:
    def __init__(self, max_hold_s: float = MAX_HOLD_S, linger_s: float = LINGER_S,
                 clock: Callable[[], float] = time.monotonic):
        if not max_hold_s > 0 or not 0 <= linger_s <= max_hold_s:
            raise ValueError(f"max_hold_s must be > 0 and 0 <= linger_s <= max_hold_s, not {max_hold_s!r}, "
                             f"{linger_s!r}")
        self.max_hold_s = float(max_hold_s)
        self.linger_s = float(linger_s)
        self._clock = clock
        self._free = threading.Event()
        self._free.set()
        self._since = 0.0
        self._ends = 0.0  # once the loop said it is done: when the hold ends
        self.holds = 0  # loops that held the clients' work back (metrics for tests and benches; written
        self.waited = 0  # by one thread each or counted loosely: never used to decide anything)

    def enter(self) -> None:
        """The bot's loop begins its heavy part. A second `enter` before `leave` keeps the first start."""
        if self._free.is_set():
            self._since = self._clock()
            self._ends = self._since + self.max_hold_s
            self.holds += 1
            self._free.clear()

    def leave(self) -> None:
        if not self._free.is_set():
            self._ends = min(self._ends, self._clock() + self.linger_s)
            self._free.set()

    def _remaining(self) -> float:
        return max(0.0, self._ends - self._clock())

    @property
    def held(self) -> bool:
        return self._remaining() > 0.0

    def hold_s(self) -> float:
        """0.0 when client work may run now; else how long to wait before looking again (never longer
        than POLL_S, so that a loop that ends early frees the work at once, give or take POLL_S)."""
        return min(POLL_S, self._remaining())

    def wait(self) -> None:
        """Block (GIL released) while a hold lasts: until `leave` and its linger, or until it runs out."""
        remaining = self._remaining()
        if remaining > 0.0:
            self.waited += 1
            if not self._free.is_set():
                self._free.wait(remaining)
            linger = self._remaining()
            if linger > 0.0:
                time.sleep(min(linger, self.linger_s))

