"""`freqtrade backtesting` and `freqtrade hyperopt -j 2` run the sample strategy to the end and start no
server (contract section 8: only live and dry-run start anything). The data set is written with freqtrade's
own data handler into a temporary user dir; the exchange (markets only) is the emulator on 127.0.0.1.
"""
from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest
from freqtrade.data.history.datahandlers import get_datahandler
from freqtrade.enums import CandleType

from tests.botkit import REPO, STRATEGY_DIR, free_port
from tests.conftest import subprocess_env
from tradecanvas_ext.bot.glue import port_in_use
from tradecanvas_ext.testing import ExchangeEmulator

pytestmark = pytest.mark.slow

FREQTRADE = str(Path(sys.executable).with_name("freqtrade"))
PAIRS = ("BTC/USDT", "ETH/USDT")
DAYS = 2


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bt")
    emu = ExchangeEmulator(seed=3, symbols=PAIRS).start()
    userdir = tmp / "user_data"
    datadir = userdir / "data" / "binance"
    datadir.mkdir(parents=True)
    end = int(time.time() // 86400) * 86400  # midnight UTC today
    start = end - DAYS * 86400
    handler = get_datahandler(datadir, "feather")
    for pair in PAIRS:
        rows = emu.candles(pair, "1m", start, end - 60)
        df = pd.DataFrame(rows, columns=["date", "open", "high", "low", "close", "volume"])
        df["date"] = pd.to_datetime(df["date"], unit="s", utc=True)
        handler.ohlcv_store(pair, "1m", df, CandleType.SPOT)
    port = free_port()
    config = json.loads((REPO / "config.json").read_text())
    config["exchange"]["ccxt_config"] = emu.ccxt_config()
    config["exchange"]["ccxt_async_config"] = emu.ccxt_config()
    config["exchange"]["pair_whitelist"] = list(PAIRS)
    config["tradecanvas"].update({"listen_port": port, "db_url": f"sqlite:///{tmp / 'tc.sqlite'}",
                                  "ccxt_config": emu.ccxt_config()})
    config_path = tmp / "config.json"
    config_path.write_text(json.dumps(config))
    day = datetime.fromtimestamp(start + 86400 // 2, UTC).strftime("%Y%m%d")
    last = datetime.fromtimestamp(end - 86400, UTC).strftime("%Y%m%d")
    yield {"tmp": tmp, "config": config_path, "userdir": userdir, "port": port, "timerange": f"{day}-{last}"}
    emu.stop()


def run_freqtrade(setup, *args, timeout: float = 240) -> tuple[subprocess.CompletedProcess, list[bool]]:
    """Run freqtrade to the end while watching that nothing listens on the extension's port."""
    listening: list[bool] = []
    done = threading.Event()

    def watch():
        while True:
            listening.append(port_in_use("127.0.0.1", setup["port"]))
            if done.wait(0.2):
                return

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        proc = subprocess.run(
            [FREQTRADE, *args, "--config", str(setup["config"]), "--strategy", "SampleTradeCanvasStrategy",
             "--strategy-path", str(STRATEGY_DIR), "--userdir", str(setup["userdir"]),
             "--timerange", setup["timerange"]],
            cwd=setup["tmp"], capture_output=True, text=True, timeout=timeout,
            env=subprocess_env(PYTHONUNBUFFERED="1"))
    finally:
        done.set()
        watcher.join(5)
    return proc, listening


def test_backtesting_runs_to_the_end_without_a_server(setup):
    t0 = time.monotonic()
    proc, listening = run_freqtrade(setup, "backtesting", "--export", "none")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "BACKTESTING REPORT" in out and "SampleTradeCanvasStrategy" in out
    assert "tradecanvas: run mode backtest: the extension stays off" in out
    assert listening and not any(listening)
    assert not (setup["tmp"] / "tc.sqlite").exists()  # no store opened either
    print(f"\n[backtesting] {time.monotonic() - t0:.1f}s")


def test_hyperopt_with_two_jobs_runs_to_the_end_without_a_server(setup):
    t0 = time.monotonic()
    proc, listening = run_freqtrade(setup, "hyperopt", "-j", "2", "-e", "6", "--spaces", "buy", "sell",
                                    "--hyperopt-loss", "SharpeHyperOptLoss", "--disable-param-export",
                                    "--print-json", "--no-color", "--random-state", "1")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "tradecanvas: run mode hyperopt: the extension stays off" in out
    assert "Number of parallel jobs set as: 2" in out
    assert "Effective number of parallel workers used: 2" in out
    assert "6 epochs saved" in out, out[-3000:]
    # every epoch ran the extension's sample strategy with its own hyperopt parameters, whatever it found
    [results] = (setup["userdir"] / "hyperopt_results").glob("strategy_SampleTradeCanvasStrategy_*.fthypt")
    epochs = [json.loads(line) for line in results.read_text().splitlines()]
    assert [e["current_epoch"] for e in epochs] == [1, 2, 3, 4, 5, 6]
    assert all(e["results_metrics"]["strategy_name"] == "SampleTradeCanvasStrategy" for e in epochs)
    assert all(set(e["params_dict"]) == {"buy_rsi", "sell_rsi"} for e in epochs)
    assert all(20 <= e["params_dict"]["buy_rsi"] <= 45 and 55 <= e["params_dict"]["sell_rsi"] <= 80
               for e in epochs)
    assert "Traceback" not in out and "PicklingError" not in out
    assert listening and not any(listening)
    assert not (setup["tmp"] / "tc.sqlite").exists()
    assert not (STRATEGY_DIR / "sample_tradecanvas_strategy.json").exists()  # nothing written next to it
    print(f"\n[hyperopt -j 2] {time.monotonic() - t0:.1f}s")
