"""One subscription's serial event queue and its state machine (every transition is a method here).

It never does I/O and never calls out while holding its lock, except the client's non-blocking `offer`.
`_lock` guards `_queue`, `_state` and `_token`. The cursor, the outbox, `attempted` and `next_page_queued`
belong to whoever holds the DRAINING state: one thread at a time, so they need no lock.
"""
from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING

from ..domain import Candle, SeriesId, align_down
from . import messages as m

if TYPE_CHECKING:
    from .candle_hub import HubClient


@dataclass(frozen=True, slots=True)
class CatchUp:
    """Read the next page of stored candles after the cursor (or the tail without one)."""


@dataclass(frozen=True, slots=True, eq=False)
class Candles:
    """Closed candles, newly stored (or a batch put back to wait for a recovery), with their JSON: one
    `CandleTexts` shared by every subscription of the series."""

    texts: m.CandleTexts


@dataclass(frozen=True, slots=True)
class Forming:
    """The forming candle; only the newest one waiting in a queue is kept."""

    candle: Candle


Event = CatchUp | Candles | Forming


class SubState(Enum):
    IDLE = "idle"  # nothing to do: the next event starts a drain
    DRAINING = "draining"  # one thread owns the cursor and takes events (a new one: the subscribe call)
    WAITING_RECOVERY = "waiting_recovery"  # paused on a jump until its recovery ends or times out
    WAITING_CLIENT = "waiting_client"  # a catch-up page is queued: the next is read once the writer sent it
    CLOSED = "closed"  # unsubscribed, replaced or disconnected: takes and sends nothing more


_WAITING = (SubState.WAITING_RECOVERY, SubState.WAITING_CLIENT)


class Subscription:
    """Starts DRAINING with a CatchUp queued: the subscribe call owns it until its reply is out."""

    def __init__(self, client: HubClient, series: SeriesId, since: int | None, supports_batch: bool):
        self.client, self.series, self.key = client, series, str(series)
        self.tf = series.tf_seconds
        self.since = since
        self.cursor: int | None = None if since is None else align_down(since, self.tf)
        self.out = m.Outbox(self.key, self.tf, supports_batch)
        self.attempted: set[tuple[int, int]] = set()  # jumps whose recovery was tried
        self.next_page_queued = False  # the catch-up just read a full page and queued the next CatchUp
        self._lock = threading.Lock()
        self._queue: deque[Event] = deque([CatchUp()])
        self._state = SubState.DRAINING
        self._token: object | None = None  # the wait that `resume` must name, while WAITING_*

    def push(self, event: Event) -> bool:
        """Queue a live event; True when the caller must start a drain (the subscription was IDLE)."""
        with self._lock:
            if self._state is SubState.CLOSED:
                return False
            if isinstance(event, Forming):  # only the newest forming candle matters
                for i, ev in enumerate(self._queue):
                    if isinstance(ev, Forming):
                        del self._queue[i]
                        break
            self._queue.append(event)
            return self._claim()

    def push_front(self, event: Event) -> None:
        """The drainer puts work back to go first (the next catch-up page, a batch's rest)."""
        with self._lock:
            if self._state is not SubState.CLOSED:
                self._queue.appendleft(event)

    def next_event(self) -> Event | None:
        """The drainer's next event. None ends the drain: an empty queue makes it IDLE, a closed or
        waiting subscription stays as it is."""
        with self._lock:
            if self._state is not SubState.DRAINING:
                return None
            if self._queue:
                return self._queue.popleft()
            self._state = SubState.IDLE
            return None

    def park(self, state: SubState = SubState.WAITING_RECOVERY) -> object:
        """DRAINING -> `state` (a WAITING_ one); returns the token that ends this wait (and no later one)."""
        token = object()
        with self._lock:
            if self._state is SubState.DRAINING:
                self._state, self._token = state, token
        return token

    def resume(self, token: object) -> bool:
        """End the wait `token` names (a recovery ended or its time bound passed, or the client took a
        catch-up page); True when the caller must start a drain. A second resume of the same wait does
        nothing."""
        with self._lock:
            if self._state not in _WAITING or self._token is not token:
                return False
            self._state, self._token = SubState.IDLE, None
            return self._claim()

    def close(self) -> None:
        with self._lock:
            self._state, self._token = SubState.CLOSED, None
            self._queue.clear()

    @property
    def waits_for_recovery(self) -> bool:
        """Paused on a jump: its recovery is still of use to it (not closed, not past its time bound)."""
        with self._lock:
            return self._state is SubState.WAITING_RECOVERY

    @property
    def closed(self) -> bool:
        """Unsubscribed, replaced or disconnected: nothing done for it any more reaches anyone."""
        with self._lock:
            return self._state is SubState.CLOSED

    def hand_over(self, messages: list[m.Text], then: Callable[[], None] | None = None) -> bool:
        """Queue messages on the client unless closed: under the lock, so nothing follows a close; `then`
        is called by the client's writer once they are sent. Returns whether the client overflowed; the
        caller drops it once it holds no lock."""
        with self._lock:
            if self._state is SubState.CLOSED:
                return False
            for msg in messages:
                if self.client.offer(msg):
                    return True
            if then is not None:
                self.client.when_sent(then)
        return False

    def _claim(self) -> bool:  # with _lock held
        if self._state is SubState.IDLE and self._queue:
            self._state = SubState.DRAINING
            return True
        return False
