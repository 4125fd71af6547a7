"""`annotate` in backtesting reads the voids `data repair` recorded beside the history file: the sample
strategy over a repaired file with a void marks `tc_void` 1 exactly on the void's (filled-up) rows, and never
enters on a row that is not real."""
from __future__ import annotations

import pandas as pd
import pytest
from freqtrade.data.history import load_pair_history
from freqtrade.data.history.datahandlers import get_datahandler
from freqtrade.enums import CandleType, RunMode

from tests.botkit import ft_config, make_strategy, sample_strategy_class
from tradecanvas_ext.history.files import HistoryFile
from tradecanvas_ext.history.repair import Repair, Window, open_levels, series_for
from tradecanvas_ext.settings import Settings
from tradecanvas_ext.testing import ExchangeEmulator


@pytest.fixture
def emu():
    e = ExchangeEmulator(seed=7, symbols=("BTC/USDT",)).start()  # a seed whose window has entries
    yield e
    e.stop()


def test_backtest_marks_the_repaired_files_void_and_enters_only_on_real_rows(tmp_path, emu):
    end = 1_795_000_000 // 3600 * 3600  # a fixed past window: the same candles (and entries) every run
    start = end - 8 * 3600
    outage = (start + 2 * 3600, start + 2 * 3600 + 25 * 60)
    emu.faults.outage(*outage)
    cfg = ft_config(tmp_path, runmode=RunMode.BACKTEST,
                    section={"ccxt_config": emu.ccxt_config(), "enable_ccxt_backfill": True})
    datadir = cfg["datadir"]
    rows = pd.DataFrame(emu.candles("BTC/USDT", "1m", start, end), columns=["t", "open", "high", "low", "close",
                                                                         "volume"])
    rows.insert(0, "date", pd.to_datetime(rows.pop("t"), unit="s", utc=True))
    get_datahandler(datadir, "feather").ohlcv_store("BTC/USDT", "1m", rows.drop(index=[30, 31, 200]),
                                                    CandleType.SPOT)
    void_times = list(range(outage[0], outage[1], 60))

    def backtest_frame():
        df = load_pair_history("BTC/USDT", "1m", datadir, fill_up_missing=True, data_format="feather",
                               candle_type=CandleType.SPOT)  # what backtesting hands the strategy
        s = make_strategy(sample_strategy_class(), cfg, None)
        s.ft_bot_start()
        meta = {"pair": "BTC/USDT"}
        return s.advise_entry(s.advise_indicators(df, meta), meta)

    df = backtest_frame()
    assert df["tc_void"].sum() == 0  # before the repair nothing is known about the hole

    settings = Settings.from_config(cfg)
    levels = open_levels(settings)
    try:
        f = HistoryFile(datadir, "feather", "BTC/USDT", "1m", "spot", "binance")
        report = Repair(levels).run(f, series_for(f, "binance", "spot"), "binance:spot:BTC/USDT:1m", Window(),
                                    dry_run=False)
    finally:
        levels.close()
    assert report.complete and report.filled["ccxt"] == 3

    df = backtest_frame()
    t = df["date"].dt.as_unit("s").astype("int64")
    assert t[df["tc_void"] == 1].tolist() == void_times
    assert t[df["tc_real"] == 0].tolist() == void_times  # every other row is a real candle now
    assert not ((df["enter_long"] == 1) & (df["tc_real"] == 0)).any()
    assert (df["enter_long"] == 1).any()  # the strategy does enter on real rows
