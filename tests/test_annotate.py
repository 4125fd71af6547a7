"""`self.tradecanvas.annotate(dataframe, metadata)`: freqtrade's fill-up rows are marked tc_real 0, real
candles 1, rows inside a confirmed void tc_void 1; nothing else in the frame changes. Backtesting uses
freqtrade's downloaded history (no server)."""
from __future__ import annotations

import numpy as np
import pandas as pd
from freqtrade.data.history.datahandlers import get_datahandler
from freqtrade.enums import CandleType, RunMode
from hypothesis import given
from hypothesis import strategies as st

from tests.botkit import (
    PlainTradeCanvasStrategy,
    cache_frame,
    ft_config,
    make_strategy,
    offline_exchange,
    set_cache,
)
from tradecanvas_ext.bot.annotate import annotate_frame, mark
from tradecanvas_ext.domain import SeriesId

NOW = 1_700_006_400 + 30
T = NOW - 30 - 30 * 60
SID = SeriesId.parse("binance:spot:BTC/USDT:1m")
HOLE = [T + 10 * 60, T + 11 * 60, T + 12 * 60]
REAL = [t for t in range(T, T + 20 * 60, 60) if t not in HOLE]


def test_fillup_rows_are_not_real_and_a_void_is_marked(tmp_path, glue):
    cfg = ft_config(tmp_path)
    ex = offline_exchange(cfg)
    set_cache(ex, cache_frame(REAL))  # freqtrade fills the 3-candle hole with flat, zero-volume rows
    s = make_strategy(PlainTradeCanvasStrategy, cfg, ex)
    s.ft_bot_start()
    s.bot_loop_start(current_time=None)  # the store learns the real candles from the live cache
    glue.runtime.store.record_void(SID, HOLE[1], HOLE[2], "ccxt", checked_at=NOW)  # the exchange confirmed 2

    df = s.dp.ohlcv("BTC/USDT", "1m", candle_type=CandleType.SPOT).copy()
    before = df.copy()
    out = s.tradecanvas.annotate(df, {"pair": "BTC/USDT"})
    assert out is df and len(df) == 20
    times = df["date"].dt.as_unit("s").astype("int64").tolist()
    assert [t for t, r in zip(times, df["tc_real"], strict=True) if r == 0] == HOLE
    assert [t for t, v in zip(times, df["tc_void"], strict=True) if v == 1] == HOLE[1:]
    pd.testing.assert_frame_equal(df[before.columns], before)  # every other column and row untouched


def test_backtesting_uses_downloaded_history_without_a_server(tmp_path):
    cfg = ft_config(tmp_path, runmode=RunMode.BACKTEST)
    raw = cache_frame(REAL, fill=False)
    get_datahandler(cfg["datadir"], "feather").ohlcv_store("BTC/USDT", "1m", raw, CandleType.SPOT)
    s = make_strategy(PlainTradeCanvasStrategy, cfg, None)
    s.ft_bot_start()  # backtesting: nothing starts
    assert not s.tradecanvas.available
    filled = cache_frame(REAL)  # what load_pair_history hands a backtest (fill_up_missing=True)
    s.tradecanvas.annotate(filled, {"pair": "BTC/USDT"})
    times = filled["date"].dt.as_unit("s").astype("int64").tolist()
    assert [t for t, r in zip(times, filled["tc_real"], strict=True) if r == 0] == HOLE
    assert filled["tc_void"].sum() == 0


def test_empty_frame():
    df = pd.DataFrame({"date": pd.to_datetime([], utc=True), "close": []})
    annotate_frame(df, np.array([60]), [(0, 100)])
    assert list(df.columns) == ["date", "close", "tc_real", "tc_void"] and len(df) == 0


@given(frame=st.sets(st.integers(0, 200), max_size=80), real=st.sets(st.integers(0, 200), max_size=80),
       voids=st.lists(st.tuples(st.integers(0, 200), st.integers(0, 20)), max_size=5))
def test_mark_equals_reference(frame, real, voids):
    times = np.array(sorted(frame), dtype=np.int64) * 60
    real_t = np.array(sorted(real), dtype=np.int64) * 60
    vr = [(a * 60, (a + n) * 60) for a, n in voids]
    r, v = mark(times, real_t, vr)
    for t, ri, vi in zip(times.tolist(), r.tolist(), v.tolist(), strict=True):
        assert ri == (t in set(real_t.tolist()))
        assert vi == (not ri and any(a <= t <= b for a, b in vr))


def test_annotate_takes_the_timeframe_from_metadata(tmp_path, glue):
    """Inside an @informative('5m') function freqtrade passes {"pair", "timeframe": "5m"}: the rows are
    marked against the 5m series, not the strategy's 1m one (which holds none of these times here)."""
    cfg = ft_config(tmp_path, section={"series": [str(SID), "binance:spot:BTC/USDT:5m"]})
    s = make_strategy(PlainTradeCanvasStrategy, cfg, offline_exchange(cfg))
    s.ft_bot_start()
    five = SeriesId.parse("binance:spot:BTC/USDT:5m")
    start = (T // 300) * 300
    times5 = list(range(start, start + 6 * 300, 300))
    stored = [t for i, t in enumerate(times5) if i != 2]
    glue.runtime.ingest_closed(five, [{"candle_time": t, "open": 1.0, "high": 2.0, "low": 0.5, "close": 1.5,
                                       "volume": 1.0} for t in stored])
    df = pd.DataFrame({"date": pd.to_datetime(times5, unit="s", utc=True), "close": 1.0})
    s.tradecanvas.annotate(df, {"pair": "BTC/USDT", "timeframe": "5m"})
    assert df["tc_real"].tolist() == [1, 1, 0, 1, 1, 1]
    s.tradecanvas.annotate(df, {"pair": "BTC/USDT"})  # the strategy's 1m series: none of these times
    assert df["tc_real"].tolist() == [0] * 6


def test_backtesting_marks_the_voids_recorded_in_the_store_read_only(tmp_path):
    """No runtime (backtesting): tc_void comes from the store the section names, opened read-only; a
    missing store is not created."""
    from tradecanvas_ext.store import open_store

    cfg = ft_config(tmp_path, runmode=RunMode.BACKTEST)
    db = tmp_path / "tc.sqlite"
    s = make_strategy(PlainTradeCanvasStrategy, cfg, None)
    s.ft_bot_start()
    filled = cache_frame(REAL)
    s.tradecanvas.annotate(filled, {"pair": "BTC/USDT"})
    assert filled["tc_void"].sum() == 0 and not db.exists()  # no store: nothing recorded, nothing created

    storage = open_store(f"sqlite:///{db}", origin="test")
    storage.candles.record_void(SID, HOLE[1], HOLE[2], "ccxt", checked_at=NOW)
    storage.close()
    size = db.stat().st_size
    filled = cache_frame(REAL)
    s.tradecanvas.annotate(filled, {"pair": "BTC/USDT"})
    times = filled["date"].dt.as_unit("s").astype("int64").tolist()
    assert [t for t, v in zip(times, filled["tc_void"], strict=True) if v == 1] == HOLE[1:]
    assert db.stat().st_size == size
