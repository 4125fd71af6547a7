"""`data gaps` and `data repair` over one history file: scan (holes labelled by the side-car), then repair
through the decision tree — the bot's store (read-only: what the bot holds costs no request), the rollup of
its 1m candles, then the ccxt range walk — and merge into the file and its side-car. It must never write a
made-up candle, change a row the file holds, or write to the bot's store.

Threads: `Repair.run_all` rewrites one file in a writer thread while the calling thread fetches the next.
They share no mutable state and no lock: a file's `Fetched` (its report, rows, new candles, side-car) is
handed over whole and the caller does not touch it again until its `commit` returned.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..domain import CandleBatch, Hole, SeriesId, list_holes
from ..domain.clock import SYSTEM_CLOCK, Clock
from ..series_ids import checked
from ..sources.base import RangeSource, SourceResult
from ..sources.rollup import times_in_holes
from . import files as hf
from . import plan
from . import sidecar as sc

log = logging.getLogger(__name__)

# One fetch call asks the range walk for one range of at most the source's page (`RangeSource.page_limit`:
# Binance 1000, Kraken 720, OKX 100 or 300 by age): a long hole is cut into pages, and holes that fit in one
# page are asked as ONE range (the file's rows between them come back too and are dropped), so they share
# the page: the fewest requests that cover every hole. One call is what a Ctrl-C waits for. The walk adds
# the file's candle on each side when it fits in the page (an answer with candles on both sides of a
# missing time is the exchange's evidence of a void, contract section 5), and re-asks an edge it could
# not see from both sides.
STORE_ORIGIN = "tradecanvas-data-repair"


RANGE_CANDLE_TYPES = ("mark", "index", "premiumIndex")  # the range source fetches these with ccxt's price


def series_for(f: hf.HistoryFile, exchange: str, trading_mode: str) -> SeriesId | None:
    """The series a file holds; None for one no range source serves (funding rates: not OHLCV in ccxt)."""
    market = "futures" if trading_mode == "futures" else "spot"
    if f.candle_type == market:
        return checked(SeriesId(exchange, market, f.pair, f.timeframe))
    if market == "futures" and f.candle_type in RANGE_CANDLE_TYPES:
        return checked(SeriesId(exchange, market, f.pair, f.timeframe, f.candle_type))
    return None


def series_text(f: hf.HistoryFile, exchange: str, trading_mode: str) -> str:
    sid = series_for(f, exchange, trading_mode)
    if sid is not None:
        return str(sid)
    market = "futures" if trading_mode == "futures" else "spot"
    return f"{exchange}:{market}:{f.pair}:{f.timeframe}:{f.candle_type}"


@dataclass(frozen=True)
class Window:
    """`--timerange` as inclusive open times (None: open)."""

    start: int | None = None
    end: int | None = None


@dataclass(frozen=True)
class FileScan:
    file: hf.HistoryFile
    series_id: str
    candles: int
    first_time: int | None
    last_time: int | None
    gaps: tuple[plan.Gap, ...]
    sidecar: sc.Sidecar

    def to_dict(self) -> dict:
        return {"file": str(self.file.path), "pair": self.file.pair, "timeframe": self.file.timeframe,
                "candle_type": self.file.candle_type, "data_format": self.file.data_format,
                "series_id": self.series_id, "candles": self.candles, "first_time": self.first_time,
                "last_time": self.last_time, "holes": [g.to_dict() for g in self.gaps],
                "missing_candles": plan.covered(self.gaps, plan.MISSING),
                "void_candles": plan.covered(self.gaps, plan.VOID),
                "unavailable_candles": plan.covered(self.gaps, plan.UNAVAILABLE)}


def scan(f: hf.HistoryFile, series_id: str, window: Window, frame=None, side: sc.Sidecar | None = None) -> FileScan:
    """The file's holes labelled by its side-car (`frame` / `side`: what a dry run would have written)."""
    df = hf.read_frame(f) if frame is None else frame
    times = hf.frame_times(df)
    side = sc.load(f.path, series_id) if side is None else side
    holes = plan.inner_holes(times, f.tf_seconds, window.start, window.end)
    gaps = plan.label(holes, [(v.start, v.end) for v in side.voids],
                      [(u.start, u.end) for u in side.unavailable], f.tf_seconds)
    return FileScan(f, series_id, len(times), int(times[0]) if len(times) else None,
                    int(times[-1]) if len(times) else None, tuple(gaps), side)


