"""BackfillService: the decision tree of contract section 5 (freqtrade -> rollup -> ccxt), single-flight
per series, one cooldown and a time bound per call.

The cooldown (`backfill_cooldown_s` on the runtime clock, counted from the end of a repair that ran): a
read-path call does not repair a series repaired that recently, and a gap repair does not fetch again
what such a repair covered. It lives here only; callers (the hub) keep no cooldown of their own.

Locks: `_flights_lock` guards the in-flight table and the cooldown table `_repaired`; one `threading.Lock` per series
(`_series_locks`) makes repairs of a series run one at a time. Sources never raise into the service.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..domain import CandleBatch, Hole, SeriesId, align_down, align_up, expected_latest_closed_time
from ..domain.clock import Clock
from ..feed import CandleFeed
from ..metrics import Metrics
from ..sources.base import CandleSource, SourceResult
from ..sources.exchange_facts import known_reach
from ..sources.range_walk import VOID_MIN_AGE_S
from ..sources.reach import Reach, effective_reach, split_by_reach
from ..store.leases import Leases, LeaseTimeout

log = logging.getLogger(__name__)

NOTE_DONE = "tail_coverage_done"
NOTE_PARTIAL = "tail_coverage_partial"
NOTE_FAILED = "tail_coverage_best_effort_failed"


@dataclass
class CoverageResult:
    series_id: SeriesId
    start: int
    end: int
    target: int
    covered: int = 0
    filled: int = 0
    holes: list[Hole] = field(default_factory=list)
    sources: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    rejected: list[tuple[int, str]] = field(default_factory=list)
    voids_recorded: int = 0
    unavailable_recorded: int = 0
    complete: bool = False
    skipped: str | None = None  # "cooldown" when a read-path call did not repair
    to_time: int | None = None
    note: str | None = None

    @property
    def value(self) -> int:
        """The seed's integer contract: max(filled, covered) without to_time, covered with it."""
        return self.covered if self.to_time is not None else max(self.filled, self.covered)

    def with_holes(self, holes: list[Hole]) -> CoverageResult:
        """The window's holes as measured; complete when every one is settled (void or unavailable): what
        is left cannot be repaired, so a caller stops asking."""
        self.holes = holes
        self.complete = all(h.settled for h in holes)
        return self

    def to_dict(self) -> dict:
        return {
            "series_id": str(self.series_id), "start": self.start, "end": self.end, "target": self.target,
            "covered": self.covered, "filled": self.filled, "value": self.value, "complete": self.complete,
            "holes": [h.to_dict() for h in self.holes], "sources": dict(self.sources),
            "errors": list(self.errors), "rejected": len(self.rejected), "skipped": self.skipped,
            "note": self.note,
        }


class _Flight:
    def __init__(self):
        self.done = threading.Event()
        self.result: CoverageResult | None = None
        self.error: BaseException | None = None


LEVELS = ("freqtrade", "rollup", "ccxt")  # the decision tree's order; a source's `name` is its level


