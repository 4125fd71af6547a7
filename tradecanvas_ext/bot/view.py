"""`strategy.tradecanvas`: what a strategy reads from the candle store (covered candles, health).

Read-only and local (no network); outside live/dry-run there is no store and it says so, never raises for it.
"""
from __future__ import annotations

import pandas as pd

from ..domain import MARKETS, SeriesId
from ..series_ids import checked

MAX_LIMIT = 5000


class TradeCanvasView:
    """A thin, stateless view bound to one strategy (built on every `strategy.tradecanvas` access)."""

    def __init__(self, strategy):
        self._strategy = strategy

    @staticmethod
    def _runtime():
        from .glue import current_runtime

        return current_runtime()

    @property
    def available(self) -> bool:
        """True while the store runs in this process (live or dry-run with the section enabled)."""
        return self._runtime() is not None

    @property
    def url(self) -> str | None:
        """The chart server's base URL, or None (not running, port busy, or not serving)."""
        rt = self._runtime()
        return None if rt is None else rt.url

    def series_id(self, pair: str, timeframe: str | None = None, candle_type=None) -> str:
        return str(self._sid(pair, timeframe, candle_type))

    def _sid(self, pair: str, timeframe: str | None = None, candle_type=None) -> SeriesId:
        """`candle_type`: freqtrade's CandleType or its value; the market's own (spot, futures) or None
        means the market's candles."""
        config = self._strategy.config
        exchange = str((config.get("exchange") or {}).get("name") or "").lower()
        mode = config.get("trading_mode")
        market = "futures" if str(getattr(mode, "value", mode)) == "futures" else "spot"
        tf = timeframe or self._strategy.timeframe or config.get("timeframe")
        ct = str(getattr(candle_type, "value", candle_type) or "")
        return checked(SeriesId(exchange, market, pair, tf, None if ct in ("", *MARKETS) else ct))

    @staticmethod
    def _wait_first_sync(sid: SeriesId) -> None:
        """A series that joined the bot's pairs moments ago: wait (bounded) for its first sync."""
        from .glue import process_glue

        process_glue().wait_first_sync(sid)

    def candles(self, pair: str, timeframe: str | None = None, limit: int = 500, *,
                candle_type=None) -> pd.DataFrame:
        """The last `limit` closed candles the store holds, in freqtrade's layout (`date` tz-aware UTC open
        time, open, high, low, close, volume). Holes stay holes: no row is made up. Empty (same columns)
        when the store is not running, e.g. in backtesting."""
        from ..sources.freqtrade_source import batch_to_frame

        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
            raise ValueError(f"tradecanvas.candles: limit must be an integer 1-{MAX_LIMIT}, got {limit!r}")
        sid = self._sid(pair, timeframe, candle_type)
        rt = self._runtime()
        if rt is None or rt.store is None:
            from ..domain import CandleBatch

            return batch_to_frame(CandleBatch.empty())
        self._wait_first_sync(sid)
        return batch_to_frame(rt.store.read_tail(sid, limit))

    def annotate(self, dataframe: pd.DataFrame, metadata: dict, timeframe: str | None = None,
                 candle_type=None) -> pd.DataFrame:
        """Add `tc_real` (1: a real candle in the store — or, without a store as in backtesting, in freqtrade's
        downloaded history; 0: made up by freqtrade or unknown) and `tc_void` (1: inside a confirmed exchange
        outage) to `dataframe`, in place; every other column and row stays as it is. One indexed read of the
        frame's span, then a join on time: cheap enough for every candle.

        The series is `metadata`'s pair on `timeframe`, else `metadata["timeframe"]` (what freqtrade passes
        inside an @informative function), else the strategy's. Without a running store (backtesting,
        hyperopt) `tc_void` comes from the voids recorded in the store, read-only, when it exists, and from
        those `tradecanvas data repair` recorded beside the history file.
        `candle_type` (or `metadata["candle_type"]`): mark, index, premiumIndex, funding_rate — freqtrade's
        informative metadata does not carry it, so an informative function on one of these passes it."""
        from .annotate import annotate_frame, from_history, from_store, offline_voids, sidecar_voids

        sid = self._sid(metadata["pair"], timeframe or metadata.get("timeframe"),
                        candle_type or metadata.get("candle_type"))
        rt = self._runtime()
        if rt is not None and rt.store is not None:
            self._wait_first_sync(sid)
            real, voids = from_store(rt.store, sid, dataframe)
        else:
            config = self._strategy.config
            real = from_history(config, sid)
            voids = offline_voids(config, sid, dataframe) + sidecar_voids(config, sid, dataframe)
        return annotate_frame(dataframe, real, voids)

    def health(self, pair: str, timeframe: str | None = None, *, candle_type=None) -> dict | None:
        """The series' health row (contract section 3), or None when the store is not running."""
        rt = self._runtime()
        if rt is None or rt.health_service is None:
            return None
        return rt.health(self._sid(pair, timeframe, candle_type))
