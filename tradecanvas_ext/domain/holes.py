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


def list_holes(times: Sequence[int] | np.ndarray, start: int, end: int, tf: int) -> list[Hole]:
    """Every run of aligned times in [start, end] absent from `times` (sorted, aligned, unique)."""
    s, e = _window(start, end, tf)
    if e < s:
        return []
    t = np.asarray(times, dtype=np.int64)
    t = t[(t >= s) & (t <= e)]
    # Sentinels one step outside the window turn leading and trailing holes into inner gaps.
    t = np.concatenate(([s - tf], t, [e + tf]))
    d = np.diff(t)
    idx = np.nonzero(d > tf)[0]
    return [
        Hole(int(t[i] + tf), int(t[i + 1] - tf), int((t[i + 1] - t[i]) // tf - 1)) for i in idx
    ]


def count_covered(times: Sequence[int] | np.ndarray, start: int, end: int, tf: int) -> int:
    s, e = _window(start, end, tf)
    t = np.asarray(times, dtype=np.int64)
    return int(np.count_nonzero((t >= s) & (t <= e)))


def merge_ranges(ranges: Iterable[tuple[int, int]], tf: int) -> list[tuple[int, int]]:
    """Merge inclusive [start, end] ranges that overlap or touch (end + tf == next start)."""
    out: list[list[int]] = []
    for s, e in sorted((int(a), int(b)) for a, b in ranges if b >= a):
        if out and s <= out[-1][1] + tf:
            out[-1][1] = max(out[-1][1], e)
        else:
            out.append([s, e])
    return [(s, e) for s, e in out]


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
