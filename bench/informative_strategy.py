"""The bigger bot of bot_bench: a 5m strategy with each pair's 1h and 4h candles as informative pairs
(merged with freqtrade's `merge_informative_pair`), pandas only. It reads nothing from the store itself,
so the bench's on/off ratio is the extension's own cost. Not a trading strategy."""
from __future__ import annotations

from freqtrade.strategy import merge_informative_pair
from pandas import DataFrame

from tradecanvas_ext.bot import TradeCanvasStrategy


class InformativeBenchStrategy(TradeCanvasStrategy):
    INTERFACE_VERSION = 3
    timeframe = "5m"
    informative_timeframes = ("1h", "4h")
    can_short = False
    process_only_new_candles = True
    startup_candle_count = 50
    minimal_roi = {"0": 0.01}
    stoploss = -0.05

    def informative_pairs(self):
        pairs = self.config["exchange"]["pair_whitelist"]  # the bench's static whitelist
        return [(p, tf) for p in pairs for tf in self.informative_timeframes]

    def populate_indicators(self, dataframe: DataFrame, metadata: dict) -> DataFrame:
        dataframe["ema"] = dataframe["close"].ewm(span=21, adjust=False).mean()
        for tf in self.informative_timeframes:
            inf = self.dp.get_pair_dataframe(metadata["pair"], tf).copy()
            inf["ema"] = inf["close"].ewm(span=21, adjust=False).mean()
            dataframe = merge_informative_pair(dataframe, inf, self.timeframe, tf, ffill=True)
        return dataframe

    def populate_entry_trend(self, dataframe: DataFrame, metadata: dict) -> DataFrame:
        dataframe.loc[(dataframe["close"] > dataframe["ema_1h"]) & (dataframe["ema_1h"] > dataframe["ema_4h"]),
                      "enter_long"] = 1
        return dataframe

    def populate_exit_trend(self, dataframe: DataFrame, metadata: dict) -> DataFrame:
        dataframe.loc[dataframe["close"] < dataframe["ema_4h"], "exit_long"] = 1
        return dataframe
