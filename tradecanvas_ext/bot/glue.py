"""Process-wide freqtrade glue (contract section 8): one Runtime per bot process, created at the first
`bot_start`, rebound to the new DataProvider after a config reload, fed from the DataProvider every loop.

Nothing here may raise into freqtrade: every failure is logged with what is wrong and the bot goes on.
"""
from __future__ import annotations

import atexit
import logging
import socket
import threading
import time
import weakref
from dataclasses import fields
from typing import TYPE_CHECKING

import numpy as np

from ..domain import SeriesId, expected_latest_closed_time
from ..domain.clock import SYSTEM_CLOCK, Clock
from .follow import FirstSyncs, PairKey, SeriesFollower, series_for, wanted_pairs

if TYPE_CHECKING:
    from .sources import BotSources

log = logging.getLogger("tradecanvas_ext.bot")

TRADE_RUNMODES = ("live", "dry_run")  # RunMode.LIVE / RunMode.DRY_RUN values
LAG_GRACE_S = 3.0  # after a candle closes, the bot's own refresh gets this long before we repair
LAG_REPAIR_MIN_INTERVAL_S = 10.0  # between two lag repairs of one series (at least backfill_cooldown_s)


def runmode_value(config) -> str:
    mode = config.get("runmode") if hasattr(config, "get") else None
    return str(getattr(mode, "value", mode) or "")


def _redact_url(url: str | None) -> str:
    if url and "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return str(url)


def port_in_use(host: str, port: int) -> bool:
    """True when something already listens on host:port (what a server start would fail on)."""
    if not port:
        return False
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:
        return False
    family, _, _, _, addr = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(addr)
        except OSError:
            return True
    return False


def derive_series(strategy, config) -> tuple[SeriesId, ...]:
    """The bot's whitelist x the strategy timeframe, plus its informative pairs of the bot's own candle
    type, as series ids. Pairs or timeframes our series ids cannot express are skipped with a warning."""
    return series_for(wanted_pairs(strategy, config), strategy, config)


class _LagRepairer:
    """A daemon thread that brings lagging series up to their latest closed candle, one at a time."""

    def __init__(self, runtime, min_interval_s: float):
        self.runtime = runtime
        self.min_interval_s = min_interval_s
        self._cond = threading.Condition()
        self._pending: dict[SeriesId, tuple[int, int]] = {}
        self._last_end: dict[SeriesId, float] = {}
        self._running: SeriesId | None = None
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="tc-bot-lag-repair", daemon=True)
        self._thread.start()

    def request(self, sid: SeriesId, target: int, to_time: int) -> bool:
        with self._cond:
            if self._stopped or sid in self._pending or sid == self._running:
                return False
            last = self._last_end.get(sid)
            if last is not None and time.monotonic() - last < self.min_interval_s:
                return False
            self._pending[sid] = (target, to_time)
            self._cond.notify()
        return True

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._pending.clear()
            self._cond.notify_all()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._stopped:
                    self._cond.wait()
                if self._stopped:
                    return
                sid = next(iter(self._pending))
                target, to_time = self._pending.pop(sid)
                self._running = sid
            try:
                res = self.runtime.backfill.ensure_tail_coverage(sid, target, to_time=to_time)
                if res.filled:
                    log.info("tradecanvas: %s was lagging; repaired %d candle(s) (%s)", sid, res.filled,
                             res.sources)
            except Exception:  # the next loop asks again
                log.exception("tradecanvas: lag repair of %s failed", sid)
            finally:
                with self._cond:
                    self._last_end[sid] = time.monotonic()
                    self._running = None


