"""`freqtrade backtesting` over history with a hole, two candles of which a repair recorded as a void in the
store (contract section 8): the strategy's `annotate` marks `tc_void` 1 exactly there and `tc_real` 0 on the
whole hole (freqtrade's fill-ups), reading the store read-only (it is not changed). A real freqtrade process;
the strategy writes what it saw to a file, since a backtest has no API to ask."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest
from freqtrade.data.history.datahandlers import get_datahandler
from freqtrade.enums import CandleType

from tests.botkit import REPO, free_port
from tests.conftest import subprocess_env
from tradecanvas_ext.domain import SeriesId
from tradecanvas_ext.store import open_store
from tradecanvas_ext.testing import ExchangeEmulator

pytestmark = pytest.mark.slow

FREQTRADE = str(Path(sys.executable).with_name("freqtrade"))
SID = SeriesId.parse("binance:spot:BTC/USDT:1m")

STRATEGY = '''
import json
import os

from tradecanvas_ext.bot import TradeCanvasStrategy


class DumpMarks(TradeCanvasStrategy):
    INTERFACE_VERSION = 3
    timeframe = "1m"
    minimal_roi = {"0": 0.01}
    stoploss = -0.05

    def populate_indicators(self, dataframe, metadata):
        self.tradecanvas.annotate(dataframe, metadata)
        t = dataframe["date"].dt.as_unit("s").astype("int64")
        out = {"void": t[dataframe["tc_void"] == 1].tolist(), "fake": t[dataframe["tc_real"] == 0].tolist(),
               "rows": len(dataframe)}
        with open(os.environ["TC_DUMP"], "w") as f:
            json.dump(out, f)
        return dataframe

    def populate_entry_trend(self, dataframe, metadata):
        return dataframe

    def populate_exit_trend(self, dataframe, metadata):
        return dataframe
'''


def test_backtesting_marks_the_recorded_voids(tmp_path):
    emu = ExchangeEmulator(seed=5, symbols=("BTC/USDT",)).start()
    try:
        userdir = tmp_path / "user_data"
        datadir = userdir / "data" / "binance"
        datadir.mkdir(parents=True)
        end = int(time.time() // 86400) * 86400
        start = end - 86400
        hole = [start + 600 * 60 + i * 60 for i in range(3)]
        rows = [r for r in emu.candles("BTC/USDT", "1m", start, end - 60) if r[0] not in hole]
        df = pd.DataFrame(rows, columns=["date", "open", "high", "low", "close", "volume"])
        df["date"] = pd.to_datetime(df["date"], unit="s", utc=True)
        get_datahandler(datadir, "feather").ohlcv_store("BTC/USDT", "1m", df, CandleType.SPOT)

        db = tmp_path / "tc.sqlite"  # the store a live bot's repair left: two of the three times are a void
        storage = open_store(f"sqlite:///{db}", origin="test")
        storage.candles.record_void(SID, hole[1], hole[2], "ccxt", checked_at=end)
        storage.close()
        stamp = (db.stat().st_size, db.stat().st_mtime_ns)

        (tmp_path / "strategies").mkdir()
        (tmp_path / "strategies" / "dump_marks.py").write_text(STRATEGY)
        config = json.loads((REPO / "config.json").read_text())
        config["exchange"].update(ccxt_config=emu.ccxt_config(), ccxt_async_config=emu.ccxt_config(),
                                  pair_whitelist=["BTC/USDT"])
        config["tradecanvas"].update(listen_port=free_port(), db_url=f"sqlite:///{db}", series=[str(SID)])
        (tmp_path / "config.json").write_text(json.dumps(config))
        day = datetime.fromtimestamp(start, UTC).strftime("%Y%m%d")
        last = datetime.fromtimestamp(end, UTC).strftime("%Y%m%d")
        dump = tmp_path / "marks.json"
        proc = subprocess.run(
            [FREQTRADE, "backtesting", "--config", str(tmp_path / "config.json"), "--strategy", "DumpMarks",
             "--strategy-path", str(tmp_path / "strategies"), "--userdir", str(userdir), "--timerange",
             f"{day}-{last}", "--export", "none"],
            cwd=tmp_path, capture_output=True, text=True, timeout=240,
            env=subprocess_env(PYTHONUNBUFFERED="1", TC_DUMP=str(dump)))
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, out[-4000:]
        marks = json.loads(dump.read_text())
        assert marks["rows"] >= 1400
        assert marks["fake"] == hole  # freqtrade filled the whole hole for the backtest
        assert marks["void"] == hole[1:]  # tc_void exactly on the recorded void
        assert (db.stat().st_size, db.stat().st_mtime_ns) == stamp  # read only
    finally:
        emu.stop()
