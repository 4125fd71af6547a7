"""Contract sections 5 (level 1) and 8: candles from freqtrade's live cache and history files, never a
candle freqtrade fabricated. Real freqtrade objects throughout (DataProvider, Exchange, data handlers)."""
from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
from freqtrade.data.converter import ohlcv_fill_up_missing_data, ohlcv_to_dataframe
from freqtrade.data.dataprovider import DataProvider
from freqtrade.data.history import load_pair_history
from freqtrade.data.history.datahandlers import get_datahandler
from freqtrade.enums import CandleType, RunMode
from freqtrade.exchange import Exchange
from freqtrade.strategy import merge_informative_pair

from tradecanvas_ext.domain import CandleBatch, Hole, SeriesId
from tradecanvas_ext.sources.freqtrade_source import (
    FRAME_DATE_DTYPE,
    FreqtradeSource,
    batch_to_frame,
    frame_to_batch,
)

T0 = 1_699_999_200  # aligned to 1h
PAIR = "BTC/USDT"
FPAIR = "BTC/USDT:USDT"
S1 = SeriesId.parse(f"binance:spot:{PAIR}:1m")
F1 = SeriesId.parse(f"binance:futures:{FPAIR}:1m")


def ticks(minutes, *, tf: int = 60, skip=()) -> list[list]:
    """ccxt-style OHLCV rows (ms) at T0 + k*tf, with distinct prices, leaving out `skip`."""
    return [[(T0 + k * tf) * 1000, 10.0 + k, 12.0 + k, 9.0 + k, 11.0 + k, 5.0 + k]
            for k in minutes if k not in skip]


def frame(minutes, *, skip=(), fill=False, tf: str = "1m") -> pd.DataFrame:
    """freqtrade's own conversion (ohlcv_to_dataframe), as the exchange layer builds its cache."""
    return ohlcv_to_dataframe(ticks(minutes, skip=skip), tf, PAIR, fill_missing=fill, drop_incomplete=False)


def hole(start_min: int, end_min: int, tf: int = 60) -> Hole:
    return Hole(T0 + start_min * tf, T0 + end_min * tf, end_min - start_min + 1)


