"""A real `freqtrade trade` futures dry-run (trading_mode futures, margin_mode isolated) against the emulator's
Binance USD-M dialect, with a strategy whose `@informative("5m", candle_type="mark")` function calls
`annotate(..., candle_type="mark")` (issue 14): the futures 1m series and the 5m mark series are synced,
green and served over HTTP equal to the emulator's answers (the mark prices differ from the trade prices),
and the informative columns carry `tc_real` marked against the mark series. Real clock, emulator.
"""
from __future__ import annotations

import pytest

from tests.botkit import get_json, wait_for, write_strategy
from tests.test_e2e_bot import (  # noqa: F401 (pytest fixture)
    SIGINT_EXITS,
    Bot,
    as_rows,
    bots,
    same_candles,
)
from tradecanvas_ext.testing import ExchangeEmulator

pytestmark = pytest.mark.slow

STRATEGY = '''
from freqtrade.strategy import informative

from tradecanvas_ext.bot import TradeCanvasStrategy


class MarkStrategy(TradeCanvasStrategy):
    """No signals; an informative mark-price pair on 5m."""

    INTERFACE_VERSION = 3
    timeframe = "1m"
    can_short = True
    startup_candle_count = 30
    minimal_roi = {"0": 0.01}
    stoploss = -0.05

    @informative("5m", candle_type="mark")
    def populate_indicators_mark_5m(self, dataframe, metadata):
        # freqtrade's informative metadata is {"pair", "timeframe"}: the candle type is ours to pass
        return self.tradecanvas.annotate(dataframe, metadata, candle_type=MARK_CANDLE_TYPE)

    def populate_indicators(self, dataframe, metadata):
        return self.tradecanvas.annotate(dataframe, metadata)

    def populate_entry_trend(self, dataframe, metadata):
        return dataframe

    def populate_exit_trend(self, dataframe, metadata):
        return dataframe
'''

PAIR = "BTC/USDT:USDT"
FUT1 = f"binance:futures:{PAIR}:1m"
MARK5 = f"binance:futures:{PAIR}:5m:mark"
# every public USD-M path the emulator serves (routes.BinanceRoutes.route); anything else answers 404
SERVED = {"/fapi/v1/" + k for k in ("ping", "time", "exchangeInfo", "klines", "markPriceKlines", "ticker/24hr",
                                    "ticker", "ticker/price", "ticker/bookTicker", "depth", "premiumIndex",
                                    "fundingRate")}


@pytest.fixture
def usdm():
    e = ExchangeEmulator(seed=5, symbols=("BTC/USDT",), dialect="binanceusdm").start()
    yield e
    e.stop()


def futures_bot(tmp_path, emu: ExchangeEmulator, mark_candle_type: str | None = "mark") -> Bot:
    strategy = write_strategy(tmp_path, "MarkStrategy", STRATEGY.replace("MARK_CANDLE_TYPE", repr(mark_candle_type)))
    bot = Bot(tmp_path, emu, api=True, strategy=strategy, startup_sync_target_candles=300)

    def futures(config: dict) -> None:
        del config["tradecanvas"]["series"]  # follow the bot: its futures pair and the informative mark pair
        config.update(trading_mode="futures", margin_mode="isolated")
        config["exchange"]["pair_whitelist"] = [PAIR]
        # freqtrade refuses ticker pricing on Binance USD-M (its tickers carry no bid/ask): the order book
        for side in ("entry_pricing", "exit_pricing"):
            config[side].update(use_order_book=True, order_book_top=1)

    return bot.edit_config(futures)


def test_a_futures_dry_run_follows_its_informative_mark_pair(tmp_path, usdm, bots):  # noqa: F811
    bot = futures_bot(tmp_path, usdm)
    bots.append(bot)
    bot.start()

    sync = bot.wait_synced(timeout=120)
    assert sorted(r["series_id"] for r in sync["series_results"]) == sorted([FUT1, MARK5]), sync
    assert sync["series_synced"] == 2, sync

    def green():
        assert bot.proc.poll() is None, bot.log()[-3000:]
        body = bot.health()
        rows = {r["series_id"]: r for r in body["series"]}
        return rows if body["status"] == "green" and all(
            rows.get(s, {}).get("status") == "green" for s in (FUT1, MARK5)) else None

    wait_for(green, 90, interval=0.5, what="the futures and mark series green in health")
    assert {FUT1, MARK5} == {r["series_id"] for r in get_json(bot.url + "/api/market/series")["series"]}

    # served over HTTP equal to the emulator's answers: trade candles for the futures series, mark prices
    # (not the trade prices) for the mark series
    for sid, tf, price in ((FUT1, "1m", None), (MARK5, "5m", "mark")):
        got = bot.candles(sid, limit=300)
        rows = as_rows(got["candles"])
        assert len(rows) >= 59 and got["holes"] == [], (sid, len(rows), got["holes"])
        assert same_candles(rows, usdm.candles(PAIR, tf, rows[0][0], rows[-1][0], price=price)), sid
    mark_rows = as_rows(bot.candles(MARK5, limit=5)["candles"])
    trade_5m = usdm.candles(PAIR, "5m", mark_rows[0][0], mark_rows[-1][0])
    assert [r[1:5] for r in mark_rows] != [r[1:5] for r in trade_5m] and all(r[5] == 0 for r in mark_rows)
    # the bot and the extension asked only what the dialect serves, mark candles from the mark endpoint
    asked = {path for path, _ in usdm.requests}
    assert asked <= SERVED and {"/fapi/v1/exchangeInfo", "/fapi/v1/klines", "/fapi/v1/markPriceKlines"} <= asked, asked

    # freqtrade's own API: the informative mark columns were marked against the mark series (the bot has
    # no futures 5m series: against that, tc_real_5m would be 0 everywhere)
    rows_ = wait_for(lambda: analysed(bot), 90, interval=1.0, what="the pair analysed with tc_real_5m")
    assert all(r["tc_real"] == 1 for r in rows_), [(r["date"], r["tc_real"]) for r in rows_ if r["tc_real"] != 1]
    marked = [r["tc_real_5m"] for r in rows_ if r["tc_real_5m"] == r["tc_real_5m"]]  # NaN before the first
    assert marked and all(v == 1 for v in marked), marked
    assert bot.stop() in SIGINT_EXITS, bot.log()[-8000:]


def analysed(bot: Bot) -> list[dict] | None:
    body = bot.pair_candles(PAIR)
    cols = body.get("columns", [])
    if body.get("length", 0) == 0 or "tc_real" not in cols or "tc_real_5m" not in cols:
        return None
    return [dict(zip(cols, r, strict=True)) for r in body["data"]]


def test_without_the_candle_type_the_informative_mark_rows_are_not_marked_real(tmp_path, usdm, bots):  # noqa: F811
    """The control: an informative mark function calling annotate without candle_type marks against the
    futures 5m series, which the bot does not have: tc_real_5m is 0 on every row."""
    bot = futures_bot(tmp_path, usdm, mark_candle_type=None)
    bots.append(bot)
    bot.start()
    bot.wait_synced(timeout=120)
    rows_ = wait_for(lambda: analysed(bot), 90, interval=1.0, what="the pair analysed with tc_real_5m")
    marked = [r["tc_real_5m"] for r in rows_ if r["tc_real_5m"] == r["tc_real_5m"]]
    assert marked and all(v == 0 for v in marked), marked
    assert all(r["tc_real"] == 1 for r in rows_)
    assert bot.stop() in SIGINT_EXITS, bot.log()[-8000:]
