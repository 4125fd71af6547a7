"""Hole arithmetic on sorted integer candle times. Pure and vectorised: the store's SQL must agree."""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from .timeframe import align_down, align_up


@dataclass(frozen=True, slots=True)
class Hole:
    """Missing aligned times `start..end` inclusive (both are candle open times)."""

    start: int
    end: int
    missing_candles: int
    void: bool = False
    unavailable: bool = False  # older than what the exchange serves: never a void

    @property
    def settled(self) -> bool:
        """Nothing left to fetch here: a confirmed void, or out of the exchange's reach."""
        return self.void or self.unavailable

    def to_dict(self) -> dict:
        return {"start": self.start, "end": self.end, "missing_candles": self.missing_candles,
                "void": self.void, "unavailable": self.unavailable}


def _window(start: int, end: int, tf: int) -> tuple[int, int]:
    return align_up(start, tf), align_down(end, tf)


def runs_of(times: Sequence[int] | np.ndarray, tf: int) -> tuple[np.ndarray, np.ndarray]:
    """The runs of consecutive candles in `times` (sorted, aligned, unique): (starts, ends), inclusive."""
    t = np.asarray(times, dtype=np.int64)
    if len(t) == 0:
        return t, t
    brk = np.nonzero(np.diff(t) != tf)[0]
    return np.concatenate(([t[0]], t[brk + 1])), np.concatenate((t[brk], [t[-1]]))


def merge_runs(starts: np.ndarray, ends: np.ndarray, tf: int) -> tuple[np.ndarray, np.ndarray]:
    """Inclusive [start, end] ranges merged where they overlap or touch (end + tf == next start), in
    order. Ranges with end < start are dropped."""
    s, e = np.asarray(starts, dtype=np.int64), np.asarray(ends, dtype=np.int64)
    keep = e >= s
    s, e = s[keep], e[keep]
    if len(s) == 0:
        return s, e
    order = np.argsort(s, kind="stable")
    s, e = s[order], np.maximum.accumulate(e[order])
    new = np.concatenate(([True], s[1:] > e[:-1] + tf))
    first = np.nonzero(new)[0]
    last = np.concatenate((first[1:] - 1, [len(s) - 1]))
    return s[first], e[last]


def holes_from_runs(starts: np.ndarray, ends: np.ndarray, start: int, end: int, tf: int) -> list[Hole]:
    """THE hole rule: every run of aligned times in [start, end] that no run (sorted, disjoint, not
    touching, aligned) covers. Costs the number of runs given, not of candles."""
    s, e = _window(start, end, tf)
    if e < s:
        return []
    rs, re_ = np.asarray(starts, dtype=np.int64), np.asarray(ends, dtype=np.int64)
    inside = (re_ >= s) & (rs <= e)
    rs, re_ = np.maximum(rs[inside], s), np.minimum(re_[inside], e)
    # Sentinel runs one step outside the window turn leading and trailing holes into inner gaps.
    prev_end = np.concatenate(([s - tf], re_))
    next_start = np.concatenate((rs, [e + tf]))
    gap = next_start - prev_end > tf
    a, b = prev_end[gap] + tf, next_start[gap] - tf
    return [Hole(x, y, n) for x, y, n in zip(a.tolist(), b.tolist(), ((b - a) // tf + 1).tolist(), strict=True)]


def list_holes(times: Sequence[int] | np.ndarray, start: int, end: int, tf: int) -> list[Hole]:
    """Every run of aligned times in [start, end] absent from `times` (sorted, aligned, unique)."""
    s, e = _window(start, end, tf)
    if e < s:
        return []
    t = np.asarray(times, dtype=np.int64)
    t = t[np.searchsorted(t, s, side="left"):np.searchsorted(t, e, side="right")]
    if len(t) == (e - s) // tf + 1:  # every aligned time present (unique, aligned): the usual answer
        return []
    return holes_from_runs(*runs_of(t, tf), s, e, tf)


def covered_in_runs(starts: np.ndarray, ends: np.ndarray, start: int, end: int, tf: int) -> int:
    """How many aligned times in [start, end] the runs cover."""
    s, e = _window(start, end, tf)
    rs, re_ = np.asarray(starts, dtype=np.int64), np.asarray(ends, dtype=np.int64)
    lo, hi = np.maximum(rs, s), np.minimum(re_, e)
    n = (hi - lo) // tf + 1
    return int(n[n > 0].sum())


def count_covered(times: Sequence[int] | np.ndarray, start: int, end: int, tf: int) -> int:
    s, e = _window(start, end, tf)
    t = np.asarray(times, dtype=np.int64)
    return int(np.count_nonzero((t >= s) & (t <= e)))


def merge_ranges(ranges: Iterable[tuple[int, int]], tf: int) -> list[tuple[int, int]]:
    """Merge inclusive [start, end] ranges that overlap or touch (end + tf == next start)."""
    pairs = [(int(a), int(b)) for a, b in ranges]
    if not pairs:
        return []
    s, e = merge_runs(*np.array(pairs, dtype=np.int64).T, tf)
    return list(zip(s.tolist(), e.tolist(), strict=True))


def split_by_voids(holes: Iterable[Hole], voids: Iterable[tuple[int, int]], tf: int,
                   unavailable: Iterable[tuple[int, int]] = ()) -> list[Hole]:
    """Cut each hole where confirmed-empty ranges begin and end (the covered pieces get void=True), and
    first where unavailable ranges do (unavailable=True, never void: they win where both were recorded)."""
    unavailable = merge_ranges(unavailable, tf)
    if unavailable:
        out: list[Hole] = []
        for h in _split(holes, unavailable, tf):
            if h.void:  # _split marks the covered pieces
                out.append(Hole(h.start, h.end, h.missing_candles, False, True))
            else:
                out.extend(_split([h], merge_ranges(voids, tf), tf))
        return out
    return _split(holes, merge_ranges(voids, tf), tf)


def _split(holes: Iterable[Hole], merged: list[tuple[int, int]], tf: int) -> list[Hole]:
    out: list[Hole] = []
    for h in holes:
        cur = h.start
        for vs, ve in merged:
            vs, ve = align_up(vs, tf), align_down(ve, tf)
            if ve < cur or vs > h.end:
                continue
            if vs > cur:
                out.append(Hole(cur, vs - tf, (vs - cur) // tf, False))
                cur = vs
            stop = min(ve, h.end)
            out.append(Hole(cur, stop, (stop - cur) // tf + 1, True))
            cur = stop + tf
            if cur > h.end:
                break
        if cur <= h.end:
            out.append(Hole(cur, h.end, (h.end - cur) // tf + 1, False))
    return out