def mins(batch: CandleBatch, tf: int = 60) -> list[int]:
    return [(t - T0) // tf for t in batch.times.tolist()]


@pytest.fixture
def ft_config(tmp_path) -> dict:
    datadir = tmp_path / "data" / "binance"
    datadir.mkdir(parents=True)  # freqtrade's create_datadir does this at start-up
    return {
        "exchange": {"name": "binance", "enable_ws": False, "key": "", "secret": ""},
        "dry_run": True, "runmode": RunMode.DRY_RUN, "stake_currency": "USDT", "timeframe": "1m",
        "datadir": datadir, "dataformat_ohlcv": "feather",
    }


@pytest.fixture
def exchange(ft_config):
    """A real freqtrade Exchange built offline (validate=False: no market load); its `_klines` is the
    live candle cache that `DataProvider.ohlcv()` reads in dry-run/live mode."""
    ex = Exchange(ft_config, validate=False)
    yield ex
    ex.close()


@pytest.fixture
def dp(ft_config, exchange) -> DataProvider:
    return DataProvider(ft_config, exchange)


def cache(exchange, df: pd.DataFrame, pair: str = PAIR, tf: str = "1m",
          candle_type: CandleType = CandleType.SPOT) -> None:
    exchange._klines[(pair, tf, candle_type)] = df


def src_for(dp=None, datadir=None, **kw) -> FreqtradeSource:
    return FreqtradeSource(lambda: dp, datadir, **kw)


# ---- the live cache ----------------------------------------------------------------------------------------
def test_live_cache_rows_inside_holes_closed_only(dp, exchange):
    cache(exchange, frame(range(11)))  # minute 10 is still forming at `now`: the cache must not be trusted
    now = T0 + 10 * 60 + 30
    res = src_for(dp).fetch(S1, [hole(2, 4), hole(8, 11)], now)
    assert res.errors == [] and res.voids == [] and res.requests == 0
    assert mins(res.candles) == [2, 3, 4, 8, 9]
    got = dict(zip(mins(res.candles), res.candles.rows(), strict=True))
    assert got[3] == (T0 + 180, 13.0, 15.0, 12.0, 14.0, 8.0)
    # closed exactly at now: t + tf == now counts as closed
    res = src_for(dp).fetch(S1, [hole(8, 11)], T0 + 11 * 60)
    assert mins(res.candles) == [8, 9, 10]


def test_live_cache_fillup_rows_are_not_candles(dp, exchange):
    real = frame(range(12), skip=(4, 5, 6))
    filled = ohlcv_fill_up_missing_data(real, "1m", PAIR)  # freqtrade's own fill-up, as in its cache
    assert len(filled) == 12 and filled.loc[filled["volume"] == 0, "date"].size == 3  # they are there
    cache(exchange, filled)
    res = src_for(dp).fetch(S1, [hole(0, 11)], T0 + 12 * 60)
    assert mins(res.candles) == [0, 1, 2, 3, 7, 8, 9, 10, 11]
    assert (res.candles.volume > 0).all()


def test_live_cache_built_the_way_the_bot_builds_it(dp, exchange):
    """ohlcv_to_dataframe(fill_missing=True) is the exchange layer's path into the cache."""
    cache(exchange, frame(range(10), skip=(5,), fill=True))
    res = src_for(dp).fetch(S1, [hole(0, 9)], T0 + 3600)
    assert mins(res.candles) == [0, 1, 2, 3, 4, 6, 7, 8, 9]


def test_real_zero_volume_candles_that_are_not_fillups_are_kept(dp, exchange):
    df = frame(range(6))
    df.loc[2, ["open", "high", "low", "close", "volume"]] = [99.0, 99.0, 99.0, 99.0, 0.0]  # not prev close
    df.loc[4, ["volume"]] = 0.0  # zero volume but a real range
    cache(exchange, df)
    res = src_for(dp).fetch(S1, [hole(0, 5)], T0 + 3600)
    assert mins(res.candles) == [0, 1, 2, 3, 4, 5]


def test_first_cache_row_shaped_like_a_fillup_is_unknown():
    """After the cache ages out old rows its first row may be a fill-up whose source row is gone."""
    df = frame(range(4))
    df.loc[0, ["open", "high", "low", "close", "volume"]] = [10.0, 10.0, 10.0, 10.0, 0.0]
    df.loc[1, ["open", "high", "low", "close", "volume"]] = [10.0, 10.0, 10.0, 10.0, 0.0]
    assert mins(frame_to_batch(df, 60, None, drop_fillup=True)) == [2, 3]
    assert mins(frame_to_batch(df, 60, None, drop_fillup=False)) == [0, 1, 2, 3]


def test_other_pairs_candle_types_and_exchanges_do_not_leak(dp, exchange):
    cache(exchange, frame(range(5)), pair="ETH/USDT")
    cache(exchange, frame(range(5)), pair=FPAIR, candle_type=CandleType.FUTURES)
    assert len(src_for(dp).fetch(S1, [hole(0, 4)], T0 + 3600).candles) == 0
    assert mins(src_for(dp).fetch(F1, [hole(0, 4)], T0 + 3600).candles) == [0, 1, 2, 3, 4]
    kraken = SeriesId.parse(f"kraken:futures:{FPAIR}:1m")
    res = src_for(dp, exchange="binance").fetch(kraken, [hole(0, 4)], T0 + 3600)
    assert len(res.candles) == 0 and res.errors == []
    custom = src_for(dp, candle_type_for=lambda s: "mark")
    cache(exchange, frame(range(2)), pair=FPAIR, candle_type=CandleType.MARK)
    assert mins(custom.fetch(F1, [hole(0, 4)], T0 + 3600).candles) == [0, 1]


def test_provider_getter_is_called_on_every_fetch(ft_config, exchange):
    current = {"dp": None}
    src = FreqtradeSource(lambda: current["dp"], None)
    res = src.fetch(S1, [hole(0, 4)], T0 + 3600)
    assert len(res.candles) == 0 and res.errors == []  # no provider yet: nothing to offer, no error
    cache(exchange, frame(range(5)))
    current["dp"] = DataProvider(ft_config, exchange)  # what a reload's bot_start does
    res = src.fetch(S1, [hole(0, 4)], T0 + 3600)
    assert mins(res.candles) == [0, 1, 2, 3, 4] and res.errors == []


def test_provider_trouble_is_an_error_not_an_exception(ft_config):
    no_exchange = DataProvider(ft_config, None)  # real: ohlcv() raises OperationalException
    res = src_for(no_exchange).fetch(S1, [hole(0, 4)], T0 + 3600)
    assert len(res.candles) == 0 and len(res.errors) == 1 and "Exchange is not available" in res.errors[0]

    def boom():
        raise RuntimeError("getter exploded")

    res = FreqtradeSource(boom, None).fetch(S1, [hole(0, 4)], T0 + 3600)
    assert len(res.errors) == 1 and "getter exploded" in res.errors[0]

    class Garbage:
        def ohlcv(self, pair, timeframe, copy=True, candle_type=""):
            return pd.DataFrame({"when": [1], "open": [1.0]})

    res = src_for(Garbage()).fetch(S1, [hole(0, 4)], T0 + 3600)
    assert len(res.candles) == 0 and len(res.errors) == 1 and "date" in res.errors[0]


def test_not_trading_runmode_and_uncached_pair_give_nothing_quietly(ft_config, exchange):
    dp = DataProvider({**ft_config, "runmode": RunMode.BACKTEST}, exchange)
    cache(exchange, frame(range(5)))
    res = src_for(dp).fetch(S1, [hole(0, 4)], T0 + 3600)
    assert len(res.candles) == 0 and res.errors == []


def test_set_cached_df_does_not_feed_ohlcv(ft_config, exchange):
    """freqtrade surprise pinned: `_set_cached_df` fills the analyzed-dataframe cache
    (get_analyzed_dataframe), not the candle cache that `ohlcv()` reads (exchange._klines)."""
    dp = DataProvider(ft_config, exchange)
    dp._set_cached_df(PAIR, "1m", frame(range(5)), CandleType.SPOT)
    assert dp.ohlcv(PAIR, "1m", candle_type="spot").empty
    assert len(dp.get_analyzed_dataframe(PAIR, "1m")[0]) == 5
    assert len(src_for(dp).fetch(S1, [hole(0, 4)], T0 + 3600).candles) == 0


# ---- date units and the frame helpers ---------------------------------------------------------------
@pytest.mark.parametrize("unit", ["s", "ms", "us", "ns"])
def test_date_units_convert_right(unit, dp, exchange):
    df = frame(range(5))
    df["date"] = df["date"].dt.as_unit(unit)
    assert str(df["date"].dtype) == f"datetime64[{unit}, UTC]"
    cache(exchange, df)
    res = src_for(dp).fetch(S1, [hole(0, 4)], T0 + 3600)
    assert res.candles.times.tolist() == [T0 + 60 * k for k in range(5)]


def test_frame_to_batch_edges():
    assert len(frame_to_batch(pd.DataFrame(), 60)) == 0
    assert len(frame_to_batch(None, 60)) == 0
    df = frame(range(4))
    df["date"] = df["date"].astype("datetime64[ms, UTC]")
    df.loc[1, "date"] = pd.NaT
    df.loc[2, "date"] = df.loc[2, "date"] + pd.Timedelta(milliseconds=500)  # sub-second: dropped
    shuffled = df.iloc[::-1]
    assert mins(frame_to_batch(shuffled, 60)) == [0, 3]
    naive = frame(range(2))
    naive["date"] = naive["date"].dt.tz_localize(None)
    assert mins(frame_to_batch(naive, 60)) == [0, 1]
    with pytest.raises(TypeError):
        frame_to_batch(pd.DataFrame({"date": [1], "open": [1.0], "high": [1.0], "low": [1.0],
                                     "close": [1.0], "volume": [1.0]}), 60)


def test_batch_to_frame_is_freqtrades_layout_and_round_trips():
    live = frame(range(3))
    b = frame_to_batch(live, 60)
    out = batch_to_frame(b)
    assert list(out.columns) == ["date", "open", "high", "low", "close", "volume"]
    assert str(out["date"].dtype) == FRAME_DATE_DTYPE == str(live["date"].dtype)  # the live cache's unit
    pd.testing.assert_frame_equal(out, live.reset_index(drop=True), check_dtype=True)
    assert frame_to_batch(out, 60).rows() == b.rows()
    empty = batch_to_frame(CandleBatch.empty())
    assert len(empty) == 0 and str(empty["date"].dtype) == FRAME_DATE_DTYPE
    # holes stay holes
    gappy = batch_to_frame(b.take(np.array([0, 2])))
    assert len(gappy) == 2


def test_batch_to_frame_merges_as_an_informative_frame():
    """What a strategy does with `self.tradecanvas.candles(...)`: freqtrade's merge_informative_pair."""
    base = frame(range(30))
    inf = ohlcv_to_dataframe(ticks(range(6), tf=300), "5m", PAIR, fill_missing=False, drop_incomplete=False)
    inf_ms = inf.copy()
    inf_ms["date"] = inf_ms["date"].dt.as_unit("ms")  # a file-loaded informative frame
    ours = batch_to_frame(frame_to_batch(inf, 300))
    merged = merge_informative_pair(base, ours, "1m", "5m", ffill=True)
    ref = merge_informative_pair(base, inf_ms, "1m", "5m", ffill=True)
    pd.testing.assert_series_equal(merged["close_5m"], ref["close_5m"])
    assert merged["close_5m"].notna().sum() == 26  # 5m candle k is known from minute 5k+4 on


# ---- history files -----------------------------------------------------------------------------------------
def store_history(datadir, df, fmt="feather", pair=PAIR, tf="1m", candle_type=CandleType.SPOT):
    get_datahandler(datadir, fmt).ohlcv_store(pair, tf, df, candle_type)


@pytest.mark.parametrize("fmt", ["feather", "json", "parquet"])
def test_history_file_with_a_hole_gives_no_fabricated_candle(fmt, ft_config):
    datadir = ft_config["datadir"]
    store_history(datadir, frame(range(12), skip=(4, 5)), fmt)
    # freqtrade's default loader would fill the hole ...
    filled = load_pair_history(PAIR, "1m", datadir, data_format=fmt)
    assert len(filled) == 12
    # ... our source reads it with fill_missing=False
    res = src_for(None, datadir, data_format=fmt).fetch(S1, [hole(2, 7), hole(10, 20)], T0 + 11 * 60)
    assert mins(res.candles) == [2, 3, 6, 7, 10]  # 11 is not closed at now, 4-5 stay unknown
    assert [e for e in res.errors if "history" in e] == []
    got = dict(zip(mins(res.candles), res.candles.rows(), strict=True))
    assert got[6] == (T0 + 360, 16.0, 18.0, 15.0, 17.0, 11.0)


def test_history_zero_volume_candles_are_kept(ft_config):
    """Files from download-data are not filled, so a flat zero-volume row there is a real candle."""
    df = frame(range(4))
    df.loc[2, ["open", "high", "low", "close", "volume"]] = [13.0, 13.0, 13.0, 13.0, 0.0]  # == prev close
    store_history(ft_config["datadir"], df)
    res = src_for(None, ft_config["datadir"]).fetch(S1, [hole(0, 3)], T0 + 3600)
    assert mins(res.candles) == [0, 1, 2, 3]


def test_futures_history_file_naming(ft_config):
    datadir = ft_config["datadir"]
    store_history(datadir, frame(range(3)), pair=FPAIR, candle_type=CandleType.FUTURES)
    assert (datadir / "futures" / "BTC_USDT_USDT-1m-futures.feather").exists()
    res = src_for(None, datadir).fetch(F1, [hole(0, 5)], T0 + 3600)
    assert mins(res.candles) == [0, 1, 2]


def test_live_cache_first_then_files_for_what_is_still_missing(dp, exchange, ft_config):
    datadir = ft_config["datadir"]
    older = frame(range(10))
    older.loc[:, "close"] = 10.5  # differs from the live rows where both exist
    store_history(datadir, older)
    cache(exchange, frame(range(6, 12)))
    res = src_for(dp, datadir).fetch(S1, [hole(0, 11)], T0 + 3600)
    assert mins(res.candles) == list(range(12)) and res.errors == []
    assert res.candles.close[7] == 18.0  # the live cache wins over the file (10.5 there)
    assert res.candles.close[5] == 10.5  # older minutes come from the file


def test_history_file_is_not_read_when_the_cache_covers_the_holes(dp, exchange, tmp_path):
    cache(exchange, frame(range(6)))
    res = src_for(dp, tmp_path / "nothing-here").fetch(S1, [hole(0, 5)], T0 + 3600)
    assert mins(res.candles) == list(range(6)) and res.errors == []


def test_missing_file_is_no_error_and_corrupt_file_is(ft_config):
    datadir = ft_config["datadir"]
    res = src_for(None, datadir).fetch(S1, [hole(0, 5)], T0 + 3600)
    assert len(res.candles) == 0 and res.errors == []  # no provider, no file: nothing to offer
    path = datadir / "BTC_USDT-1m.feather"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"this is not a feather file")
    res = src_for(None, datadir).fetch(S1, [hole(0, 5)], T0 + 3600)
    assert len(res.candles) == 0 and any("unreadable" in e for e in res.errors)
    (datadir / "BTC_USDT-1m.json").write_text("[[1, 2, ")
    res = src_for(None, datadir, data_format="json").fetch(S1, [hole(0, 5)], T0 + 3600)
    assert len(res.candles) == 0 and any("unreadable" in e for e in res.errors)
    with pytest.raises(ValueError, match="hdf5"):
        FreqtradeSource(lambda: None, datadir, data_format="hdf5")


