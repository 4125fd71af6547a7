"""TailAnswers: the serialised body of recent tail reads (series, limit), each tagged with the series' write
sequence it was built at, so a repeated read returns the same bytes until a write moves the sequence.

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
        self._answers: OrderedDict[tuple[SeriesId, int], tuple[int, bytes]] = OrderedDict()

    def get(self, sid: SeriesId, limit: int, seq: int) -> bytes | None:
        """The body built at write sequence `seq`, or None (never one built at another sequence)."""
        with self._lock:
            hit = self._answers.get((sid, limit))
            if hit is None or hit[0] != seq:
                return None
            self._answers.move_to_end((sid, limit))
            return hit[1]

    def put(self, sid: SeriesId, limit: int, seq: int, body: bytes) -> None:
        """`body` was built from a state at least as new as sequence `seq` (read before it was built)."""
        with self._lock:
            old = self._answers.get((sid, limit))
            if old is not None and old[0] > seq:  # a slower reader of an older state: keep the newer
                return
            self._answers[(sid, limit)] = (seq, body)
            self._answers.move_to_end((sid, limit))
            while len(self._answers) > self._max:
                self._answers.popitem(last=False)
