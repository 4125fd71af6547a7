"""The composition root: every part of a running runtime built whole, in dependency order, closed in reverse.

Nothing here is wired after construction: each part receives what it uses in its constructor. The
candle sources are the one variable part: a `SourceFactory` builds them from a `SourceContext` (outside
freqtrade `default_sources`; inside the bot, `bot.sources.bot_sources`).
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from .backfill.health import HealthService
from .backfill.service import BackfillService
from .backfill.tracker import ProgressTracker, this_owner
from .domain.clock import Clock
from .feed import CandleFeed
from .hub import CandleHub
from .metrics import Metrics
from .registry import SeriesRegistry
from .series_ids import parse_series_id
from .settings import Settings
from .sources.base import CandleSource
from .store import CandleStore, Store, open_store
from .store.listener import CandleListener, NoListener

log = logging.getLogger(__name__)


class Closeable(Protocol):
    def close(self) -> None: ...


@runtime_checkable
class CountsRetries(Protocol):
    """A source that retries transient exchange errors says how many (the exchange_retries metric)."""

    retries: int


@dataclass
class SourceContext:
    """What a source factory may build sources from; `closing(x)` hands x to the core to close at stop."""

    settings: Settings
    clock: Clock
    store: CandleStore
    _to_close: list[Closeable] = field(default_factory=list)

    def closing(self, part):
        self._to_close.append(part)
        return part


SourceFactory = Callable[[SourceContext], Sequence[CandleSource]]


def _no_provider() -> None:
    return None


def default_sources(ctx: SourceContext, data_provider: Callable[[], object | None] = _no_provider
                    ) -> list[CandleSource]:
    """Outside freqtrade: level 1 reads freqtrade's history files (datadir) and, when given, a DataProvider;
    then the 1m rollup; then our own ccxt objects. (Level 1 is present even with neither: it then finds
    nothing, and still counts as a level that ran — kept as it was; the exchanges issue revisits it.)"""
    from .sources.ccxt_source import CcxtSource, ExchangePool
    from .sources.freqtrade_source import FreqtradeSource
    from .sources.rollup import RollupSource

    s = ctx.settings
    return [FreqtradeSource(data_provider, s.datadir, s.data_format, exchange=s.exchange),
            RollupSource(ctx.store, s.rollup_max_timeframe_s),
            CcxtSource(ctx.closing(ExchangePool(s.ccxt_config, s.ccxt_timeout_ms)), ctx.clock)]


@dataclass(frozen=True)
class Core:
    settings: Settings
    clock: Clock
    registry: SeriesRegistry
    storage: Store  # the whole store: candles, tracker rows, leases (closed last)
    tracker: ProgressTracker
    feed: CandleFeed
    metrics: Metrics
    sources: tuple[CandleSource, ...]
    backfill: BackfillService
    health: HealthService
    hub: CandleHub
    closing: tuple[Closeable, ...]  # closed after the hub, before the store (exchange pools)
    listener: CandleListener | NoListener  # other processes' writes (a no-op on SQLite)

    @property
    def store(self) -> CandleStore:
        """The candles and voids (`storage.candles`)."""
        return self.storage.candles

    def exchange_retries(self) -> int:
        return sum(s.retries for s in self.sources if isinstance(s, CountsRetries))

    def close(self) -> None:
        """Reverse order of construction; one part's failure never keeps the others open."""
        parts: list[tuple[str, Callable[[], None]]] = [("listener", self.listener.stop), ("hub", self.hub.close)]
        parts.extend((type(p).__name__, p.close) for p in self.closing)
        parts.append(("store", self.storage.close))
        for name, close in parts:
            try:
                close()
            except Exception:
                log.exception("closing %s failed", name)


def build_core(settings: Settings, clock: Clock, registry: SeriesRegistry,
               source_factory: SourceFactory = default_sources, time_bound_s: float | None = None) -> Core:
    """Open the store and build every part on it. On failure, what was opened is closed again.
    `time_bound_s`: the longest one repair may take (default max(30 s, 4 x ccxt_timeout_ms))."""
    owner = this_owner()
    storage = open_store(settings.db_url, origin=owner)
    store = storage.candles
    ctx = SourceContext(settings, clock, store)
    try:
        tracker = ProgressTracker(storage.tracker_rows, clock, owner)
        for sid in tracker.recover_interrupted():
            log.warning("%s: a repair was interrupted by a crash or kill; marked failed", sid)
        feed = CandleFeed()
        metrics = Metrics()
        sources = tuple(source_factory(ctx))
        backfill = BackfillService(store, settings, clock, tracker, storage.leases, sources, feed, metrics,
                                   time_bound_s)
        health = HealthService(store, tracker, settings, clock, backfill.answered_without)
        hub = CandleHub(store, backfill, registry, gap_backfill=settings.enable_market_gap_backfill, metrics=metrics,
                        recovery_bound_s=backfill.time_bound_s + 5.0)
        feed.add_listener(hub.publish_closed)  # ingest, repairs and other processes reach subscribers
        listener = storage.listen(_remote_writes(store, registry, feed))
        core = Core(settings, clock, registry, storage, tracker, feed, metrics, sources, backfill, health, hub,
                    tuple(ctx._to_close), listener)
        metrics.watch(core)
    except BaseException:
        for part in (*ctx._to_close, storage):
            try:
                part.close()
            except Exception:
                log.exception("closing %s after a failed start failed", type(part).__name__)
        raise
    listener.start()
    return core


def _remote_writes(store: CandleStore, registry: SeriesRegistry, feed: CandleFeed):
    """Another process stored candles: read them back and publish them like our own."""

    def on_write(series_id: str, first: int, last: int) -> None:
        try:
            sid = parse_series_id(series_id)  # an edge: the text of a database notification
        except ValueError:
            log.warning("ignoring a candle notification for a bad series id %r", series_id[:200])
            return
        if registry.is_active(sid):
            feed.publish(sid, store.read_between(sid, first, last))

    return on_write
