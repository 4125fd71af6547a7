"""TailAnswers: the serialised body of recent tail reads (series, limit), each tagged with the series' write
sequence it was built at, so a repeated read returns the same bytes until a write moves the sequence; and,
when the read's tail check found its window whole, the window's newest closed time: until that time moves
or a write does, the check would find the same whole window again, so a read may skip it.

It never reads the store and never decides freshness itself: the view reads the sequence from the store
first and asks for an answer at exactly that sequence. Locks: `_lock` guards `_answers` only; nothing is
called while it is held.
"""
from __future__ import annotations

import threading
from collections import OrderedDict

from ..domain import SeriesId

MAX_ANSWERS = 256  # (series, limit) pairs kept; the least recently used goes first


class TailAnswers:
    def __init__(self, max_answers: int = MAX_ANSWERS):
        self._max = max_answers
        self._lock = threading.Lock()
        # (series, limit) -> (seq, body, whole_at: the newest closed time of a window found whole, or None)
        self._answers: OrderedDict[tuple[SeriesId, int], tuple[int, bytes, int | None]] = OrderedDict()

    def get(self, sid: SeriesId, limit: int, seq: int) -> bytes | None:
        """The body built at write sequence `seq`, or None (never one built at another sequence)."""
        with self._lock:
            hit = self._answers.get((sid, limit))
            if hit is None or hit[0] != seq:
                return None
            self._answers.move_to_end((sid, limit))
            return hit[1]

    def get_whole(self, sid: SeriesId, limit: int, seq: int, latest: int) -> bytes | None:
        """The body built at `seq` whose tail check found the window ending at `latest` whole, or None."""
        with self._lock:
            hit = self._answers.get((sid, limit))
            if hit is None or hit[0] != seq or hit[2] != latest:
                return None
            self._answers.move_to_end((sid, limit))
            return hit[1]

    def mark_whole(self, sid: SeriesId, limit: int, seq: int, latest: int) -> None:
        """A tail check found the window ending at `latest` whole, and `seq` was read after it."""
        with self._lock:
            hit = self._answers.get((sid, limit))
            if hit is not None and hit[0] == seq:
                self._answers[(sid, limit)] = (seq, hit[1], latest)

    def put(self, sid: SeriesId, limit: int, seq: int, body: bytes, whole_at: int | None = None) -> None:
        """`body` was built from a state at least as new as sequence `seq` (read before it was built);
        `whole_at` as in mark_whole."""
        with self._lock:
            old = self._answers.get((sid, limit))
            if old is not None and old[0] > seq:  # a slower reader of an older state: keep the newer
                return
            self._answers[(sid, limit)] = (seq, body, whole_at)
            self._answers.move_to_end((sid, limit))
            while len(self._answers) > self._max:
                self._answers.popitem(last=False)
