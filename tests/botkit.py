"""Helpers for the bot tests: freqtrade configs, real strategies, DataProviders and candle caches, and `Bot`,
a real `freqtrade trade` dry-run process against the exchange emulator (the e2e tests)."""
from __future__ import annotations

import base64
import importlib.util
import inspect
import json
import math
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import freqtrade.main
import pandas as pd
import pytest
from freqtrade.data.converter import ohlcv_to_dataframe
from freqtrade.data.dataprovider import DataProvider
from freqtrade.enums import CandleType, RunMode
from freqtrade.exchange import Exchange

from tests.conftest import subprocess_env, wait_for
from tradecanvas_ext.bot import TradeCanvasStrategy
from tradecanvas_ext.testing import ExchangeEmulator

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


# ------------------------------------------------------------------ a real `freqtrade trade` process

FREQTRADE = str(Path(sys.executable).with_name("freqtrade"))
SERIES = ("binance:spot:BTC/USDT:1m", "binance:spot:ETH/USDT:1m", "binance:spot:BTC/USDT:5m")
# freqtrade's exit code after a SIGINT it handled, read from its main.py: `return_code = 130` in 2026.9, `= 0`
# in 2026.1 (`make test-freqtrade-range` runs these tests on both ends of setup.cfg's range)
SIGINT_EXITS = (130,) if "return_code = 130" in inspect.getsource(freqtrade.main) else (0,)


_RECORD_START = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}")  # freqtrade's log line: a new record


def log_problems(log: str) -> list[str]:
    """The bot log's records (a line and its continuation lines) that carry a traceback or an ERROR. One
    shutdown race of freqtrade's own is not one: the test's SIGINT landing inside freqtrade's SQL as a
    KeyboardInterrupt, its cleanup then failing on that, with no frame of this package in it."""
    records: list[str] = []
    for line in log.splitlines():
        if _RECORD_START.match(line) or not records:
            records.append(line)
        else:
            records[-1] += "\n" + line
    bad = [r for r in records if "Traceback" in r or " - ERROR - " in r.split("\n", 1)[0]]
    return [r for r in bad if not ("KeyboardInterrupt" in r and "tradecanvas_ext" not in r)]


