"""The candle sources of a bot process: freqtrade's DataProvider (level 1), the rollup, and the bot's own
exchange for range fetches (level 3) with our ccxt objects as its fallback.

Built once per process by the glue and handed to each Runtime it starts as that runtime's source factory,
so a config reload rebinds them without rebuilding the core. `DataProviderSlot._lock` guards one reference.
"""
from __future__ import annotations

import threading

from ..core import SourceContext
from ..domain.clock import Clock
from ..settings import Settings
from ..sources.base import CandleSource
from ..sources.ccxt_source import CcxtSource, ExchangePool
from ..sources.freqtrade_source import FreqtradeSource
from ..sources.rollup import RollupSource
from .exchange_source import BotExchangeSource


class DataProviderSlot:
    """The bot's current DataProvider (None between a cleanup and the next bot_start)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._dp = None

    def get(self):
        with self._lock:
            return self._dp

    def set(self, dp) -> None:
        with self._lock:
            self._dp = dp


class BotSources:
    def __init__(self, settings: Settings, clock: Clock):
        self.data_provider = DataProviderSlot()
        self.pool = ExchangePool(settings.ccxt_config, settings.ccxt_timeout_ms)
        self.exchange = BotExchangeSource(CcxtSource(self.pool, clock), clock)

    def __call__(self, ctx: SourceContext) -> list[CandleSource]:
        """The runtime's source factory."""
        s = ctx.settings
        return [FreqtradeSource(self.data_provider.get, s.datadir, s.data_format, exchange=s.exchange),
                RollupSource(ctx.store, s.rollup_max_timeframe_s), self.exchange]

    def close(self, wait_s: float = 5.0) -> bool:
        """Detach the bot's exchange (waiting for a fetch in flight) and close our ccxt objects."""
        self.data_provider.set(None)
        idle = self.exchange.detach(wait_s=wait_s)
        self.pool.close()
        return idle
