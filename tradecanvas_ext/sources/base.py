"""The narrow interface every candle source implements (freqtrade, rollup, ccxt)."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from ..domain import (
    CandleBatch,
    Hole,
    SeriesId,
    align_down,
    align_up,
    expected_latest_closed_time,
    merge_ranges,
)
from .reach import Reach


@dataclass
class SourceResult:
    """What one source found for the holes it was asked about.

    `candles` are closed candles inside the asked holes only (the service still validates them);
    `voids` are inclusive (start, end) ranges the source confirmed it has no data for;
    `unavailable` are inclusive ranges older than what the exchange serves (its reach: never a void), and
    `reach` the reach the source learned on the way (None: nothing new);
    `errors` are human-readable problems that did not stop the source; `requests` counts remote calls,
    `retries` the transient failures retried among them.
    """

    candles: CandleBatch = field(default_factory=CandleBatch.empty)
    voids: list[tuple[int, int]] = field(default_factory=list)
    unavailable: list[tuple[int, int]] = field(default_factory=list)
    reach: Reach | None = None
    # times too young to be voids that an exchange known to omit no-trade candles answered without
    quiet_young: list[tuple[int, int]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    requests: int = 0
    retries: int = 0


@dataclass(frozen=True)
class PageLimit:
    """A range source's page for one series: `candles` one request returns at most, or None when it could
    not be learned (`error` says why)."""

    candles: int | None
    error: str | None = None


class CandleSource(Protocol):
    name: str

    def offers(self, series: SeriesId) -> bool:
        """Whether this level has anything to offer for the series at all (a DataProvider or a history
        file, a stored 1m series to roll up, an exchange): a level without is skipped and is not a repair.
        Cheap and local; never raises."""
        ...

    def fetch(self, series: SeriesId, holes: list[Hole], now: float,
              deadline: float | None = None) -> SourceResult:
        """Candles for `holes` (closed at `now`). Must not raise for source trouble: report it in errors.

        `deadline` is a `time.monotonic()` value after which no new remote request is started."""
        ...


def closed_hole_ranges(holes: list[Hole], tf: int, now: float) -> list[tuple[int, int]]:
    """The holes as aligned (start, end) ranges, oldest first, each end clipped to the newest closed candle:
    a range source never asks for the forming one."""
    last_closed = expected_latest_closed_time(now, tf)
    wanted = [(align_up(h.start, tf), min(align_down(h.end, tf), last_closed))
              for h in sorted(holes, key=lambda h: h.start)]
    return [(s, e) for s, e in wanted if s <= e]


FetchHole = Callable[[int, int], tuple[CandleBatch, list[tuple[int, int]], bool]]


def fetch_holes_in_order(wanted: list[tuple[int, int]], fetch_hole: FetchHole, result: SourceResult, tf: int,
                         label: str, stop_reason: str) -> None:
    """Run `fetch_hole(start, end) -> (candles, voids, finished)` over the ranges, oldest first; stop at the
    first unfinished one (time bound) and say how many were not tried. Fills result.candles / voids."""
    batches: list[CandleBatch] = []
    voids: list[tuple[int, int]] = []
    for i, (start, end) in enumerate(wanted):
        batch, hole_voids, finished = fetch_hole(start, end)
        batches.append(batch)
        voids.extend(hole_voids)
        if not finished:
            if i + 1 < len(wanted):
                result.errors.append(f"{label}: {len(wanted) - i - 1} later hole(s) not tried ({stop_reason})")
            break
    result.candles = CandleBatch.concat(batches).dedupe_sorted()
    result.voids = merge_ranges(voids, tf)


class RangeSource(CandleSource, Protocol):
    """A source that fetches holes page by page (the ccxt level): it tells its page, so that holes sharing
    one are asked as one range."""

    def page_limit(self, series: SeriesId, since: int, now: float | None = None,
                   deadline: float | None = None) -> PageLimit:
        """The page the source's walk plans with for `series` from `since` on. Never raises."""
        ...
