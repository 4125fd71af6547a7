"""What the hub uses of the store, the backfill service and the series registry: narrow Protocols only.

Nothing here implements anything; the hub depends on these shapes, never on the concrete classes.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from ..domain import CandleBatch, Hole, SeriesId


class CandleReader(Protocol):
    """The store reads behind a catch-up, a jump and a gap's reason."""

    def read_tail(self, series_id: SeriesId, limit: int) -> CandleBatch: ...

    def read_after(self, series_id: SeriesId, since: int, limit: int) -> CandleBatch: ...

    def read_between(self, series_id: SeriesId, start: int, end: int, limit: int | None = None) -> CandleBatch: ...

    def head_time(self, series_id: SeriesId) -> int | None: ...

    def holes(self, series_id: SeriesId, start: int, end: int) -> Sequence[Hole]: ...


class GapBackfill(Protocol):
    """Fills `[expected_next_time, actual_time)` into the store (and publishes what it wrote)."""

    def backfill_gap(self, series_id: SeriesId, expected_next_time: int, actual_time: int) -> object: ...


class ActiveSeries(Protocol):
    """Which series may be subscribed to (the runtime's SeriesRegistry)."""

    def is_active(self, sid: SeriesId) -> bool: ...
