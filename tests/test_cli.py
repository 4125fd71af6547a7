"""The `tradecanvas` command line, run as a real subprocess against the emulator on 127.0.0.1."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import subprocess_env
from tradecanvas_ext.testing import ExchangeEmulator

BIN = str(Path(sys.executable).with_name("tradecanvas"))


@pytest.fixture
def live_emulator():
    emu = ExchangeEmulator(seed=1, symbols=("BTC/USDT", "ETH/USDT")).start()  # real clock: a subprocess
    yield emu
    emu.stop()


def write_config(tmp_path, emu, series):
    cfg = {"user_data_dir": str(tmp_path), "tradecanvas": {
        "enabled": True, "series": series, "startup_sync_target_candles": 120,
        "ccxt_config": emu.ccxt_config()}}
    p = tmp_path / "config.json"
    p.write_text(json.dumps(cfg))
    return p


def run(*args):
    return subprocess.run([BIN, *args], capture_output=True, text=True, timeout=120,
                          env=subprocess_env())


def test_sync_gaps_health(tmp_path, live_emulator):
    cfg = write_config(tmp_path, live_emulator, ["binance:spot:BTC/USDT:1m", "binance:spot:DOGE/USDT:1m"])
    out = run("sync", "--config", str(cfg))
    assert out.returncode == 1, out.stderr  # one series is not listed: reported, the other synced
    assert "synced 1 / lagging 0 / errors 1" in out.stdout and "DOGE/USDT" in out.stdout
    gaps = run("gaps", "binance:spot:BTC/USDT:1m", "--config", str(cfg))
    assert gaps.returncode == 0, gaps.stderr
    body = json.loads(gaps.stdout)
    assert body["series_id"] == "binance:spot:BTC/USDT:1m" and isinstance(body["holes"], list)
    health = run("health", "--config", str(cfg), "--json")
    assert health.returncode == 0, health.stderr
    rows = {r["series_id"]: r for r in json.loads(health.stdout)["series"]}
    assert rows["binance:spot:DOGE/USDT:1m"]["status"] == "red"
    assert rows["binance:spot:BTC/USDT:1m"]["head_time"] is not None


def test_bad_config_is_a_clear_error(tmp_path):
    p = tmp_path / "config.json"
    p.write_text(json.dumps({"tradecanvas": {"listen_port": "x"}}))
    out = run("sync", "--config", str(p))
    assert out.returncode == 2 and "tradecanvas.listen_port" in out.stderr
    p.write_text(json.dumps({"user_data_dir": str(tmp_path)}))
    out = run("gaps", "binance:spot:BTC/USDT:2w", "--config", str(p))
    assert out.returncode == 2 and "timeframe" in out.stderr
