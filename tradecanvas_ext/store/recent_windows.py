"""RecentWindows: the newest candles of each series held in memory, so reads of recent candles skip SQL.

It never reads or writes the database itself: CandleStore loads a window from the store, applies its own
committed writes to it (write-through: the store first), and the write-sequence watcher drops windows
another process made stale. A window is exact: it holds EVERY stored candle at or after its `lo`.

The rule (`seq` is the series' write sequence in the store, bumped by each write transaction): a window
is installed only if no write of this process ended since its load began (`gen`); a write that commits
sequence n is applied to a window at n-1, ignored by one at >= n (its snapshot has it), and drops any
other. Locks: `_lock` guards `_states` and every `_State` in it; it is never held during I/O or while
calling out, and no other lock is taken under it. Batches are never changed in place (replaced whole),
so readers slice them outside the lock.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass

from ..domain import CandleBatch, SeriesId

WHOLE = -(2**62)  # `lo` of a window that holds the whole series (fewer candles stored than its size)


@dataclass
class _State:
    key: int
    gen: int = 0  # bumped by every write end and every invalidation: a load in flight is refused
    batch: CandleBatch | None = None  # None: not loaded
    lo: int = WHOLE
    seq: int = 0  # the write sequence the window reflects


@dataclass(frozen=True)
class Window:
    """What a read sees: every stored candle with time >= lo is in `batch` (sorted)."""

    batch: CandleBatch
    lo: int


def merge_into(batch: CandleBatch, lo: int, written: CandleBatch, size: int) -> tuple[CandleBatch, int]:
    """`written` (sorted, unique: what a write stored) applied to a window: last write wins per time,
    then the oldest are dropped past `size` (raising lo)."""
    new = written.take(written.times >= lo)
    if not len(new):
        return batch, lo
    if len(batch) and new.times[0] > batch.times[-1]:  # the usual append at the head
        both = CandleBatch.concat([batch, new])
    else:
        both = CandleBatch.concat([batch, new]).dedupe_sorted()  # the later rows (new) win
    if len(both) > size:
        both = both.take(slice(len(both) - size, None))
        lo = int(both.times[0])
    return both, lo


class RecentWindows:
    def __init__(self, size: int):
        """`size` candles per series (0 turns the windows off: every read goes to SQL)."""
        self.size = size
        self._lock = threading.Lock()
        self._states: dict[SeriesId, _State] = {}
        self._by_text: dict[str, SeriesId] = {}

    @property
    def enabled(self) -> bool:
        return self.size > 0

    def _state(self, sid: SeriesId, key: int) -> _State:  # under _lock
        st = self._states.get(sid)
        if st is None:
            st = self._states[sid] = _State(key)
            self._by_text[str(sid)] = sid
        return st

    def get(self, sid: SeriesId) -> Window | None:
        with self._lock:
            st = self._states.get(sid)
            if st is None or st.batch is None:
                return None
            return Window(st.batch, st.lo)

    def ticket(self, sid: SeriesId, key: int) -> int:
        """Taken before a load's SQL read; `install` refuses the load if any write ended meanwhile."""
        with self._lock:
            return self._state(sid, key).gen

    def install(self, sid: SeriesId, ticket: int, seq: int, batch: CandleBatch, lo: int) -> None:
        with self._lock:
            st = self._states[sid]
            if st.gen == ticket and st.batch is None:
                st.batch, st.lo, st.seq = batch, lo, seq

    def wrote(self, sid: SeriesId, key: int, seq: int, written: CandleBatch) -> None:
        """This process committed `written` as write sequence `seq` of the series."""
        with self._lock:
            st = self._state(sid, key)
            st.gen += 1
            if st.batch is None or st.seq >= seq:
                return
            if st.seq == seq - 1:
                st.batch, st.lo = merge_into(st.batch, st.lo, written, self.size)
                st.seq = seq
            else:  # another process wrote in between: reload on the next read
                st.batch = None

    def invalidate(self, sid: SeriesId) -> None:
        """A write whose outcome is unknown (it failed), or another process's write: reload."""
        with self._lock:
            st = self._states.get(sid)
            if st is not None:
                st.gen += 1
                st.batch = None

    def invalidate_text(self, series_id: str) -> None:
        """The same, for a series named in a database notification (no parsing: a lookup)."""
        with self._lock:
            sid = self._by_text.get(series_id)
        if sid is not None:
            self.invalidate(sid)

    def loaded(self) -> dict[int, int]:
        """series_key -> the write sequence of each loaded window (for the watcher's comparison)."""
        with self._lock:
            return {st.key: st.seq for st in self._states.values() if st.batch is not None}

    def drop_stale(self, store_seqs: dict[int, int]) -> int:
        """Drop every window older than the write sequence the store showed for its series."""
        dropped = 0
        with self._lock:
            for st in self._states.values():
                if st.batch is not None and st.seq < store_seqs.get(st.key, 0):
                    st.gen += 1
                    st.batch = None
                    dropped += 1
        return dropped

    def drop_behind(self, sid: SeriesId, store_seq: int) -> None:
        """`drop_stale` for one series (the market read's check: no walk over every window)."""
        with self._lock:
            st = self._states.get(sid)
            if st is not None and st.batch is not None and st.seq < store_seq:
                st.gen += 1
                st.batch = None

    def invalidate_all(self) -> None:
        with self._lock:
            for st in self._states.values():
                st.gen += 1
                st.batch = None
