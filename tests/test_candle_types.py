"""Contract section 1, candle types: series of a futures market's mark, index, premiumIndex and funding_rate
candles — their ids, their validity, the DataProvider's cache with its candle type, freqtrade's history files
with their suffixes, ccxt's price type, rollup within one candle type, and the bot following them."""
from __future__ import annotations

import numpy as np
import pytest
from freqtrade.data.converter import ohlcv_to_dataframe
from freqtrade.data.dataprovider import DataProvider
from freqtrade.data.history.datahandlers import get_datahandler
from freqtrade.enums import CandleType

from tests.botkit import PlainTradeCanvasStrategy, ccxt_rows
from tradecanvas_ext.bot.exchange_source import candle_type_for
from tradecanvas_ext.bot.follow import series_for, wanted_pairs
from tradecanvas_ext.domain import CandleBatch, Hole, SeriesId
from tradecanvas_ext.sources.ccxt_source import price_params
from tradecanvas_ext.sources.freqtrade_source import FreqtradeSource
from tradecanvas_ext.sources.rollup import RollupSource
from tradecanvas_ext.store import open_store

T0 = 1_699_999_200  # aligned to 1h
FPAIR = "BTC/USDT:USDT"
MARK = SeriesId.parse(f"binance:futures:{FPAIR}:1h:mark")
FUT = SeriesId.parse(f"binance:futures:{FPAIR}:1h")


@pytest.mark.parametrize("ct", ["mark", "index", "premiumIndex", "funding_rate"])
def test_a_candle_type_series_id_parses_and_prints_back(ct):
    sid = SeriesId.parse(f"binance:futures:{FPAIR}:1h:{ct}")
    assert (sid.symbol, sid.timeframe, sid.candle_type, sid.tf_seconds) == (FPAIR, "1h", ct, 3600)
    assert str(sid) == f"binance:futures:{FPAIR}:1h:{ct}" and SeriesId.parse(str(sid)) == sid
    assert sid != FUT and str(FUT) == f"binance:futures:{FPAIR}:1h"  # the market's own candles: no suffix


@pytest.mark.parametrize("text, part", [
    ("binance:spot:BTC/USDT:1h:mark", "needs the futures market"),
    ("binance:futures:BTC/USDT:USDT:1h:last", "candle type 'last' must be one of mark, index"),
    ("binance:futures:1h:mark", "symbol '1h' must be a ccxt unified symbol"),
])
def test_a_bad_candle_type_names_the_wrong_part(text, part):
    with pytest.raises(ValueError, match=part):
        SeriesId.parse(text)
    with pytest.raises(ValueError, match="candle type 'last' must be one of"):
        SeriesId("binance", "futures", FPAIR, "1h", "last")


def test_premium_index_and_funding_rate_values_may_be_negative_mark_prices_may_not():
    t = np.array([T0, T0 + 3600])
    rate = CandleBatch(t, np.array([-0.0001, 0.0002]), np.zeros(2), np.zeros(2), np.zeros(2), np.zeros(2))
    assert len(rate.split_valid(3600, signed=True)[0]) == 2  # freqtrade's funding rows: [rate, 0, 0, 0, 0]
    assert [r for _, r in rate.split_valid(3600)[1]] == ["non_positive_price", "non_positive_price"]
    assert not MARK.signed_prices and SeriesId.parse(f"binance:futures:{FPAIR}:8h:funding_rate").signed_prices


def test_the_store_keeps_signed_series_apart(tmp_path):
    storage = open_store(f"sqlite:///{tmp_path / 's.sqlite'}", origin="t")
    store = storage.candles
    premium = SeriesId.parse(f"binance:futures:{FPAIR}:1h:premiumIndex")
    row = CandleBatch(np.array([T0]), np.array([-0.001]), np.array([0.001]), np.array([-0.002]),
                      np.array([-0.0005]), np.array([0.0]))  # as frames and ccxt pages arrive
    assert store.upsert_closed(premium, row).accepted == 1
    assert store.upsert_closed(MARK, row).accepted == 0  # a mark price is a price
    assert store.head_time(premium) == T0 and store.head_time(FUT) is None
    storage.close()


def test_freqtrade_candle_types_and_ccxt_price_types():
    assert candle_type_for(MARK) == CandleType.MARK and candle_type_for(FUT) == CandleType.FUTURES
    assert candle_type_for(SeriesId.parse(f"binance:futures:{FPAIR}:8h:funding_rate")) == CandleType.FUNDING_RATE
    assert price_params(MARK) == {"price": "mark"} and price_params(FUT) == {}
    assert price_params(SeriesId.parse(f"binance:futures:{FPAIR}:1h:premiumIndex")) == {"price": "premiumIndex"}


