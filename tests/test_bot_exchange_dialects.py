"""Issue 13: the in-bot range source through freqtrade's OWN Exchange class on several dialects (against the
emulator by URL override, dry-run): the same candles, voids and unavailable ranges as our ccxt source, and
no crash on any dialect's edge cases (newest-first pages, capped pages, latest-N only, JSON-object empties)."""
from __future__ import annotations

import pytest
from freqtrade.enums import RunMode
from freqtrade.resolvers import ExchangeResolver

from tradecanvas_ext.bot.exchange_source import BotExchangeSource, exchange_serves
from tradecanvas_ext.domain import Hole, SeriesId
from tradecanvas_ext.sources.ccxt_source import CcxtSource, ExchangePool
from tradecanvas_ext.testing import SPECS, ExchangeEmulator, ManualClock

NOW = 1_700_006_400 + 30
TF = 60
LAST = NOW - 90
SERIES = {"bybit": "bybit:spot:BTC/USDT:1m", "okx": "okx:spot:BTC/USDT:1m", "kraken": "kraken:spot:BTC/USD:1m",
          "gate": "gate:spot:BTC/USDT:1m", "coinbase": "coinbase:spot:BTC/USD:1m"}


def hole(start: int, end: int) -> Hole:
    return Hole(start, end, (end - start) // TF + 1)


class NoFallback:
    name = "ccxt"

    def offers(self, series) -> bool:
        return True

    def fetch(self, series, holes, now, deadline=None):
        raise AssertionError(f"the fallback was used for {series}")


@pytest.fixture(params=sorted(SERIES))
def setup(request, tmp_path):
    dialect = request.param
    clock = ManualClock(NOW)
    emu = ExchangeEmulator(seed=4, clock=clock, dialect=dialect).start()
    sid = SeriesId.parse(SERIES[dialect])
    pricing = {"price_side": "same", "use_order_book": False, "order_book_top": 1}
    cfg = {"exchange": {"name": SPECS[dialect].ccxt_id, "enable_ws": False, "key": "", "secret": "",
                        "ccxt_config": emu.ccxt_config(), "ccxt_async_config": emu.ccxt_config(),
                        "pair_whitelist": [sid.symbol]},
           "dry_run": True, "runmode": RunMode.DRY_RUN, "stake_currency": sid.symbol.split("/")[1],
           "timeframe": "1m", "datadir": tmp_path, "dataformat_ohlcv": "feather",
           "entry_pricing": pricing, "exit_pricing": dict(pricing), "trading_mode": "spot", "margin_mode": "",
           "candle_type_def": "spot"}
    ex = ExchangeResolver.load_exchange(cfg, load_leverage_tiers=False)
    pool = ExchangePool(emu.ccxt_config(), timeout_ms=5000)
    bot = BotExchangeSource(NoFallback(), clock, sleep=lambda s: None)
    bot.bind(ex)
    yield dialect, emu, sid, ex, bot, CcxtSource(pool, clock, sleep=lambda s: None)
    bot.detach()
    pool.close()
    ex.close()
    emu.stop()


def test_the_bot_source_answers_like_the_ccxt_source(setup):
    dialect, emu, sid, ex, bot, ours = setup
    assert exchange_serves(ex, sid)
    emu.faults.outage(LAST - 300 * TF, LAST - 290 * TF)
    emu.faults.quiet(LAST - 200 * TF, LAST - 180 * TF)
    holes = [hole(LAST - 1400 * TF, LAST - 1000 * TF), hole(LAST - 320 * TF, LAST - 150 * TF),
             hole(LAST - 20 * TF, LAST)]
    mine, theirs = bot.fetch(sid, holes, NOW), ours.fetch(sid, holes, NOW)
    assert mine.errors == [] and theirs.errors == []
    assert mine.candles.rows() == theirs.candles.rows()
    assert (mine.voids, mine.unavailable) == (theirs.voids, theirs.unavailable)
    # and both are the truth the exchange serves (within its reach)
    for h in holes:
        lo = h.start if not mine.unavailable else max(h.start, mine.unavailable[-1][1] + TF)
        got = [r for r in mine.candles.rows() if h.start <= r[0] <= h.end]
        assert got == [r for r in emu.served(sid.symbol, "1m", lo, h.end)]
    assert (LAST - 300 * TF, LAST - 291 * TF) in mine.voids
