"""A small example strategy on tradecanvas' base class (1m, EMA cross + RSI, pandas only).

It marks its dataframe with `self.tradecanvas.annotate` and enters only on a real candle: freqtrade fills
holes in its candle data with made-up flat candles (live cache and backtesting alike), the store never
does. In backtesting and hyperopt there is no store and no server: freqtrade's downloaded history (read
without fill-up) tells which rows are real.
"""
from __future__ import annotations

import pandas as pd
from freqtrade.strategy import IntParameter
from pandas import DataFrame

from tradecanvas_ext.bot import TradeCanvasStrategy


def rsi(close: pd.Series, period: int = 14) -> pd.Series:
    """Wilder's RSI with pandas only."""
    delta = close.diff()
    gain = delta.clip(lower=0).ewm(alpha=1 / period, adjust=False).mean()
    loss = (-delta.clip(upper=0)).ewm(alpha=1 / period, adjust=False).mean()
    rs = gain / loss.where(loss != 0)
    return (100 - 100 / (1 + rs)).fillna(50.0)


class SampleTradeCanvasStrategy(TradeCanvasStrategy):
    INTERFACE_VERSION = 3
    timeframe = "1m"
    can_short = False
    process_only_new_candles = True
    startup_candle_count = 50

    minimal_roi = {"0": 0.01, "30": 0.005, "60": 0}
    stoploss = -0.03

    plot_config = {  # FreqUI: the made-up rows and the outages as their own subplot
        "main_plot": {"ema_fast": {"color": "orange"}, "ema_slow": {"color": "blue"}},
        "subplots": {
            "RSI": {"rsi": {"color": "purple"}},
            "tradecanvas": {"tc_real": {"color": "green", "type": "bar"},
                            "tc_void": {"color": "red", "type": "bar"}},
        },
    }

    buy_rsi = IntParameter(20, 45, default=35, space="buy")
    sell_rsi = IntParameter(55, 80, default=65, space="sell")

    def populate_indicators(self, dataframe: DataFrame, metadata: dict) -> DataFrame:
        close = dataframe["close"]
        dataframe["ema_fast"] = close.ewm(span=9, adjust=False).mean()
        dataframe["ema_slow"] = close.ewm(span=21, adjust=False).mean()
        dataframe["rsi"] = rsi(close)
        # tc_real: 1 on candles the store really holds, 0 on freqtrade's made-up fill-ups (or unknown rows);
        # tc_void: 1 inside a confirmed exchange outage. In backtesting it reads freqtrade's downloaded
        # history (no server, no store); in live/dry-run one indexed store read per call.
        self.tradecanvas.annotate(dataframe, metadata)
        return dataframe

    def populate_entry_trend(self, dataframe: DataFrame, metadata: dict) -> DataFrame:
        dataframe.loc[
            (dataframe["rsi"] < self.buy_rsi.value)
            & (dataframe["close"] > dataframe["ema_slow"] * 0.995)
            & (dataframe["volume"] > 0)
            & (dataframe["tc_real"] == 1),
            "enter_long",
        ] = 1
        return dataframe

    def populate_exit_trend(self, dataframe: DataFrame, metadata: dict) -> DataFrame:
        dataframe.loc[(dataframe["rsi"] > self.sell_rsi.value), "exit_long"] = 1
        return dataframe
