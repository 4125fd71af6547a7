"""Runtime: the one object a bot, the CLI or a test holds (contract section 9) — a life cycle around a Core.

`start()` builds the whole core (core.build_core), when asked the web server, and with
`enable_startup_kline_sync` on starts the startup sync in the background (contract section 6); `stop()` closes
them in reverse. `_lock` serialises start and stop only; no request path takes it.
"""
from __future__ import annotations

import gc
import logging
import threading

from .backfill.health import as_inactive
from .core import Core, SourceFactory, build_core, default_sources
from .domain import Candle, SeriesId
from .domain.clock import SYSTEM_CLOCK, Clock
from .registry import SeriesRegistry
from .series_ids import as_series_id
from .settings import Settings

log = logging.getLogger(__name__)


class RuntimeNotStarted(RuntimeError):
    """An operation that needs the store was called before start() or after stop()."""


class _CorePart:
    """A read-only attribute of the runtime that is one part of its core (None while not started)."""

    def __init__(self, attr: str):
        self.attr = attr

    def __get__(self, runtime, owner=None):
        if runtime is None:
            return self
        core = runtime.core
        return None if core is None else getattr(core, self.attr)

    def __set__(self, runtime, value):
        raise AttributeError(f"Runtime.{self.attr} is built by start(); it cannot be replaced")