def test_no_datadir_means_no_files_and_no_error(dp, exchange):
    res = src_for(dp, None).fetch(S1, [hole(0, 5)], T0 + 3600)
    assert len(res.candles) == 0 and res.errors == []


def test_history_file_is_loaded_once_and_reloaded_when_it_changes(ft_config, monkeypatch):
    datadir = ft_config["datadir"]
    store_history(datadir, frame(range(6)))
    src = src_for(None, datadir)
    handler = src._data_handler()
    loads = []
    real = handler.ohlcv_load

    def counting(*a, **kw):
        loads.append(kw)
        return real(*a, **kw)

    monkeypatch.setattr(handler, "ohlcv_load", counting)
    assert mins(src.fetch(S1, [hole(0, 2), hole(4, 9)], T0 + 3600).candles) == [0, 1, 2, 4, 5]
    assert len(loads) == 1 and loads[0]["fill_missing"] is False
    assert mins(src.fetch(S1, [hole(3, 3)], T0 + 3600).candles) == [3]
    assert len(loads) == 1  # cached: same mtime and size
    store_history(datadir, frame(range(8)))
    path = datadir / "BTC_USDT-1m.feather"
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert mins(src.fetch(S1, [hole(6, 9)], T0 + 3600).candles) == [6, 7]
    assert len(loads) == 2


def test_fetch_result_stored_leaves_fillup_slots_as_holes(store, dp, exchange):
    """End to end on the real store (SQLite and PostgreSQL): the fill-up minutes stay holes."""
    cache(exchange, ohlcv_fill_up_missing_data(frame(range(10), skip=(3, 4)), "1m", PAIR))
    now = T0 + 3600
    res = src_for(dp).fetch(S1, store.raw_holes(S1, T0, T0 + 9 * 60), now)
    assert store.upsert_closed(S1, res.candles, now=now).accepted == 8
    assert store.raw_holes(S1, T0, T0 + 9 * 60) == [Hole(T0 + 180, T0 + 240, 2)]
