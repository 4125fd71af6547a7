"""Helpers for the history file tests: a real `freqtrade download-data` against the emulator, holes cut
through freqtrade's own data handler, and the `tradecanvas data` command as a subprocess."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
from freqtrade.data.history.datahandlers import get_datahandler
from freqtrade.enums import CandleType

from tests.conftest import REPO, subprocess_env

FREQTRADE = str(Path(sys.executable).with_name("freqtrade"))
TRADECANVAS = str(Path(sys.executable).with_name("tradecanvas"))
PAIRS = ("BTC/USDT", "ETH/USDT")
TIMEFRAMES = ("1m", "5m")
HOUR = 3600


class History:
    """A user dir with a config pointed at the emulator, and freqtrade's files for PAIRS x TIMEFRAMES over
    [start, end) downloaded by `freqtrade download-data`, with the emulator's outage [outage_start,
    outage_end) inside."""

    def __init__(self, tmp: Path, emu, data_format: str, hours: int = 12, outage_min: int = 17):
        self.tmp, self.emu, self.data_format = tmp, emu, data_format
        self.end = int(time.time() // HOUR) * HOUR - HOUR
        self.start = self.end - hours * HOUR
        self.outage_start = self.start + 3 * HOUR + 20 * 60
        self.outage_end = self.outage_start + outage_min * 60
        emu.faults.outage(self.outage_start, self.outage_end)
        self.userdir = tmp / "user_data"
        (self.userdir / "data").mkdir(parents=True, exist_ok=True)
        self.datadir = self.userdir / "data" / "binance"
        config = json.loads((REPO / "config.json").read_text())
        config["exchange"]["ccxt_config"] = emu.ccxt_config()
        config["exchange"]["ccxt_async_config"] = emu.ccxt_config()
        config["dataformat_ohlcv"] = data_format
        config["user_data_dir"] = str(self.userdir)
        config["db_url"] = f"sqlite:///{tmp / 'trades.sqlite'}"
        tc = config["tradecanvas"]
        tc.update({"ccxt_config": emu.ccxt_config(), "db_url": f"sqlite:///{tmp / 'tc.sqlite'}",
                   "ccxt_timeout_ms": 3000})
        self.config = tmp / "config.json"
        self.config.write_text(json.dumps(config, indent=2))
        self.handler = get_datahandler(self.datadir, data_format)

    def download(self) -> subprocess.CompletedProcess:
        out = subprocess.run(
            [FREQTRADE, "download-data", "--config", str(self.config), "--userdir", str(self.userdir),
             "--timerange", f"{self.start}-{self.end}", "-t", *TIMEFRAMES, "--pairs", *PAIRS,
             "--data-format-ohlcv", self.data_format],
            capture_output=True, text=True, timeout=180, env=subprocess_env(), cwd=self.tmp)
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        return out

    def load(self, pair: str, tf: str) -> pd.DataFrame:
        return self.handler.ohlcv_load(pair, tf, CandleType.SPOT, fill_missing=False, drop_incomplete=False,
                                       warn_no_data=False)

    def cut(self, pair: str, tf: str, ranges: list[tuple[int, int]]) -> list[int]:
        """Delete the rows at positions [a, b) of each range through freqtrade's handler; their open times."""
        df = self.load(pair, tf)
        drop = sorted({i for a, b in ranges for i in range(a, b)})
        times = secs(df).iloc[drop].tolist()
        self.handler.ohlcv_store(pair, tf, df.drop(index=drop).reset_index(drop=True), CandleType.SPOT)
        return [int(t) for t in times]

    def path(self, pair: str, tf: str) -> Path:
        ext = {"feather": "feather", "json": "json", "jsongz": "json.gz", "parquet": "parquet"}[self.data_format]
        return self.datadir / f"{pair.replace('/', '_')}-{tf}.{ext}"

    def tc(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
        return subprocess.run([TRADECANVAS, "data", *args, "--config", str(self.config)], capture_output=True,
                              text=True, timeout=timeout, env=subprocess_env(), cwd=self.tmp)

    def tc_json(self, *args: str) -> tuple[int, dict]:
        out = self.tc(*args, "--json")
        assert out.returncode in (0, 1), out.stdout[-3000:] + out.stderr[-3000:]
        return out.returncode, json.loads(out.stdout)


def secs(df: pd.DataFrame) -> pd.Series:
    """A loaded frame's open times in unix seconds (whatever unit freqtrade's handler gave `date`)."""
    return df["date"].dt.as_unit("ms").astype("int64") // 1000


def tree(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (dot folders included), by relative path, with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def runs(times: list[int], tf: int) -> list[tuple[int, int]]:
    """Sorted times as inclusive (start, end) runs of consecutive grid times."""
    out: list[list[int]] = []
    for t in sorted(times):
        if out and t == out[-1][1] + tf:
            out[-1][1] = t
        else:
            out.append([t, t])
    return [(a, b) for a, b in out]
