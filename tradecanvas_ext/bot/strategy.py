"""`TradeCanvasStrategy`: subclass it instead of `IStrategy` to run tradecanvas inside freqtrade.

Thin on purpose: no module-level threads, locks or state (`hyperopt -j N` pickles base classes by value),
the runtime is imported lazily, and nothing here raises into freqtrade.
"""
from __future__ import annotations

import logging
from datetime import datetime

from freqtrade.strategy import IStrategy

log = logging.getLogger("tradecanvas_ext.bot")

_TRADE_RUNMODES = ("live", "dry_run")


def _trading(config) -> bool:
    mode = config.get("runmode")
    return str(getattr(mode, "value", mode)) in _TRADE_RUNMODES


class TradeCanvasStrategy(IStrategy):
    """freqtrade strategy base class with a gap-aware candle store, backfill and a chart server.

    In live and dry-run mode `bot_start` opens the store, starts the server (once per process) and the
    startup sync in the background; `bot_loop_start` stores and publishes the candles that closed since the
    last loop; `ft_bot_cleanup` detaches the bot (the server stays up for the next `bot_start`). In every
    other run mode (backtesting, hyperopt, plotting, webserver) nothing starts.

    While freqtrade refreshes and analyses the pairs (from `gather_informative_pairs`, which it calls just
    before the refresh, to the end of `analyze`), the chart clients' work waits (hub/priority.py): the
    loop's slowest part does not share the interpreter with them.

    Subclasses that override `bot_start`, `bot_loop_start`, `gather_informative_pairs`, `analyze` or
    `ft_bot_cleanup` must call `super()`.
    `self.tradecanvas.candles(pair, timeframe=None, limit=500)` and `.health(pair, timeframe=None)` read
    what the store covers.
    """

    @property
    def tradecanvas(self):
        from tradecanvas_ext.bot.view import TradeCanvasView

        return TradeCanvasView(self)

    def bot_start(self, **kwargs) -> None:
        if not _trading(self.config):
            log.info("tradecanvas: run mode %s: the extension stays off (it runs only in live and dry-run)",
                     getattr(self.config.get("runmode"), "value", self.config.get("runmode")))
            return
        try:
            from tradecanvas_ext.bot.glue import process_glue

            process_glue().bot_start(self)
        except Exception:  # an exception here would abort the bot (StrategyError)
            log.exception("tradecanvas: bot_start failed; the bot goes on without the extension")

    def bot_loop_start(self, current_time: datetime, **kwargs) -> None:
        if not _trading(self.config):  # called once per candle in backtesting: stay cheap
            return
        try:
            from tradecanvas_ext.bot.glue import process_glue

            process_glue().bot_loop_start(self)
        except Exception:
            log.exception("tradecanvas: bot_loop_start failed")

    def gather_informative_pairs(self):
        self._tc_loop_priority(True)  # freqtrade's loop calls it right before it refreshes the candles
        return super().gather_informative_pairs()

    def analyze(self, pairs: list[str]) -> None:
        self._tc_loop_priority(True)
        try:
            super().analyze(pairs)
        finally:
            self._tc_loop_priority(False)

    def _tc_loop_priority(self, heavy: bool) -> None:
        if not _trading(self.config):
            return
        try:
            from tradecanvas_ext.bot.glue import process_glue

            process_glue().loop_priority(self, heavy)
        except Exception:
            log.exception("tradecanvas: loop priority failed")

    def ft_bot_cleanup(self) -> None:
        if _trading(self.config):
            try:
                from tradecanvas_ext.bot.glue import process_glue

                process_glue().bot_cleanup(self)
            except Exception:
                log.exception("tradecanvas: cleanup failed")
        super().ft_bot_cleanup()
