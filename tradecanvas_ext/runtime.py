"""Runtime: wires settings, store, sources, backfill, tracker, health (and the hub and server) together.

The one object a bot, the CLI or a test holds. `_lock` protects start/stop and the DataProvider binding.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from .backfill.health import HealthService
from .backfill.service import BackfillService
from .backfill.startup_sync import run_startup_kline_sync
from .backfill.tracker import ProgressTracker
from .domain import SeriesId
from .settings import Settings
from .store import CandleStore

log = logging.getLogger(__name__)


class Runtime:
    def __init__(self, settings: Settings, clock: Callable[[], float] = time.time):
        self.settings = settings
        self.clock = clock
        self.store: CandleStore | None = None
        self.backfill: BackfillService | None = None
        self.tracker: ProgressTracker | None = None
        self.health_service: HealthService | None = None
        self.hub = None
        self.server = None
        self.startup_sync_result: dict | None = None
        self._dp = None
        self._exchange_pool = None
        self._sync_thread: threading.Thread | None = None
        self._listener = None
        self.metrics = None
        self._lock = threading.Lock()
        self._started = False

    # ---- life cycle -------------------------------------------------------------------------------
    def start(self, serve: bool = True) -> Runtime:
        with self._lock:
            if self._started:
                return self
            from .sources.ccxt_source import CcxtSource, ExchangePool
            from .sources.freqtrade_source import FreqtradeSource
            from .sources.rollup import RollupSource

            s = self.settings
            self.store = CandleStore(s.db_url)
            self.tracker = ProgressTracker(self.store, self.clock)
            for sid in self.tracker.recover_interrupted():
                log.warning("%s: a repair was interrupted by a crash or kill; marked failed", sid)
            self._exchange_pool = ExchangePool(s.ccxt_config, s.ccxt_timeout_ms)
            self.backfill = BackfillService(
                self.store, s, self.clock, self.tracker,
                freqtrade=FreqtradeSource(lambda: self._dp, s.datadir, s.data_format, exchange=s.exchange),
                rollup=RollupSource(self.store, s.rollup_max_timeframe_s),
                ccxt=CcxtSource(self._exchange_pool, self.clock),
            )
            self.health_service = HealthService(self.store, self.tracker, s, self.clock)
            from .hub import CandleHub
            from .metrics import Metrics

            self.metrics = Metrics()
            self.hub = CandleHub(self.store, self.backfill, _Configured(self.is_configured),
                                 gap_backfill=s.enable_market_gap_backfill, metrics=self.metrics,
                                 recovery_bound_s=self.backfill.time_bound_s + 5.0)
            self.backfill.on_written = self.hub.publish_closed  # repaired candles reach subscribers too
            self.backfill.metrics = self.metrics
            self.metrics.bind(self)
            self.store.origin = self.tracker.owner  # notifications and leases name this process
            if self.store.dialect == "postgresql":  # candles written by other processes reach our clients
                from .store.listener import CandleListener

                self._listener = CandleListener(s.db_url, self.store.origin, self._on_remote_write).start()
            if serve:
                self._start_server()
            self._started = True
        return self

    def _start_server(self) -> None:
        """Serve `create_app(self)` on listen_ip_address:listen_port. A busy port raises ServerError (an
        OSError naming host:port) after closing what start() opened, so a failed start leaves nothing open."""
        from .web.app import create_app
        from .web.server import WebServer

        server = WebServer(create_app(self), self.settings.listen_ip_address, self.settings.listen_port)
        try:
            server.start()
        except BaseException:
            for part in (self.hub, self._exchange_pool, self.store):
                try:
                    if part is not None:
                        part.close()
                except Exception:
                    log.exception("closing %s after a failed server start failed", type(part).__name__)
            raise
        self.server = server

    def stop(self) -> None:
        with self._lock:
            if not self._started:
                return
            self._started = False
            if self.server is not None:  # first: no request may reach a closing hub or store
                try:
                    self.server.stop()
                except Exception:
                    log.exception("stopping the web server failed")
                self.server = None
            if self._listener is not None:
                self._listener.stop()
                self._listener = None
            if self.hub is not None:
                self.hub.close()
            if self._exchange_pool is not None:
                self._exchange_pool.close()
            if self.store is not None:
                self.store.close()

    @property
    def url(self) -> str | None:
        return None if self.server is None else self.server.url

    def _on_remote_write(self, series_id: str, first: int, last: int) -> None:
        """Another process stored candles: read them back and publish them like our own."""
        if self.hub is None or not self.is_configured(series_id):
            return
        sid = SeriesId.parse(series_id)
        self.hub.publish_closed(sid, self.store.read_between(sid, first, last))

    # ---- freqtrade binding --------------------------------------------------------------------------
    def bind_data_provider(self, dp) -> None:
        with self._lock:
            self._dp = dp

    def use_range_source(self, wrap) -> None:
        """Replace the range-fetch level (level 3, `ccxt`) by `wrap(current_source)`. Inside freqtrade the
        bot glue plugs the bot's own exchange object in this way, with our ccxt source as its fallback."""
        with self._lock:
            self.backfill.levels["ccxt"] = wrap(self.backfill.levels.get("ccxt"))

    # ---- operations -------------------------------------------------------------------------------
    @property
    def series_ids(self) -> tuple[SeriesId, ...]:
        return self.settings.series_ids

    def is_configured(self, series_id: SeriesId | str) -> bool:
        return str(series_id) in (self.settings.series or ())

    def ingest_closed(self, series_id, candles) -> int:
        """validate -> store -> hub. Invalid or not-yet-closed candles are rejected; returns accepted."""
        sid = series_id if isinstance(series_id, SeriesId) else SeriesId.parse(series_id)
        return self.ingest_closed_many([(sid, candles)])[str(sid)]

    def ingest_closed_many(self, items) -> dict[str, int]:
        """`ingest_closed` for several series, stored in one transaction; returns accepted per series."""
        items = [(s if isinstance(s, SeriesId) else SeriesId.parse(s), c) for s, c in items]
        results = self.store.upsert_closed_many(items, now=self.clock())
        out = {}
        for sid, _ in items:
            res = results[str(sid)]
            out[str(sid)] = res.accepted
            if self.metrics is not None:
                self.metrics.candles_stored.labels(str(sid), "ingest").inc(res.accepted)
                self.metrics.rejected(res.rejected)
            if res.accepted and self.hub is not None:
                self.hub.publish_closed(sid, res.candles)
        return out

    def ingest_forming(self, series_id, candle) -> None:
        if self.hub is not None:
            sid = series_id if isinstance(series_id, SeriesId) else SeriesId.parse(series_id)
            self.hub.publish_forming(sid, candle)

    def health(self, series_id=None, now_time: float | None = None) -> dict:
        if series_id is not None:
            return self.health_service.one(series_id, now_time)
        return self.health_service.all(self.series_ids, now_time, self.startup_sync_result)

    def run_startup_sync(self, on_result=None) -> dict:
        self.startup_sync_result = run_startup_kline_sync(self, on_result=on_result)
        return self.startup_sync_result

    def start_startup_sync_in_background(self) -> threading.Thread:
        t = threading.Thread(target=self.run_startup_sync, name="tc-startup-sync", daemon=True)
        self._sync_thread = t
        t.start()
        return t


class _Configured:
    """`is_active` over `Runtime.is_configured`, until the runtime owns a SeriesRegistry."""

    def __init__(self, is_configured: Callable[[SeriesId], bool]):
        self.is_active = is_configured