# ---------------------------------------------------------------------------------------------- levels
class StoreLevel:
    """The bot's store, read only: its candles and the voids it recorded. Never creates a series row."""

    name = "store"

    def __init__(self, candles):
        self.candles = candles  # a CandleStore
        self._known = set(candles.known_series())

    def holds(self, sid: SeriesId) -> bool:
        return str(sid) in self._known

    def fetch(self, sid: SeriesId, holes: list[Hole]) -> tuple[CandleBatch, list[sc.Checked]]:
        if not holes or not self.holds(sid):
            return CandleBatch.empty(), []
        lo, hi = holes[0].start, holes[-1].end
        try:
            got = self.candles.read_between(sid, lo, hi)
            voids = [sc.Checked(v.start, v.end, f"store:{v.source}", v.checked_at)
                     for v in self.candles.voids(sid, lo, hi)]
        except Exception as exc:  # a store that fails mid-way is a level with nothing to offer
            log.warning("store %s: %s: %s; going on without it", sid, type(exc).__name__, exc)
            return CandleBatch.empty(), []
        return got.take(times_in_holes(got.times, holes)), voids


@dataclass(frozen=True)
class Levels:
    """The decision tree's levels for files, built whole (None: that level has nothing to offer)."""

    store: StoreLevel | None
    rollup: object | None  # sources.rollup.RollupSource over the bot's store
    ccxt: RangeSource | None  # sources.ccxt_source.CcxtSource (None: enable_ccxt_backfill is off)
    void_recheck_age_s: float
    close: Callable[[], None] = lambda: None


def open_levels(settings) -> Levels:
    """The store of the bot's db_url when it exists (opened without creating anything), its rollup, and a
    rate-limited ccxt source built from the same settings as the bot's."""
    from ..sources.ccxt_source import CcxtSource, ExchangePool
    from ..sources.rollup import RollupSource

    store = _open_existing_store(settings.db_url)
    level = StoreLevel(store.candles) if store is not None else None
    pool = ExchangePool(settings.ccxt_config, settings.ccxt_timeout_ms) if settings.enable_ccxt_backfill else None

    def close() -> None:
        if pool is not None:
            pool.close()
        if store is not None:
            store.close()

    return Levels(level, RollupSource(store.candles, settings.rollup_max_timeframe_s) if store else None,
                  CcxtSource(pool) if pool is not None else None, settings.void_recheck_age_s, close)


def _open_existing_store(db_url: str):
    from sqlalchemy.engine import make_url

    from ..store import open_store

    url = make_url(db_url)
    if url.get_backend_name() == "sqlite" and (not url.database or not Path(url.database).is_file()):
        return None  # opening it would create an empty database
    try:
        store = open_store(db_url, STORE_ORIGIN, create=False)
        store.candles.known_series()
        return store
    except Exception as exc:  # a store that cannot be read is a level with nothing to offer
        log.warning("the bot's store %s cannot be read (%s: %s): repairing from the exchange only",
                    url.render_as_string(hide_password=True), type(exc).__name__, exc)
        return None


# ---------------------------------------------------------------------------------------------- repair
@dataclass
class FileReport:
    before: FileScan
    after: FileScan | None = None
    filled: dict[str, int] = field(default_factory=lambda: {"store": 0, "rollup": 0, "ccxt": 0})
    voids_learned: int = 0
    unavailable_learned: int = 0
    requests: int = 0
    errors: list[str] = field(default_factory=list)
    interrupted: bool = False
    written: bool = False
    skipped: str | None = None  # why the file was not repaired at all

    @property
    def remaining(self) -> int:
        gaps = (self.after or self.before).gaps
        return plan.covered(gaps, plan.MISSING)

    @property
    def complete(self) -> bool:
        return self.remaining == 0

    def why(self) -> str:
        if self.complete:
            return ""
        if self.skipped:
            return self.skipped
        if self.interrupted:
            return "interrupted"
        if self.errors:
            return self.errors[0]
        return "no source had these candles nor proof that they never existed"

    def to_dict(self) -> dict:
        return {"file": str(self.before.file.path), "series_id": self.before.series_id,
                "before": self.before.to_dict(), "after": (self.after or self.before).to_dict(),
                "filled": dict(self.filled), "voids_learned": self.voids_learned,
                "unavailable_learned": self.unavailable_learned, "requests": self.requests,
                "still_missing": self.remaining, "why": self.why(), "errors": list(self.errors),
                "interrupted": self.interrupted, "written": self.written, "complete": self.complete}


@dataclass(frozen=True)
class Job:
    """One file to repair and the series it holds (None: no range source serves it)."""

    file: hf.HistoryFile
    series: SeriesId | None
    series_id: str


