"""Following the bot's pairs as it runs (contract section 8): the whitelist and the informative pairs, compared
at each loop with the last ones; a series that appears is registered and synced in the background, one that
leaves becomes inactive. It never raises into freqtrade and never fetches on the bot's thread.

Locks: `FirstSyncs._lock` guards its table of events only; `SeriesFollower._cond` guards the sync queue and
the worker counts. Neither is held while a sync runs or while the registry is changed. `SeriesFollower._last`
(the last pairs seen) is touched by freqtrade's thread only (bot_start, bot_loop_start).
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import replace

from ..domain import SeriesId

log = logging.getLogger("tradecanvas_ext.bot")

SYNC_WORKERS = 4  # series that join at once sync side by side; the exchange's rate limit bounds requests

PairKey = tuple[tuple[str, ...], tuple[tuple[str, str, str], ...]]  # (whitelist, informative (pair, tf, ct))


def _value(x) -> str:
    return str(getattr(x, "value", x) or "")


def wanted_pairs(strategy, config) -> PairKey:
    """The bot's whitelist and the strategy's informative pairs (informative_pairs() and @informative) as
    plain tuples: what one loop compares with the last one. A failing user callback leaves them out."""
    try:
        pairs = tuple(strategy.dp.current_whitelist())
    except Exception:  # no pairlist attached: the static whitelist
        pairs = tuple((config.get("exchange") or {}).get("pair_whitelist") or ())
    default_ct = _value(config.get("candle_type_def")) or "spot"
    informative: list[tuple[str, str, str]] = []
    try:
        for pair, tf, candle_type in strategy.gather_informative_pairs():
            informative.append((str(pair), str(tf), _value(candle_type) or default_ct))
    except Exception as exc:  # a user callback
        log.warning("tradecanvas: informative_pairs() failed (%s: %s); keeping the whitelist series only",
                    type(exc).__name__, exc)
    return pairs, tuple(informative)


_SKIPPED_LOGGED: set[tuple[str, str, str]] = set()


def series_for(key: PairKey, strategy, config) -> tuple[SeriesId, ...]:
    """The series of a PairKey: the whitelist x the strategy timeframe, plus the informative pairs of every
    timeframe and candle type (mark, index, premiumIndex, funding_rate on a futures bot). Pairs our series
    ids cannot express are skipped with one warning each."""
    from ..settings import default_series

    if not (config.get("exchange") or {}).get("name"):
        return ()
    pairs, informative = key
    timeframe = strategy.timeframe or config.get("timeframe")
    default_ct = _value(config.get("candle_type_def")) or "spot"
    wanted: list[tuple[str, str, str | None]] = [(p, timeframe, None) for p in pairs]
    wanted += [(pair, tf, None if ct == default_ct else ct) for pair, tf, ct in informative]
    out: list[SeriesId] = []
    for pair, tf, ct in wanted:
        try:
            for sid in default_series(config, tf, [pair]) or ():
                out.append(sid if ct is None else replace(sid, candle_type=ct))
        except ValueError as exc:
            if (pair, tf, ct) not in _SKIPPED_LOGGED:
                _SKIPPED_LOGGED.add((pair, tf, ct))
                log.warning("tradecanvas: %s %s%s is not kept: %s", pair, tf, f" ({ct})" if ct else "", exc)
    return tuple(dict.fromkeys(out))


class FirstSyncs:
    """Per series that joined while the bot runs, an event set once its first sync ended (synced or not):
    `annotate` and `candles` wait on it rather than call its candles made up. Every wait on one sync ends
    by the same deadline (its start + the time bound), so a slow sync holds the bot loop once, not per call."""

    def __init__(self):
        self._lock = threading.Lock()
        self._events: dict[SeriesId, tuple[threading.Event, float]] = {}

    def begin(self, sid: SeriesId, bound_s: float) -> None:
        with self._lock:
            item = self._events.get(sid)
            if item is None or item[0].is_set():
                self._events[sid] = (threading.Event(), time.monotonic() + bound_s)

    def end(self, sid: SeriesId) -> None:
        with self._lock:
            item = self._events.get(sid)
        if item is not None:
            item[0].set()

    def syncing(self, sid: SeriesId) -> bool:
        with self._lock:
            item = self._events.get(sid)
        return item is not None and not item[0].is_set()

    def wait(self, sid: SeriesId) -> bool:
        """True when the series has no first sync pending (any more); False when its deadline passed."""
        with self._lock:
            item = self._events.get(sid)
        if item is None:
            return True
        event, deadline = item
        return event.wait(max(0.0, deadline - time.monotonic()))


class SeriesFollower:
    """Keeps the runtime's registry equal to the bot's series and syncs each series that joins.

    `check(strategy)` runs on freqtrade's thread at every loop: one comparison with the last pairs when
    nothing changed. A joining series is synced over `first_window` candles (the strategy's
    startup_candle_count, what its first analysis needs) and then `startup_sync_target_candles`, on up to
    SYNC_WORKERS daemon threads, without waiting for the others.
    """

    def __init__(self, runtime, first_syncs: FirstSyncs, first_window: int, workers: int = SYNC_WORKERS):
        self.runtime = runtime
        self.first_syncs = first_syncs
        self.first_window = max(1, int(first_window))
        self.workers = workers
        self._last: PairKey | None = None
        self._cond = threading.Condition()
        self._queue: deque[SeriesId] = deque()
        self._busy = 0
        self._threads = 0
        self._stopped = False

    def prime(self, key: PairKey) -> None:
        """The pairs the runtime's series were derived from at bot_start: no change to log or sync."""
        self._last = key

    def check(self, strategy) -> None:
        key = wanted_pairs(strategy, strategy.config)
        if key == self._last:
            return
        series = series_for(key, strategy, strategy.config)
        self._last = key
        if not series:  # an empty whitelist (a pairlist that answered nothing): keep what runs
            return
        change = self.runtime.registry.replace(series)
        for sid in change.activated:
            log.info("tradecanvas: %s joined the bot's pairs: registered, syncing in the background", sid)
        for sid in change.retired:
            log.info("tradecanvas: %s left the bot's pairs: inactive (kept and listed, no longer repaired)", sid)
        self.sync_joined(change.activated)

    def sync_joined(self, series) -> None:
        """Sync these newly registered series in the background (with enable_startup_kline_sync on)."""
        for sid in series:
            self._submit(sid)

    def _submit(self, sid: SeriesId) -> None:
        if not self.runtime.settings.enable_startup_kline_sync:
            return
        self.first_syncs.begin(sid, self.runtime.backfill.time_bound_s)
        with self._cond:
            if self._stopped:
                self.first_syncs.end(sid)
                return
            self._queue.append(sid)
            start = self._threads < self.workers and self._threads - self._busy < len(self._queue)
            if start:
                self._threads += 1
            self._cond.notify()
        if start:
            threading.Thread(target=self._work, name="tc-join-sync", daemon=True).start()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            dropped = list(self._queue)
            self._queue.clear()
            self._cond.notify_all()
        for sid in dropped:
            self.first_syncs.end(sid)

    def _work(self) -> None:
        while True:
            with self._cond:
                if not self._queue or self._stopped:
                    self._threads -= 1
                    return
                sid = self._queue.popleft()
                self._busy += 1
            try:
                self._sync(sid)
            finally:
                with self._cond:
                    self._busy -= 1
                self.first_syncs.end(sid)

    def _sync(self, sid: SeriesId) -> None:
        from ..backfill.startup_sync import sync_one

        started = time.monotonic()
        try:
            if not self.runtime.registry.is_active(sid):
                return  # it left again before its turn
            target = self.runtime.settings.startup_sync_target_candles
            first = sync_one(self.runtime, sid, min(self.first_window, target))
            row = sync_one(self.runtime, sid, target) if target > self.first_window else first
            log.info("tradecanvas: %s synced after joining: %s, %d candle(s) covered, head %s (%.1f s)%s", sid,
                     row["status"], row["covered_candles"], row["after_head_time"], time.monotonic() - started,
                     f"; {row['error']}" if row["error"] else "")
        except Exception:  # the next repair (lag check, read path) tries again
            log.exception("tradecanvas: sync of %s after joining failed", sid)