class BotGlue:
    """The one object per process that owns the Runtime while freqtrade runs.

    `_lock` guards the runtime reference, the bound strategy and the ingest state; it is held while a
    runtime starts (bot_start) but never during a fetch. Ingest state is touched only by freqtrade's own
    thread (bot_loop_start) and under the lock at bind/detach.
    """

    def __init__(self, clock: Clock = SYSTEM_CLOCK):
        self.clock = clock
        self.runtime = None
        self.sources: BotSources | None = None  # built with the first runtime, kept for the process
        self._lock = threading.RLock()
        self._bound: weakref.ref | None = None
        self._ingest_on = False
        self._cursors: dict[SeriesId, int] = {}
        self._heads: dict[SeriesId, int | None] = {}
        self._repairer: _LagRepairer | None = None
        self._follower: SeriesFollower | None = None
        self._following = False
        self.first_syncs = FirstSyncs()  # series that joined while the bot runs, until their first sync
        self._atexit = False

    @property
    def exchange_source(self):
        """The bot-exchange range source (level 3 inside the bot), once a runtime was created."""
        return None if self.sources is None else self.sources.exchange

    # ---- bot_start ----------------------------------------------------------------------------------
    def bot_start(self, strategy) -> None:
        try:
            self._bot_start(strategy)
        except Exception as exc:  # never into freqtrade
            self._fail(f"tradecanvas: start-up failed ({type(exc).__name__}: {exc}); the bot goes on "
                       "without the extension", exc_info=True)

    def _fail(self, message: str, exc_info: bool = False) -> None:
        log.error("%s", message, exc_info=exc_info)

    def _bot_start(self, strategy) -> None:
        from ..settings import ConfigError, Settings

        config = strategy.config
        mode = runmode_value(config)
        if mode not in TRADE_RUNMODES:
            log.info("tradecanvas: run mode %s: the extension stays off (it runs only in live and dry-run)",
                     mode or "unknown")
            return
        key: PairKey | None = None  # the pairs the series follow (None: an explicit `series`)
        try:
            settings = Settings.from_config(config)
            section = config.get("tradecanvas") or {}
            if settings.enabled and section.get("series") is None:
                key = wanted_pairs(strategy, config)
                derived = series_for(key, strategy, config)
                if derived:
                    settings = settings.with_series(derived)
        except (ConfigError, ValueError) as exc:
            with self._lock:
                running = self.runtime is not None
            self._fail(f"tradecanvas: bad \"tradecanvas\" config section: {exc}. "
                       + ("The running server keeps its previous settings." if running
                          else "The extension and its chart server are off; the bot goes on."))
            if running:
                self._bind(strategy, self.runtime)
            return
        if not settings.enabled:
            log.info("tradecanvas: disabled (\"tradecanvas\": {\"enabled\": false})")
            self._shutdown_runtime()
            return
        joined: tuple[SeriesId, ...] = ()
        with self._lock:
            rt = self.runtime
            if rt is None:
                rt = self.runtime = self._create_runtime(settings)  # starts the startup sync (section 6)
                if rt is None:
                    return
            else:
                joined = self._apply_reload(rt, settings)
            self._bind(strategy, rt, key)
            follower = self._follower
        follower.sync_joined(joined)

    def _create_runtime(self, settings):
        from ..runtime import Runtime

        host, port = settings.listen_ip_address, settings.listen_port
        serve = True
        if port_in_use(host, port):
            self._fail(f"tradecanvas: {host}:{port} is already in use, so the chart server is off "
                       "(candles are still kept and synced); free the port or change "
                       "tradecanvas.listen_port")
            serve = False
        if self.sources is None:
            from .sources import BotSources

            self.sources = BotSources(settings, self.clock)
        rt = Runtime(settings, clock=self.clock, sources=self.sources)
        try:
            rt.start(serve=serve)
        except Exception as exc:
            if not serve:
                self._fail(f"tradecanvas: cannot start: store {_redact_url(settings.db_url)}: "
                           f"{type(exc).__name__}: {exc}. The extension is off; the bot goes on.")
                return None
            server_error = f"{type(exc).__name__}: {exc}"
            rt = Runtime(settings, clock=self.clock, sources=self.sources)
            try:
                rt.start(serve=False)
            except Exception as exc2:
                self._fail(f"tradecanvas: cannot start: store {_redact_url(settings.db_url)}: "
                           f"{type(exc2).__name__}: {exc2}. The extension is off; the bot goes on.")
                return None
            self._fail(f"tradecanvas: the chart server could not start on {host}:{port} ({server_error}); "
                       "candles are still kept and synced, without HTTP/WebSocket")
        if not self._atexit:
            atexit.register(self.shutdown)
            self._atexit = True
        log.info("tradecanvas: store %s, %d series%s", _redact_url(settings.db_url), len(rt.series_ids),
                 f", serving {rt.url}" if rt.url else "")
        return rt

    def _apply_reload(self, rt, settings) -> tuple[SeriesId, ...]:
        """The reloaded config's series become the registry's; returns the series that joined."""
        old = rt.settings
        wanted = settings.series or ()
        change = rt.registry.replace(wanted)  # empty when the same series are kept
        if change:
            log.info("tradecanvas: config reload: now keeping %d series (%d new, %d retired)", len(wanted),
                     len(change.activated), len(change.retired))
        if settings == old:
            return change.activated
        changed = [f.name for f in fields(type(settings)) if getattr(old, f.name) != getattr(settings, f.name)]
        others = [c for c in changed if c != "series"]
        if others:
            log.warning("tradecanvas: config reload: %s changed; the server and store live for the process, "
                        "restart the bot for these to apply", ", ".join(f"tradecanvas.{k}" for k in others))
        return change.activated

    def _bind(self, strategy, rt, key: PairKey | None = None) -> None:
        """Attach the bot's DataProvider; with `key` (no explicit `series`) the series follow its pairs."""
        with self._lock:
            dp = getattr(strategy, "dp", None)
            self.sources.data_provider.set(dp)
            self.sources.exchange.bind(getattr(dp, "_exchange", None))
            self._bound = weakref.ref(strategy)
            self._cursors, self._heads = {}, {}
            self._ingest_on = True
            if self._repairer is not None:
                self._repairer.stop()
            self._repairer = _LagRepairer(rt, max(rt.settings.backfill_cooldown_s, LAG_REPAIR_MIN_INTERVAL_S))
            if self._follower is not None:
                self._follower.stop()
            window = int(strategy.startup_candle_count or 0) or rt.settings.startup_sync_target_candles
            self._follower = SeriesFollower(rt, self.first_syncs, window)
            self._following = key is not None
            if key is not None:
                self._follower.prime(key)
        log.info("tradecanvas: bound to the bot's DataProvider (%d series)%s", len(rt.series_ids),
                 f"; charts at {rt.url}/" if rt.url else "")

    def wait_first_sync(self, sid: SeriesId) -> bool:
        """Wait (bounded by the time bound) while a series that joined has its first sync; False on timeout."""
        return self.first_syncs.wait(sid)

    # ---- the loop's heavy part (hub/priority.py) -------------------------------------------------------
    def loop_priority(self, strategy, heavy: bool) -> None:
        """freqtrade's thread: its loop begins (`heavy`) or ends the refresh and analysis of its pairs;
        meanwhile the chart clients' work waits (bounded by LoopPriority.max_hold_s). No lock is taken:
        the bound strategy and the runtime are read once."""
        rt = self.runtime
        hub = None if rt is None else rt.hub
        if hub is None or self._bound is None or self._bound() is not strategy:
            return
        if heavy:
            hub.priority.enter()
        else:
            hub.priority.leave()

    # ---- bot_loop_start -----------------------------------------------------------------------------
    def bot_loop_start(self, strategy) -> None:
        """Store and publish the candles that closed since the last loop; ask for repairs of lagging series."""
        rt = self.runtime
        if not self._ingest_on or rt is None or self._bound is None or self._bound() is not strategy:
            return
        dp = strategy.dp
        if self._following and self._follower is not None:
            try:  # first: a pair that joined is ingested by this very loop
                self._follower.check(strategy)
            except Exception as exc:
                log.warning("tradecanvas: following the bot's pairs failed: %s: %s", type(exc).__name__, exc)
        exchange = self.sources.exchange.exchange
        now = rt.clock()
        series = rt.series_ids
        ready = []  # (series, new candles, newest time): stored together, in one transaction
        for sid in series:
            try:
                item = self._new_candles(rt, dp, exchange, sid, now)
                if item is not None:
                    ready.append(item)
            except Exception as exc:  # one series never stops the others
                log.warning("tradecanvas: ingest of %s failed: %s: %s", sid, type(exc).__name__, exc)
        self._store_new(rt, ready)
        if rt.startup_sync_running or self._repairer is None:
            return
        for sid in series:
            if self.first_syncs.syncing(sid):  # joined moments ago: its own first sync repairs it
                continue
            try:
                self._check_lag(rt, sid, now)
            except Exception as exc:
                log.warning("tradecanvas: lag check of %s failed: %s: %s", sid, type(exc).__name__, exc)

    def _new_candles(self, rt, dp, exchange, sid: SeriesId, now: float):
        """(series, candles closed since the last loop, newest time), or None when nothing is new."""
        from ..sources.freqtrade_source import frame_to_batch
        from .exchange_source import candle_type_for, exchange_matches

        if exchange is None or not exchange_matches(exchange, sid):
            return None  # not a series the bot's own cache holds
        df = dp.ohlcv(sid.symbol, sid.timeframe, copy=False, candle_type=candle_type_for(sid).value)
        if df is None or len(df) == 0:
            return None
        tf = sid.tf_seconds
        cursor = self._cursors.get(sid)
        if cursor is not None and _last_open_time(df) <= cursor:
            return None  # most loops: no candle closed since the last one (cheap check, no frame conversion)
        if cursor is not None:
            # the rows after the cursor, plus a few before it so the fill-up check sees the row before
            n = min(len(df), max(0, int((now - cursor) // tf)) + 3)
            df = df.iloc[-n:]
        batch = frame_to_batch(df, tf, now, drop_fillup=True)  # freqtrade's fill-up rows are not candles
        if len(batch) == 0:
            return None
        newest = int(batch.times[-1])
        if cursor is None:
            # first loop after binding: the whole cache, minus what the store already has
            have = rt.store.times_between(sid, int(batch.times[0]), newest)
            batch = batch.take(~np.isin(batch.times, have))
        else:
            batch = batch.take(batch.times > cursor)
        return sid, batch, newest

    def _store_new(self, rt, ready) -> None:
        """Store and publish every series' new candles in one transaction, then move the cursors."""
        if not ready:
            return
        try:
            rt.ingest_closed_many([(sid, batch) for sid, batch, _ in ready if len(batch)])
        except Exception as exc:  # the cursors stay: the next loop tries again
            log.warning("tradecanvas: ingest failed: %s: %s", type(exc).__name__, exc)
            return
        for sid, _, newest in ready:
            cursor = self._cursors.get(sid)
            self._cursors[sid] = max(newest, cursor or newest)
            head = self._heads.get(sid)
            self._heads[sid] = newest if head is None else max(head, newest)

    def _check_lag(self, rt, sid: SeriesId, now: float) -> None:
        tf = sid.tf_seconds
        expected = expected_latest_closed_time(now, tf)
        if expected <= 0 or now < expected + tf + LAG_GRACE_S:
            return
        head = self._heads.get(sid)
        if head is not None and head >= expected:
            return
        head = rt.store.head_time(sid)  # a repair or the startup sync may have moved it
        self._heads[sid] = head
        if head is not None and head >= expected:
            return
        cap = rt.settings.startup_sync_target_candles
        target = cap if head is None else max(1, min(cap, (expected - head) // tf))
        self._repairer.request(sid, target, expected)

    # ---- ft_bot_cleanup -----------------------------------------------------------------------------
    def bot_cleanup(self, strategy) -> None:
        """Detach the DataProvider and stop ingest; the server and the store stay up for the next bot_start."""
        try:
            with self._lock:
                rt = self.runtime
                bound = self._bound() if self._bound is not None else None
                if rt is None or (bound is not None and bound is not strategy):
                    return
                self._ingest_on = False
                self._bound = None
                if rt.hub is not None:
                    rt.hub.priority.leave()  # a loop that ended without saying so holds nothing back
                self._cursors, self._heads = {}, {}
                self.sources.data_provider.set(None)
                repairer, self._repairer = self._repairer, None
                follower, self._follower = self._follower, None
                source = self.sources.exchange
            if repairer is not None:
                repairer.stop()
            if follower is not None:
                follower.stop()
            if not source.detach():
                log.warning("tradecanvas: a fetch through the bot's exchange was still running at cleanup")
            log.info("tradecanvas: detached from the bot (server and store stay up until the process ends)")
        except Exception:
            log.exception("tradecanvas: cleanup failed")

    # ---- process end --------------------------------------------------------------------------------
    def _shutdown_runtime(self) -> None:
        with self._lock:
            rt, self.runtime = self.runtime, None
            repairer, self._repairer = self._repairer, None
            follower, self._follower = self._follower, None
            sources, self.sources = self.sources, None
            self._ingest_on, self._bound = False, None
        if repairer is not None:
            repairer.stop()
        if follower is not None:
            follower.stop()
        if sources is not None:
            sources.close(wait_s=5.0)
        if rt is not None:
            rt.stop()

    def shutdown(self) -> None:
        """Stop the runtime (atexit, tests). Idempotent."""
        try:
            self._shutdown_runtime()
        except Exception:
            log.exception("tradecanvas: shutdown failed")


def _last_open_time(df) -> int:
    """The open time (unix seconds) of a candle frame's last row; -1 when it cannot be read cheaply."""
    try:
        return int(df["date"].iat[-1].timestamp())
    except Exception:  # an unusual frame: let the full conversion decide
        return -1


_GLUE: BotGlue | None = None
_GLUE_LOCK = threading.Lock()


def process_glue() -> BotGlue:
    """The glue of this process (created on first use)."""
    global _GLUE
    with _GLUE_LOCK:
        if _GLUE is None:
            _GLUE = BotGlue()
        return _GLUE


def current_runtime():
    """The running Runtime of this bot process, or None (backtesting, hyperopt, not started, disabled)."""
    g = _GLUE
    return None if g is None else g.runtime


def replace_process_glue(glue: BotGlue | None) -> BotGlue | None:
    """Tests: install another glue (e.g. with a manual clock); returns the previous one (not shut down)."""
    global _GLUE
    with _GLUE_LOCK:
        old, _GLUE = _GLUE, glue
    return old