class BackfillService:
    """`sources` are the levels present (at most one per level name, any order); `feed` announces what a
    repair wrote; `metrics` counts it; `leases` arbitrate repairs between processes on one store."""

    def __init__(self, store, settings, clock: Clock, tracker, leases: Leases, sources: Sequence[CandleSource],
                 feed: CandleFeed, metrics: Metrics, time_bound_s: float | None = None):
        self.store, self.settings, self.clock, self.tracker = store, settings, clock, tracker
        self.leases = leases  # one repair of a series at a time across processes on one store
        self.feed, self.metrics = feed, metrics
        by_level = {s.name: s for s in sources}
        unknown = sorted(set(by_level) - set(LEVELS))
        if unknown or len(by_level) != len(sources):
            raise ValueError(f"backfill sources: one per level of {LEVELS}, got {[s.name for s in sources]}")
        self.levels: dict[str, CandleSource] = {lv: by_level[lv] for lv in LEVELS if lv in by_level}
        # ccxt timeout + retries, per call: a stuck exchange never holds a caller for long.
        self._time_bound_s = time_bound_s or max(30.0, 4 * settings.ccxt_timeout_ms / 1000)
        self._flights: dict[tuple, _Flight] = {}
        self._flights_lock = threading.Lock()
        self._series_locks: dict[SeriesId, threading.Lock] = {}
        self._repaired: dict[SeriesId, list[tuple[int, int, float]]] = {}  # (start, end, ended at)
        # young times an exchange that omits no-trade candles answered without, per series, and when
        self._quiet_young: dict[SeriesId, tuple[list[tuple[int, int]], float]] = {}

    @property
    def time_bound_s(self) -> float:
        """The longest one call may take (exchange timeouts and retries included); fixed at construction."""
        return self._time_bound_s

    # ---- public API -------------------------------------------------------------------------------
    def ensure_tail_coverage(self, sid: SeriesId, target: int, to_time: int | None = None, *,
                             read_path: bool = False) -> CoverageResult:
        """Top up [end - (target-1)*tf, end]; see contract section 5. `read_path` applies the cooldown."""
        target = max(1, int(target))
        key = ("tail", sid, target, to_time)
        return self._single_flight(key, sid, lambda: self._coverage(sid, target, to_time, read_path))

    def backfill_range(self, sid: SeriesId, start: int, end: int) -> CoverageResult:
        tf = sid.tf_seconds
        if end < start:
            raise ValueError(f"backfill_range: end {end} is before start {start}")
        end_a = align_down(int(end), tf)
        target = (end_a - align_down(int(start), tf)) // tf + 1 if end_a >= start else 1
        return self.ensure_tail_coverage(sid, target, to_time=int(end))

    def backfill_gap(self, sid: SeriesId, expected_next_time: int, actual_time: int) -> CandleBatch:
        """Repair [expected_next_time, actual_time - tf] through freqtrade then ccxt (the newest
        `gap_backfill_max_candles` of it) and return the candles now stored in that range."""
        tf = sid.tf_seconds
        last = int(actual_time) - tf
        first = max(int(expected_next_time), last - (self.settings.gap_backfill_max_candles - 1) * tf)
        if last < first:
            return CandleBatch.empty()
        key = ("gap", sid, first, last)

        def run() -> CoverageResult:
            start, end = self._outside_cooldown(sid, first, last, self.clock())
            if end < start:
                return self._measure(sid, first, last, (last - first) // tf + 1, last, skipped="cooldown")
            return self._repair(sid, start, end, levels=("freqtrade", "ccxt"), allow_ccxt=True,
                                reason="gap_backfill", target=(end - start) // tf + 1, to_time=end)

        self._single_flight(key, sid, run)
        return self.store.read_between(sid, int(expected_next_time), last)

    def answered_without(self, sid: SeriesId, now: float) -> list[tuple[int, int]]:
        """The newest times (too young to be voids) that an exchange known to omit candles without trades
        was asked for and answered without, in the series' last ccxt repair; until they are old enough to be
        confirmed as voids (then the next repair records them, or fetches what came)."""
        with self._flights_lock:
            ranges, at = self._quiet_young.get(sid, ([], 0.0))
        tf = sid.tf_seconds
        return ranges if now - at <= 2 * max(VOID_MIN_AGE_S, tf) + tf else []

    # ---- single flight ----------------------------------------------------------------------------
    def _single_flight(self, key: tuple, series: SeriesId, fn) -> CoverageResult:
        with self._flights_lock:
            flight = self._flights.get(key)
            leader = flight is None
            if leader:
                flight = self._flights[key] = _Flight()
            lock = self._series_locks.setdefault(series, threading.Lock())
        if not leader:
            flight.done.wait(self._time_bound_s * 2)
            if flight.error is not None:
                raise flight.error
            if flight.result is not None:
                return flight.result
        try:
            with lock:  # one repair of a series at a time, whatever its window
                flight.result = fn()
            return flight.result
        except BaseException as exc:
            flight.error = exc
            raise
        finally:
            if leader:
                with self._flights_lock:
                    self._flights.pop(key, None)
                flight.done.set()

    # ---- the cooldown -----------------------------------------------------------------------------
    def _cooled(self, sid: SeriesId, start: int, end: int) -> None:
        """A repair of [start, end] that ran has just ended."""
        now = self.clock()
        with self._flights_lock:
            self._repaired[sid] = [*self._recent_repairs(sid, now), (start, end, now)]

    def _cooling(self, sid: SeriesId, now: float) -> list[tuple[int, int, float]]:
        """The series' repairs that ended less than `backfill_cooldown_s` before `now`."""
        with self._flights_lock:
            return self._recent_repairs(sid, now)

    def _recent_repairs(self, sid: SeriesId, now: float) -> list[tuple[int, int, float]]:  # _flights_lock held
        cooldown = self.settings.backfill_cooldown_s
        return [r for r in self._repaired.get(sid, ()) if now - r[2] < cooldown]

    def _outside_cooldown(self, sid: SeriesId, first: int, last: int, now: float) -> tuple[int, int]:
        """[first, last] less the ends that a recent repair covered (empty when one covered it all)."""
        tf = sid.tf_seconds
        recent = self._cooling(sid, now)
        moved = True
        while moved and first <= last:
            moved = False
            for s, e, _ in recent:
                if s <= first <= e:
                    first, moved = e + tf, True
                if first <= last and s <= last <= e:
                    last, moved = s - tf, True
        return first, last

    # ---- the decision tree ------------------------------------------------------------------------
    def _coverage(self, sid: SeriesId, target: int, to_time: int | None, read_path: bool) -> CoverageResult:
        tf = sid.tf_seconds
        now = self.clock()
        latest = expected_latest_closed_time(now, tf)
        end = latest if to_time is None else min(align_down(int(to_time), tf), latest)
        start = end - (target - 1) * tf
        if read_path and self._cooling(sid, now):
            return self._measure(sid, start, end, target, to_time, skipped="cooldown")
        allow_ccxt = to_time is not None or self.settings.enable_ccxt_backfill_on_read
        return self._repair(sid, start, end, levels=("freqtrade", "rollup", "ccxt"), allow_ccxt=allow_ccxt,
                            reason="tail_coverage", target=target, to_time=to_time)

    def _open_holes(self, sid: SeriesId, start: int, end: int, now: float) -> list[Hole]:
        return self._still_open(sid, self.store.holes(sid, start, end), start, end, now)

    def _still_open(self, sid: SeriesId, holes: list[Hole], start: int, end: int, now: float) -> list[Hole]:
        """Of the window's `holes`, those still worth fetching: neither voids nor unavailable, or recorded
        so longer ago than the re-check age (`void_recheck_age_s`: a day by default, also the age a learned
        reach is kept)."""
        if not any(h.settled for h in holes):
            return holes
        fresh = self._fresh(self.store.voids(sid, start, end), now) + self._fresh(
            self.store.unavailable(sid, start, end), now)
        out = []
        for h in holes:
            if h.settled and any(vs <= h.start and h.end <= ve for vs, ve in fresh):
                continue
            out.append(Hole(h.start, h.end, h.missing_candles))
        return out

    def _fresh(self, records, now: float) -> list[tuple[int, int]]:
        max_age = self.settings.void_recheck_age_s
        return [(r.start, r.end) for r in records if now - r.checked_at < max_age]

    def _stale_cleared(self, sid: SeriesId, start: int, end: int, now: float) -> None:
        """Before the exchange is asked again: forget the voids and unavailable ranges past their re-check
        age in the window. What the new answers prove is recorded again; what they do not stays open (a void
        an older version recorded from a short or empty page clears here)."""
        max_age = self.settings.void_recheck_age_s
        for v in self.store.voids(sid, start, end):
            if now - v.checked_at >= max_age:
                self.store.clear_voids(sid, max(v.start, start), min(v.end, end))
        for u in self.store.unavailable(sid, start, end):
            if now - u.checked_at >= max_age:
                self.store.clear_unavailable(sid, max(u.start, start), min(u.end, end))

    def _reach(self, sid: SeriesId, now: float) -> Reach | None:
        """The exchange's history reach for the series: learned (fresh) from the store, else known."""
        row = self.store.reach.learned_reach(sid)
        learned = None if row is None else Reach(row[0], row[1])
        return effective_reach(known_reach(sid.exchange), learned, now)

    def _ccxt_holes(self, sid: SeriesId, holes: list[Hole], start: int, end: int, now: float,
                    res: CoverageResult) -> list[Hole]:
        """The holes the exchange can serve; the part older than its reach is recorded unavailable."""
        self._stale_cleared(sid, start, end, now)
        tf = sid.tf_seconds
        reach = self._reach(sid, now)
        inside, older = split_by_reach([(h.start, h.end) for h in holes], None if reach is None
                                       else reach.oldest(now, tf), tf)
        if older:
            self.store.record_unavailable(sid, older, "ccxt", checked_at=now)
            res.unavailable_recorded += len(older)
        return [Hole(s, e, (e - s) // tf + 1) for s, e in inside]

    def _repair(self, sid: SeriesId, start: int, end: int, levels: tuple[str, ...], allow_ccxt: bool,
                reason: str, target: int, to_time: int | None) -> CoverageResult:
        res = CoverageResult(sid, start, end, target, to_time=to_time)
        if end < start:
            return res
        now = self.clock()
        deadline = time.monotonic() + self._time_bound_s
        holes = self.store.holes(sid, start, end)
        if not self._still_open(sid, holes, start, end, now):  # the read path's usual answer: one store read
            return self._measured(sid, res, holes)
        try:  # one repair of a series at a time across processes sharing the store
            with self.leases.repair_lease(sid, self._time_bound_s):
                return self._repair_leased(sid, start, end, levels, allow_ccxt, reason, res, now, deadline)
        except LeaseTimeout:
            res.errors.append(f"{sid}: another process kept the repair lease past {self._time_bound_s:.0f}s")
            return self._measure(sid, start, end, target, to_time, into=res)

    def _repair_leased(self, sid: SeriesId, start: int, end: int, levels: tuple[str, ...], allow_ccxt: bool,
                       reason: str, res: CoverageResult, now: float, deadline: float) -> CoverageResult:
        tf = sid.tf_seconds
        target, to_time = res.target, res.to_time
        holes = self._open_holes(sid, start, end, now)  # again: the previous holder may have filled them
        if not holes:
            return self._measure(sid, start, end, target, to_time, into=res)
        started = time.monotonic()
        missing = sum(h.missing_candles for h in holes)
        self.tracker.begin(sid, missing * tf, missing, reason)
        ran = 0
        try:
            for level in levels:
                source = self.levels.get(level)
                if source is None or not holes or not self._enabled(level, sid, allow_ccxt):
                    continue
                if time.monotonic() > deadline:
                    res.errors.append(f"{sid}: time bound of {self._time_bound_s:.0f}s reached before {level}")
                    break
                if not self._offers(source, sid):  # nothing to offer: skipped, not a repair that ran
                    continue
                if level == "ccxt":
                    holes = self._ccxt_holes(sid, holes, start, end, now, res)
                    if not holes:
                        break
                ran += 1
                out = self._run_source(source, sid, holes, now, deadline)
                res.errors.extend(out.errors)
                written = self._write(sid, out.candles, start, end, now, res)
                self.metrics.candles_stored.labels(str(sid), level).inc(written)
                if out.requests:
                    self.metrics.exchange_requests.labels(sid.exchange).inc(out.requests)
                res.sources[level] = res.sources.get(level, 0) + written
                res.filled += written
                if out.voids:
                    res.voids_recorded += self._record_voids(sid, out.voids, start, end, level, now)
                if out.unavailable:
                    self.store.record_unavailable(sid, _clip(out.unavailable, start, end), level, checked_at=now)
                    res.unavailable_recorded += len(out.unavailable)
                if level == "ccxt":
                    with self._flights_lock:
                        self._quiet_young[sid] = (list(out.quiet_young), now)
                if out.reach is not None:
                    self.store.reach.record_reach(sid, out.reach.candles, out.reach.learned_at)
                holes = self._open_holes(sid, start, end, now)
                left = sum(h.missing_candles for h in holes)
                self.tracker.progress(sid, left * tf, left, ran)
        except Exception as exc:  # a bug in a level must not leave the tracker running
            log.exception("%s: repair failed", sid)
            res.errors.append(f"{sid}: {type(exc).__name__}: {exc}")
        self._measure(sid, start, end, target, to_time, into=res)
        left = sum(h.missing_candles for h in res.holes if not h.settled)
        if res.complete:
            res.note, ok = NOTE_DONE, True
        elif res.errors:
            res.note, ok = NOTE_FAILED, False
        else:
            res.note, ok = NOTE_PARTIAL, True
        self.tracker.finish(sid, ok, res.note, left * tf, left, ran,
                            error="; ".join(res.errors)[:2000] if res.errors else None)
        self.metrics.repairs.labels(str(sid), res.note).inc()
        self.metrics.repair_seconds.labels(str(sid)).observe(time.monotonic() - started)
        self.metrics.rejected(res.rejected)
        if ran:
            self._cooled(sid, start, end)
        log.info("%s: %s [%d..%d] filled %d (%s), %d missing left%s", sid, res.note, start, end, res.filled,
                 res.sources, left, f", errors: {res.errors[:2]}" if res.errors else "")
        return res

    def _enabled(self, level: str, sid: SeriesId, allow_ccxt: bool) -> bool:
        if level == "ccxt":
            return self.settings.enable_ccxt_backfill and allow_ccxt
        if level == "rollup":
            tf = sid.tf_seconds
            return tf > 60 and tf % 60 == 0 and tf <= self.settings.rollup_max_timeframe_s
        return True

    @staticmethod
    def _offers(source: CandleSource, sid: SeriesId) -> bool:
        try:
            return bool(source.offers(sid))
        except Exception:  # the protocol says never raise; be safe anyway
            log.exception("%s: source %s: offers() raised", sid, source.name)
            return False

    @staticmethod
    def _run_source(source: CandleSource, sid, holes, now, deadline) -> SourceResult:
        try:
            return source.fetch(sid, holes, now, deadline=deadline)
        except Exception as exc:  # the protocol says never raise; be safe anyway
            log.exception("%s: source %s raised", sid, source.name)
            return SourceResult(errors=[f"{sid}: {source.name}: {type(exc).__name__}: {exc}"])

    def _write(self, sid: SeriesId, batch: CandleBatch, start: int, end: int, now: float,
               res: CoverageResult) -> int:
        if len(batch) == 0:
            return 0
        inside = batch.take((batch.times >= start) & (batch.times <= end))
        if len(inside) == 0:
            return 0
        # Only what was missing counts as filled; stored candles are not rewritten by a repair.
        have = self.store.times_between(sid, int(inside.times.min()), int(inside.times.max()))
        new = inside.take(~np.isin(inside.times, have))
        if len(new) == 0:
            return 0
        up = self.store.upsert_closed(sid, new, now=now)
        res.rejected.extend(up.rejected)
        if up.rejected:
            res.errors.append(f"{sid}: rejected {len(up.rejected)} invalid candle(s) from a source, "
                              f"first {up.rejected[0]}")
        self.feed.publish(sid, up.candles)
        return up.accepted

    def _record_voids(self, sid: SeriesId, voids, start: int, end: int, source: str, now: float) -> int:
        ranges = _clip(voids, start, end)
        if ranges:
            self.store.record_voids(sid, ranges, source, checked_at=now)
        return len(ranges)

    @staticmethod
    def _measured(sid: SeriesId, res: CoverageResult, holes: list[Hole]) -> CoverageResult:
        """`res` measured from the window's holes just read: what `_measure` reads again, without reading."""
        tf = sid.tf_seconds
        window = (align_down(res.end, tf) - align_up(res.start, tf)) // tf + 1
        res.covered = max(0, window) - sum(h.missing_candles for h in holes)
        return res.with_holes(holes)

    def _measure(self, sid: SeriesId, start: int, end: int, target: int, to_time: int | None,
                 skipped: str | None = None, into: CoverageResult | None = None) -> CoverageResult:
        res = into or CoverageResult(sid, start, end, target, to_time=to_time, skipped=skipped)
        if end >= start:
            res.covered = self.store.count_between(sid, start, end)
            return res.with_holes(self.store.holes(sid, start, end))
        return res.with_holes(res.holes)


def _clip(ranges, start: int, end: int) -> list[tuple[int, int]]:
    return [(max(s, start), min(e, end)) for s, e in ranges if e >= start and s <= end]