class Runtime:
    def __init__(self, settings: Settings, clock: Clock = SYSTEM_CLOCK, *,
                 sources: SourceFactory = default_sources, time_bound_s: float | None = None):
        """`sources` builds the candle sources (core.default_sources outside freqtrade); `time_bound_s` is
        the longest one repair may take (default max(30 s, 4 x ccxt_timeout_ms))."""
        self.settings = settings
        self.clock = clock
        self.registry = SeriesRegistry(settings.series or ())
        self._source_factory = sources
        self._time_bound_s = time_bound_s
        self._lock = threading.Lock()
        self._core: Core | None = None
        self.server = None
        self.startup_sync_result: dict | None = None
        self._sync_thread: threading.Thread | None = None

    # ---- life cycle -------------------------------------------------------------------------------
    def start(self, serve: bool = True, startup_sync: bool | None = None) -> Runtime:
        """`startup_sync`: run the startup sync in the background (default: `enable_startup_kline_sync`);
        `startup_sync_result` holds its result once it has run."""
        with self._lock:
            if self._core is not None:
                return self
            core = self._core = build_core(self.settings, self.clock, self.registry, self._source_factory,
                                                self._time_bound_s)
            if serve:
                try:
                    self.server = self._serve()
                except BaseException:
                    self._core = None
                    core.close()
                    raise
            sync = self.settings.enable_startup_kline_sync if startup_sync is None else startup_sync
        # what start-up built lives as long as the process: out of the collector's sight, so a full
        # collection walks only what came after and never stalls ingest over the whole heap
        gc.freeze()
        if startup_sync is None and not sync:
            log.info("tradecanvas: startup sync is off (enable_startup_kline_sync)")
        if sync:
            self.start_startup_sync_in_background()
        return self

    def _serve(self):
        """Serve `create_app(self)` on listen_ip_address:listen_port. A busy port raises ServerError (an
        OSError naming host:port); start() then closes the core, so a failed start leaves nothing open."""
        from .web.app import create_app
        from .web.server import WebServer

        server = WebServer(create_app(self), self.settings.listen_ip_address, self.settings.listen_port,
                           max_connections=self.settings.max_connections)
        server.start()
        return server

    def stop(self) -> None:
        with self._lock:
            core, self._core = self._core, None
            if core is None:
                return
            server, self.server = self.server, None
            if server is not None:  # first: no request may reach a closing hub or store
                try:
                    server.stop()
                except Exception:
                    log.exception("stopping the web server failed")
            core.close()

    @property
    def started(self) -> bool:
        return self._core is not None

    @property
    def url(self) -> str | None:
        return None if self.server is None else self.server.url

    def _running(self) -> Core:
        core = self._core
        if core is None:
            raise RuntimeNotStarted("the tradecanvas runtime is not started (call start() first)")
        return core

    # ---- the parts (None before start and after stop) -----------------------------------------------
    @property
    def core(self) -> Core | None:
        return self._core

    store = _CorePart("store")  # the CandleStore
    backfill = _CorePart("backfill")  # the BackfillService
    tracker = _CorePart("tracker")
    hub = _CorePart("hub")
    metrics = _CorePart("metrics")
    health_service = _CorePart("health")

    # ---- operations -------------------------------------------------------------------------------
    @property
    def series_ids(self) -> tuple[SeriesId, ...]:
        """The active series (the registry's, which may change while the bot runs)."""
        return self.registry.active()

    # The entry points take a SeriesId or its text (as_series_id); past here only SeriesId travels.
    def is_configured(self, series_id: SeriesId | str) -> bool:
        return self.registry.is_active(as_series_id(series_id))

    def is_known(self, series_id: SeriesId | str) -> bool:
        """Active, or inactive (left a dynamic whitelist): its stored history can still be read."""
        return self.registry.is_known(as_series_id(series_id))

    def ingest_closed(self, series_id: SeriesId | str, candles) -> int:
        """validate -> store -> hub. Invalid or not-yet-closed candles are rejected; returns accepted."""
        sid = as_series_id(series_id)
        return self.ingest_closed_many([(sid, candles)])[sid]

    def ingest_closed_many(self, items) -> dict[SeriesId, int]:
        """`ingest_closed` for several series, stored in one transaction; returns accepted per series."""
        core = self._running()
        items = [(as_series_id(s), c) for s, c in items]
        results = core.store.upsert_closed_many(items, now=self.clock())
        out: dict[SeriesId, int] = {}
        for sid, _ in items:
            res = results[sid]
            out[sid] = res.accepted
            core.metrics.candles_stored.labels(str(sid), "ingest").inc(res.accepted)
            core.metrics.rejected(res.rejected)
            core.feed.publish(sid, res.candles)
        return out

    def ingest_forming(self, series_id: SeriesId | str, candle: Candle | dict) -> None:
        self._running().hub.publish_forming(as_series_id(series_id), candle)

    def health(self, series_id: SeriesId | str | None = None, now_time: float | None = None) -> dict:
        """One series' health row (`"active": false`, status `inactive` for one the bot left), or every series'."""
        core = self._running()
        if series_id is not None:
            sid = as_series_id(series_id)
            row = core.health.one(sid, now_time)
            return row if self.registry.is_active(sid) else as_inactive(row)
        return core.health.all(self.registry.active(), now_time, self.startup_sync_result,
                               inactive=self.registry.inactive())

    def run_startup_sync(self, on_result=None) -> dict:
        from .backfill.startup_sync import run_startup_kline_sync

        self.startup_sync_result = run_startup_kline_sync(self, on_result=on_result)
        return self.startup_sync_result

    def start_startup_sync_in_background(self) -> threading.Thread:
        """One background sync at a time: while one runs, that one is returned."""
        with self._lock:
            t = self._sync_thread
            if t is None or not t.is_alive():
                t = self._sync_thread = threading.Thread(target=self._background_sync, name="tc-startup-sync",
                                                         daemon=True)
                t.start()
        return t

    def _background_sync(self) -> None:
        from .backfill.startup_sync import format_table

        log.info("tradecanvas: startup sync of %d series started in the background", len(self.series_ids))
        try:
            result = self.run_startup_sync()
        except RuntimeNotStarted:  # stopped meanwhile
            return
        except Exception:
            log.exception("tradecanvas: startup sync failed")
            return
        log.info("tradecanvas: startup sync finished\n%s", format_table(result))

    @property
    def startup_sync_running(self) -> bool:
        t = self._sync_thread
        return t is not None and t.is_alive()

    def wait_startup_sync(self, timeout: float | None = None) -> dict | None:
        """Wait for a background startup sync (when one was started); its result, or None."""
        t = self._sync_thread
        if t is not None:
            t.join(timeout)
        return self.startup_sync_result
