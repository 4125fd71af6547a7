"""Pure planning over one history file: its holes, which of them the side-car already explains (voids,
unavailable ranges, fresh or due for a re-check), how holes group into fetch calls, and the merge of fetched
candles. It must never produce a row at a time the file already holds, nor a row outside a hole.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from ..domain import CandleBatch, Hole, list_holes, merge_ranges
from ..sources.rollup import times_in_holes
from .sidecar import Checked

MISSING, VOID, UNAVAILABLE = "missing", "void", "unavailable"
UNAVAILABLE_RECHECK_S = 86_400.0  # a history reach is re-learned after a day (contract section 5)


@dataclass(frozen=True)
class Gap:
    """Missing open times `start..end` of a file, and what is known about them."""

    start: int
    end: int
    missing_candles: int
    kind: str  # MISSING (nobody vouched for it yet), VOID or UNAVAILABLE (a side-car record)

    def to_dict(self) -> dict:
        return {"start": self.start, "end": self.end, "missing_candles": self.missing_candles,
                "void": self.kind == VOID, "unavailable": self.kind == UNAVAILABLE}

    def as_hole(self) -> Hole:
        return Hole(self.start, self.end, self.missing_candles, self.kind == VOID)


def inner_holes(times: np.ndarray, tf: int, start: int | None = None, end: int | None = None) -> list[Hole]:
    """The holes between the file's first and last candle (the head and tail are `download-data`'s), inside
    [start, end] when given."""
    if len(times) < 2:
        return []
    lo, hi = int(times[0]), int(times[-1])
    if start is not None:
        lo = max(lo, start)
    if end is not None:
        hi = min(hi, end)
    return list_holes(times, lo, hi, tf) if lo <= hi else []


def label(holes: Sequence[Hole], voids: Iterable[tuple[int, int]], unavailable: Iterable[tuple[int, int]],
          tf: int) -> list[Gap]:
    """Each hole cut where recorded voids and unavailable ranges begin and end (a void wins an overlap)."""
    out: list[Gap] = []
    marks = [(s, e, VOID) for s, e in merge_ranges(voids, tf)]
    marks += [(s, e, UNAVAILABLE) for s, e in merge_ranges(unavailable, tf)]
    for h in holes:
        pieces = [(h.start, h.end, MISSING)]
        for ms, me, kind in marks:
            nxt = []
            for s, e, k in pieces:
                if k != MISSING or me < s or ms > e:
                    nxt.append((s, e, k))
                    continue
                if ms > s:
                    nxt.append((s, ms - tf, k))
                nxt.append((max(s, ms), min(e, me), kind))
                if me < e:
                    nxt.append((me + tf, e, k))
            pieces = nxt
        out.extend(Gap(s, e, (e - s) // tf + 1, k) for s, e, k in sorted(pieces))
    return out


def fresh(records: Iterable[Checked], now: float, max_age_s: float) -> list[tuple[int, int]]:
    """The recorded ranges still trusted at `now` (checked within `max_age_s`)."""
    return [(c.start, c.end) for c in records if now - c.checked_at < max_age_s]


def group_for_fetch(holes: Sequence[Hole], tf: int, span_candles: int, max_holes: int = 1) -> list[list[Hole]]:
    """Holes in calls of at most `span_candles` grid times from the first start to the last end and at most
    `max_holes` holes each: a long hole is cut into pieces of that length, so every call is short enough to
    stop between; neighbours may share a call (`max_holes` > 1) when a source serves them from one page."""
    groups: list[list[Hole]] = []
    span = span_candles * tf
    for h in sorted(holes, key=lambda h: h.start):
        start = h.start
        while start <= h.end:
            if groups and len(groups[-1]) < max_holes and start + tf - groups[-1][0].start <= span:
                room_end = groups[-1][0].start + span - tf
            else:
                groups.append([])
                room_end = start + span - tf
            stop = min(h.end, room_end)
            groups[-1].append(Hole(start, stop, (stop - start) // tf + 1))
            start = stop + tf
    return groups


def new_rows(existing: np.ndarray, fetched: CandleBatch, holes: Sequence[Hole]) -> CandleBatch:
    """The fetched candles at times inside `holes` that the file does not hold (one per time, ascending).
    `existing`: the file's times, ascending."""
    got = fetched.dedupe_sorted()
    idx = np.searchsorted(existing, got.times)
    held = (idx < len(existing)) & (existing[np.minimum(idx, len(existing) - 1)] == got.times) if len(existing) \
        else np.zeros(len(got), dtype=bool)
    return got.take(times_in_holes(got.times, holes) & ~held)


def clip(ranges: Iterable[tuple[int, int]], holes: Sequence[Hole], tf: int) -> list[tuple[int, int]]:
    """The parts of inclusive `ranges` inside the holes (a range asked across several holes and the file's
    rows between them says nothing about those rows)."""
    out = []
    for s, e in merge_ranges(ranges, tf):
        out.extend((max(s, h.start), min(e, h.end)) for h in holes if h.start <= e and h.end >= s)
    return out


def covered(gaps: Sequence[Gap], kind: str) -> int:
    return sum(g.missing_candles for g in gaps if g.kind == kind)