@dataclass(frozen=True)
class Fetched:
    """One file's repair between fetching and writing: its report so far, the rows read, the new candles (at
    times the file does not hold) and the side-car to write."""

    report: FileReport
    window: Window
    frame: pd.DataFrame
    new: CandleBatch
    sidecar: sc.Sidecar


class Repair:
    """Repairs files one after the other through `levels`; `stop` is checked between fetch calls."""

    def __init__(self, levels: Levels, clock: Clock = SYSTEM_CLOCK, stop: threading.Event | None = None):
        self.levels = levels
        self.clock = clock
        self.stop = stop or threading.Event()

    def todo(self, s: FileScan) -> list[Hole]:
        """The holes a repair looks for: missing, plus voids and unavailable ranges due for a re-check."""
        now = self.clock()
        gaps = plan.label([g.as_hole() for g in s.gaps],
                          plan.fresh(s.sidecar.voids, now, self.levels.void_recheck_age_s),
                          plan.fresh(s.sidecar.unavailable, now, plan.UNAVAILABLE_RECHECK_S), s.file.tf_seconds)
        return [g.as_hole() for g in gaps if g.kind == plan.MISSING]

    def run(self, f: hf.HistoryFile, sid: SeriesId | None, series_id: str, window: Window, dry_run: bool,
            advance: Callable[[int], None] = lambda n: None) -> FileReport:
        """One file: fetch what its holes need, then write it (unless `dry_run`)."""
        return self.commit(self.fetch(Job(f, sid, series_id), window, advance), dry_run)

    def run_all(self, jobs: Iterable[Job], window: Window, dry_run: bool,
                begin: Callable[[hf.HistoryFile], Callable[[int], None]] = lambda f: lambda n: None,
                done: Callable[[FileReport], None] = lambda r: None) -> list[FileReport]:
        """The files one after the other, each one's rewrite (in one writer thread) overlapping the next one's
        requests, so the rate limit and not the disk sets the pace; at most one rewrite runs at a time.
        Stops before the next file once `stop` is set; every file fetched is written (or its error raised)
        before this returns, also on KeyboardInterrupt. `begin(file)` gives the file's progress callback;
        `done(report)` follows each written file, in order; both are called in the calling thread."""
        reports: list[FileReport] = []
        with ThreadPoolExecutor(1, thread_name_prefix="history-rewrite") as writer:
            pending: Future[FileReport] | None = None
            for job in jobs:
                if self.stop.is_set():
                    break
                got = self.fetch(job, window, begin(job.file))
                if pending is not None:
                    reports.append(pending.result())
                    done(reports[-1])
                pending = writer.submit(self.commit, got, dry_run)
            if pending is not None:
                reports.append(pending.result())
                done(reports[-1])
        return reports

    def fetch(self, job: Job, window: Window, advance: Callable[[int], None] = lambda n: None) -> Fetched:
        """Read the file and fetch its holes through the levels; nothing is written."""
        f, sid, series_id = job.file, job.series, job.series_id
        df = hf.read_frame(f)
        before = scan(f, series_id, window, df)
        report = FileReport(before)
        todo = self.todo(before)
        if not todo:
            return Fetched(report, window, df, CandleBatch.empty(), before.sidecar)
        if sid is None or not f.is_ohlcv:
            report.skipped = f"candle type {f.candle_type}: no range source for it"
            return Fetched(report, window, df, CandleBatch.empty(), before.sidecar)
        tf = f.tf_seconds
        existing = hf.frame_times(df)
        found: list[CandleBatch] = []
        learned: list[sc.Checked] = []  # voids
        beyond: list[sc.Checked] = []  # unavailable: older than the exchange serves
        now = self.clock()

        def still(holes: list[Hole]) -> list[Hole]:
            have = np.union1d(existing, np.concatenate([b.times for b in found])) if found else existing
            voids = [(c.start, c.end) for c in learned]
            gaps = plan.label([p for h in holes for p in list_holes(have, h.start, h.end, tf)], voids, [], tf)
            return [g.as_hole() for g in gaps if g.kind == plan.MISSING]

        left = todo
        if self.levels.store is not None:
            batch, voids = self.levels.store.fetch(sid, left)
            batch = self._valid(batch, sid, now, report, "store")
            found.append(batch)
            learned.extend(voids)
            report.filled["store"] = len(plan.new_rows(existing, batch, left))
            left = still(left)
        if self.levels.rollup is not None and left:
            res: SourceResult = self.levels.rollup.fetch(sid, left, now)
            batch = self._valid(res.candles, sid, now, report, "rollup")
            found.append(batch)
            report.filled["rollup"] = len(plan.new_rows(existing, batch, left))
            report.errors.extend(res.errors)
            left = still(left)
        advance(sum(h.missing_candles for h in todo) - sum(h.missing_candles for h in left))
        if left and self.levels.ccxt is None:
            report.errors.append("the exchange level is off (enable_ccxt_backfill)")
        elif left:
            # the oldest page is the smallest (OKX's history endpoint): a group of that size is one page anywhere
            page = self.levels.ccxt.page_limit(sid, left[0].start - tf, now)
            groups = [] if page.candles is None else plan.group_for_fetch(left, tf, page.candles, len(left))
            if page.error:
                report.errors.append(page.error)
            for group in groups:
                if self.stop.is_set():
                    report.interrupted = True
                    break
                now = self.clock()
                span = Hole(group[0].start, group[-1].end, (group[-1].end - group[0].start) // tf + 1)
                res = self.levels.ccxt.fetch(sid, [span], now)
                batch = self._valid(res.candles, sid, now, report, "ccxt")
                found.append(batch)
                report.filled["ccxt"] += len(plan.new_rows(existing, batch, group))
                learned.extend(sc.Checked(s, e, "ccxt", now) for s, e in plan.clip(res.voids, group, tf))
                beyond.extend(sc.Checked(s, e, "ccxt", now) for s, e in plan.clip(res.unavailable, group, tf))
                report.requests += res.requests
                report.errors.extend(res.errors)
                advance(sum(h.missing_candles for h in group))
        new = plan.new_rows(existing, CandleBatch.concat(found), todo)
        report.voids_learned = sum((c.end - c.start) // tf + 1 for c in learned)
        report.unavailable_learned = sum((c.end - c.start) // tf + 1 for c in beyond)
        return Fetched(report, window, df, new, self._sidecar(before.sidecar, learned, beyond, new, tf, now))

    @staticmethod
    def commit(got: Fetched, dry_run: bool) -> FileReport:
        """Merge what was fetched into the file and write it and its side-car, each atomically (unless
        `dry_run`); the report's `after` is the file as written (or as a dry run would have written it)."""
        report = got.report
        f, before = report.before.file, report.before
        merged = hf.merged_frame(got.frame, got.new)
        if not dry_run:
            if len(got.new):
                hf.write_frame(f, merged)
            if got.sidecar != before.sidecar:
                sc.save(f.path, got.sidecar)
            report.written = bool(len(got.new)) or got.sidecar != before.sidecar
        report.after = scan(f, before.series_id, got.window, merged, got.sidecar)
        return report

    @staticmethod
    def _valid(batch: CandleBatch, sid: SeriesId, now: float, report: FileReport, level: str) -> CandleBatch:
        good, rejected = batch.split_valid(sid.tf_seconds, now, sid.signed_prices)
        if rejected:
            report.errors.append(f"{level}: rejected {len(rejected)} invalid candle(s), first {rejected[0]}")
        return good

    @staticmethod
    def _sidecar(old: sc.Sidecar, voids: list[sc.Checked], unavailable: list[sc.Checked], new: CandleBatch,
                 tf: int, now: float) -> sc.Sidecar:
        """`old` with the voids and unavailable ranges learned recorded (a newer check wins) and the filled
        times cut out of both."""
        if not voids and not unavailable and not len(new):
            return old
        filled = [(int(t), int(t)) for t in new.times]
        proven = [(c.start, c.end) for c in voids]  # a re-checked range the exchange now proves empty
        side = sc.Sidecar(old.series_id, _recorded(old.voids, voids, filled, tf),
                          _recorded(old.unavailable, unavailable, filled + proven, tf), now, old.extra)
        if (side.voids, side.unavailable) == (old.voids, old.unavailable):
            return old
        return side


def _recorded(old: tuple[sc.Checked, ...], learned: list[sc.Checked], filled: list[tuple[int, int]],
              tf: int) -> tuple[sc.Checked, ...]:
    out = tuple(old)
    by_source: dict[tuple[str, float], list[tuple[int, int]]] = {}
    for c in learned:
        by_source.setdefault((c.source, c.checked_at), []).append((c.start, c.end))
    for (source, at), ranges in sorted(by_source.items(), key=lambda kv: kv[0][1]):
        out = sc.with_ranges(out, ranges, source, at, tf, drop=filled)
    if not by_source and filled:
        out = sc.with_ranges(out, [], "", 0.0, tf, drop=filled)
    return out