def _frame(hours, base=100.0):
    return ohlcv_to_dataframe(ccxt_rows([T0 + h * 3600 for h in hours], base), "1h", FPAIR, fill_missing=False,
                              drop_incomplete=False)


class _Provider:
    """What FreqtradeSource reads of a DataProvider: ohlcv(pair, timeframe, copy=, candle_type=)."""

    def __init__(self, frames):
        self.frames, self.asked = frames, []

    def ohlcv(self, pair, timeframe, copy=True, candle_type=""):
        self.asked.append((pair, timeframe, candle_type))
        return self.frames.get((pair, timeframe, candle_type))


def test_the_live_cache_and_the_history_files_of_a_candle_type(tmp_path):
    datadir = tmp_path / "data" / "binance"
    datadir.mkdir(parents=True)
    get_datahandler(datadir, "feather").ohlcv_store(FPAIR, "1h", _frame(range(0, 6), 200.0), CandleType.MARK)
    assert (datadir / "futures" / "BTC_USDT_USDT-1h-mark.feather").exists()  # freqtrade's suffix
    provider = _Provider({(FPAIR, "1h", "mark"): _frame(range(6, 10), 300.0)})
    src = FreqtradeSource(lambda: provider, datadir)
    got = src.fetch(MARK, [Hole(T0, T0 + 9 * 3600, 10)], T0 + 11 * 3600).candles
    assert ((got.times - T0) // 3600).tolist() == list(range(10))
    assert got.open[0] == 200.0 and got.open[6] == 300.0  # the file's mark candles, then the cache's
    assert provider.asked == [(FPAIR, "1h", "mark")]
    assert len(src.fetch(FUT, [Hole(T0, T0 + 9 * 3600, 10)], T0 + 11 * 3600).candles) == 0  # no futures file


def test_rollup_stays_within_a_candle_type(tmp_path):
    storage = open_store(f"sqlite:///{tmp_path / 'r.sqlite'}", origin="t")
    store = storage.candles
    mark1 = SeriesId.parse(f"binance:futures:{FPAIR}:1m:mark")
    fut1 = SeriesId.parse(f"binance:futures:{FPAIR}:1m")
    times = [T0 + i * 60 for i in range(5)]
    store.upsert_closed(fut1, [{"candle_time": t, "open": 100.0, "high": 102.0, "low": 99.0, "close": 101.0,
                                "volume": 5.0} for t in times])
    roll = RollupSource(store, 900)
    mark5 = SeriesId.parse(f"binance:futures:{FPAIR}:5m:mark")
    assert len(roll.fetch(mark5, [Hole(T0, T0, 1)], T0 + 3600).candles) == 0  # futures 1m never makes mark 5m
    store.upsert_closed(mark1, [{"candle_time": t, "open": 50.0, "high": 51.0, "low": 49.0, "close": 50.5,
                                 "volume": 0.0} for t in times])
    got = roll.fetch(mark5, [Hole(T0, T0, 1)], T0 + 3600).candles
    assert got.times.tolist() == [T0] and got.open[0] == 50.0
    assert not roll.applicable(SeriesId.parse(f"binance:futures:{FPAIR}:5m:funding_rate"))
    storage.close()


class MarkInformative(PlainTradeCanvasStrategy):
    def informative_pairs(self):
        return [(FPAIR, "1h", "mark"), (FPAIR, "8h", "funding_rate"), (FPAIR, "5m")]


class _Pairlists:
    whitelist = [FPAIR]


def test_a_futures_bot_keeps_its_informative_candle_types():
    cfg = {"exchange": {"name": "binance", "pair_whitelist": [FPAIR]}, "timeframe": "1m",
           "trading_mode": "futures", "candle_type_def": CandleType.FUTURES, "runmode": "dry_run",
           "stake_currency": "USDT", "margin_mode": "isolated"}
    s = MarkInformative(cfg)
    s.dp = DataProvider(cfg, None, pairlists=_Pairlists())
    key = wanted_pairs(s, cfg)
    assert set(series_for(key, s, cfg)) == {
        SeriesId.parse(f"binance:futures:{FPAIR}:1m"), SeriesId.parse(f"binance:futures:{FPAIR}:5m"), MARK,
        SeriesId.parse(f"binance:futures:{FPAIR}:8h:funding_rate")}