def latest_closed(tf: int = 60, now: float | None = None) -> int:
    now = time.time() if now is None else now
    return int(now // tf) * tf - tf


def default_sigint() -> None:
    """In the child: SIGINT back to its default. A suite started in the background by a shell without job
    control inherits SIGINT ignored, and Python then never turns it into KeyboardInterrupt: the bot would
    never see our Ctrl-C."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def freqtrade_exchange_name(emu: ExchangeEmulator) -> str:
    """The `exchange.name` freqtrade trades the emulator's dialect under: its ccxt class, except Binance
    USD-M, which freqtrade trades as "binance" with `trading_mode` futures."""
    ccxt_id = emu.dialect.spec.ccxt_id
    return "binance" if ccxt_id == "binanceusdm" else ccxt_id


def write_strategy(tmp: Path, class_name: str, source: str) -> tuple[str, Path]:
    """A strategy file in `tmp/strategies` (its module named after the class): Bot's `strategy=` argument."""
    folder = tmp / "strategies"
    folder.mkdir(exist_ok=True)
    module = "".join("_" + ch.lower() if ch.isupper() else ch for ch in class_name).lstrip("_")
    (folder / f"{module}.py").write_text(source)
    return class_name, folder


class Bot:
    """A `freqtrade trade` process with its own user dir, trade database and log file."""

    def __init__(self, tmp: Path, emu: ExchangeEmulator, api: bool = False,
                 strategy: tuple[str, Path] = ("SampleTradeCanvasStrategy", STRATEGY_DIR), **section):
        self.tmp, self.port = tmp, free_port()
        self.strategy = strategy
        self.api_port = free_port() if api else None
        self.userdir = tmp / "user_data"
        (self.userdir / "data").mkdir(parents=True, exist_ok=True)
        self.db_path = tmp / "tradecanvas.sqlite"
        config = json.loads((REPO / "config.json").read_text())  # the shipped example, re-pointed
        config["exchange"]["name"] = freqtrade_exchange_name(emu)
        config["exchange"]["ccxt_config"] = emu.ccxt_config()
        config["exchange"]["ccxt_async_config"] = emu.ccxt_config()
        config["exchange"]["enable_ws"] = False
        config["exchange"]["only_from_ccxt"] = True
        config["internals"] = {"process_throttle_secs": 1, "heartbeat_interval": 0}
        config["db_url"] = f"sqlite:///{tmp / 'trades.sqlite'}"
        if api:  # freqtrade's own REST API, for /reload_config
            config["api_server"] = {"enabled": True, "listen_ip_address": "127.0.0.1",
                                    "listen_port": self.api_port, "username": "tc", "password": "tc-test",
                                    "jwt_secret_key": "tc-test-secret-" + "x" * 32, "ws_token": "tc-test-ws",
                                    "enable_openapi": False, "CORS_origins": [], "verbosity": "error"}
        tc = config["tradecanvas"]
        tc.update({"listen_port": self.port, "db_url": f"sqlite:///{self.db_path}", "series": list(SERIES),
                   "ccxt_config": emu.ccxt_config(), "ccxt_timeout_ms": 3000, "startup_sync_target_candles": 300})
        tc.update(section)
        self.config_path = tmp / "config.json"
        self.config_path.write_text(json.dumps(config, indent=2))
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.runs = 0

    def edit_config(self, change: Callable[[dict], None]) -> Bot:
        """Change the config file before `start()` (`change` edits the parsed config in place)."""
        config = json.loads(self.config_path.read_text())
        change(config)
        self.config_path.write_text(json.dumps(config, indent=2))
        return self

    @property
    def log_path(self) -> Path:
        return self.tmp / f"bot-{self.runs}.log"

    def start(self) -> Bot:
        self.runs += 1
        cmd = [FREQTRADE, "trade", "--config", str(self.config_path), "--strategy", self.strategy[0],
               "--strategy-path", str(self.strategy[1]), "--userdir", str(self.userdir)]
        self._log = open(self.log_path, "w")  # closed in stop()/kill()
        self.proc = subprocess.Popen(cmd, cwd=self.tmp, stdout=self._log, stderr=subprocess.STDOUT,
                                     env=subprocess_env(PYTHONUNBUFFERED="1", PYTHONFAULTHANDLER="1"),
                                     preexec_fn=default_sigint)
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def health(self, series_id: str | None = None) -> dict:
        return get_json(self.url + "/api/market/health" + (f"?series_id={series_id}" if series_id else ""))

    def candles(self, series_id: str, **params) -> dict:
        q = "&".join(f"{k}={v}" for k, v in {"series_id": series_id, **params}.items())
        return get_json(self.url + "/api/market/candles?" + q)

    def pair_candles(self, pair: str, timeframe: str = "1m", limit: int = 100) -> dict:
        """freqtrade's own GET /api/v1/pair_candles (the analysed dataframe; needs `api=True`)."""
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.api_port}/api/v1/pair_candles?pair={pair}&timeframe={timeframe}&limit={limit}",
            headers={"Authorization": "Basic " + base64.b64encode(b"tc:tc-test").decode()})
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read().decode())

    def wait_synced(self, timeout: float = 90) -> dict:
        def done():
            assert self.proc.poll() is None, f"the bot exited:\n{self.log()[-3000:]}"
            return self.health()["startup_sync"]
        return wait_for(done, timeout, interval=0.3, what="the startup sync at /api/market/health")

    def reload_config(self) -> dict:
        """POST /api/v1/reload_config on freqtrade's own API (what FreqUI's reload button does)."""
        req = urllib.request.Request(f"http://127.0.0.1:{self.api_port}/api/v1/reload_config", method="POST",
                                     headers={"Authorization": "Basic " + base64.b64encode(b"tc:tc-test").decode()})
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read().decode())

    def stop(self) -> int:
        """SIGINT, as Ctrl-C. A bot that has not exited after a minute gets SIGABRT first: with
        PYTHONFAULTHANDLER set, every thread's stack goes to its log, which the failing assert shows."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.send_signal(signal.SIGABRT)
                try:
                    self.proc.wait(10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(10)
        self._log.close()
        return self.proc.returncode

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self._log.close()


@pytest.fixture
def bots():
    made: list[Bot] = []
    yield made
    for b in made:
        if b.proc is not None and b.proc.poll() is None:
            b.stop()


def as_rows(candles: list[dict]) -> list[tuple]:
    return [(c["candle_time"], c["open"], c["high"], c["low"], c["close"], c["volume"]) for c in candles]


def same_candles(got: list[tuple], want: list[tuple]) -> bool:
    """Times and prices exactly; volume to 1e-9 relative (a 5m candle rolled up from 1m sums floats, the
    exchange sums integers of 1e-8)."""
    return len(got) == len(want) and all(
        g[:5] == w[:5] and math.isclose(g[5], w[5], rel_tol=1e-9) for g, w in zip(got, want, strict=True))
