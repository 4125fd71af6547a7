"""Helpers for the bot tests: freqtrade configs, real strategies, DataProviders and candle caches."""
from __future__ import annotations

import importlib.util
import json
import socket
import sys
import urllib.request
from pathlib import Path

import pandas as pd
from freqtrade.data.converter import ohlcv_to_dataframe
from freqtrade.data.dataprovider import DataProvider
from freqtrade.enums import CandleType, RunMode
from freqtrade.exchange import Exchange

from tests.conftest import wait_for  # noqa: F401 - the bot tests import it from here
from tradecanvas_ext.bot import TradeCanvasStrategy

REPO = Path(__file__).resolve().parents[1]
STRATEGY_DIR = REPO / "user_data" / "strategies"
SAMPLE_FILE = STRATEGY_DIR / "sample_tradecanvas_strategy.py"


class PlainTradeCanvasStrategy(TradeCanvasStrategy):
    """The smallest strategy on our base class (no indicators, no signals)."""

    INTERFACE_VERSION = 3
    timeframe = "1m"
    minimal_roi = {"0": 0.01}
    stoploss = -0.05

    def populate_indicators(self, dataframe, metadata):
        return dataframe

    def populate_entry_trend(self, dataframe, metadata):
        return dataframe

    def populate_exit_trend(self, dataframe, metadata):
        return dataframe



def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def load_module_from_file(path: Path, name: str):
    """Load a strategy file the way freqtrade's resolver does (a module that is not importable by name)."""
    spec = importlib.util.spec_from_file_location(name, str(path))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def sample_strategy_class():
    return load_module_from_file(SAMPLE_FILE, "sample_tradecanvas_strategy_under_test").SampleTradeCanvasStrategy


def ft_config(tmp_path: Path, runmode=RunMode.DRY_RUN, section: dict | None = None,
              whitelist=("BTC/USDT",), exchange_extra: dict | None = None) -> dict:
    """A freqtrade config as the bot holds it after start-up (enums resolved, datadir created)."""
    datadir = tmp_path / "data" / "binance"
    datadir.mkdir(parents=True, exist_ok=True)
    tc = {"enabled": True, "listen_port": 0, "db_url": f"sqlite:///{tmp_path / 'tc.sqlite'}",
          "enable_startup_kline_sync": False, "enable_ccxt_backfill": False}
    tc.update(section or {})
    return {
        "exchange": {"name": "binance", "enable_ws": False, "key": "", "secret": "",
                     "pair_whitelist": list(whitelist), **(exchange_extra or {})},
        "dry_run": True, "runmode": runmode, "stake_currency": "USDT", "stake_amount": 100,
        "timeframe": "1m", "trading_mode": "spot", "margin_mode": "", "candle_type_def": CandleType.SPOT,
        "user_data_dir": tmp_path, "datadir": datadir, "dataformat_ohlcv": "feather",
        "entry_pricing": {"price_side": "same", "use_order_book": False},
        "exit_pricing": {"price_side": "same", "use_order_book": False},
        "tradecanvas": tc,
    }


def offline_exchange(config: dict) -> Exchange:
    """A real freqtrade Exchange built offline (no market load); its `_klines` is the bot's live cache."""
    return Exchange(config, validate=False)


def make_strategy(cls, config: dict, exchange=None):
    """A strategy as the bot builds it: instance, then a DataProvider attached."""
    strategy = cls(config)
    strategy.dp = DataProvider(config, exchange)
    return strategy


def ccxt_rows(times, base: float = 100.0) -> list[list]:
    """ccxt-style rows (ms) with distinct, valid prices and volume > 0."""
    return [[t * 1000, base + i, base + i + 2, base + i - 1, base + i + 1, 5.0 + i] for i, t in enumerate(times)]


def cache_frame(times, fill: bool = True, base: float = 100.0) -> pd.DataFrame:
    """The live cache the way the exchange layer builds it (ohlcv_to_dataframe, fill_missing=True)."""
    return ohlcv_to_dataframe(ccxt_rows(times, base), "1m", "BTC/USDT", fill_missing=fill, drop_incomplete=False)


def set_cache(exchange, df: pd.DataFrame, pair: str = "BTC/USDT", tf: str = "1m") -> None:
    exchange._klines[(pair, tf, CandleType.SPOT)] = df


def get_json(url: str, timeout: float = 10.0):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read().decode())
