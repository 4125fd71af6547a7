"""`tradecanvas serve`: a live tail from the exchange reaches WebSocket clients as candles close; the
command starts, serves and stops cleanly on SIGTERM."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

from tests.conftest import NOW
from tests.wsclient import WS, check_guarantee
from tradecanvas_ext.backfill.live_poller import LivePoller
from tradecanvas_ext.domain import SeriesId
from tradecanvas_ext.testing import ExchangeEmulator

SID = "binance:spot:BTC/USDT:1m"
LAST = (NOW // 60) * 60 - 60


def test_live_poller_publishes_newly_closed_candles(make_runtime, exchange, clock):
    rt = make_runtime(serve=True)
    rt.run_startup_sync()
    ws = WS(rt.url)
    try:
        ws.subscribe(SID, since=LAST - 120)
        ws.until(lambda m: m.get("candle", {}).get("candle_time") == LAST)
        poller = LivePoller(rt, interval_s=3600)
        assert poller.tick() == 0  # nothing new closed: nothing fetched
        exchange.reset_counts()
        clock.advance(120)  # two more candles close
        assert poller.tick() == 2 and exchange.request_count("klines") == 1
        ws.until(lambda m: m.get("candle", {}).get("candle_time") == LAST + 120)
        times = check_guarantee(ws.received[1:], SID, 60, LAST - 120)
        assert times == [LAST - 60, LAST, LAST + 60, LAST + 120]
        assert rt.store.read_between(SeriesId.parse(SID), LAST + 60, LAST + 120).rows() == exchange.candles(
            "BTC/USDT", "1m", LAST + 60, LAST + 120)
    finally:
        ws.close()


def test_serve_command_runs_and_stops_cleanly(tmp_path):
    emu = ExchangeEmulator(seed=1, symbols=("BTC/USDT",)).start()
    cfg = {"user_data_dir": str(tmp_path), "tradecanvas": {
        "enabled": True, "listen_port": 0, "series": [SID], "startup_sync_target_candles": 50,
        "ccxt_config": emu.ccxt_config()}}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    proc = subprocess.Popen([str(Path(sys.executable).with_name("tradecanvas")), "serve", "--config",
                             str(tmp_path / "config.json"), "--poll-interval", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert "tradecanvas serving 1 series at http://127.0.0.1:" in line, proc.stderr.read()
        url = line.split(" at ")[1].split()[0]
        ws = WS(url)
        ws.subscribe(SID, supports_batch=True)
        batch = ws.until(lambda m: m["type"] in ("candles_batch", "candle_closed"))
        assert batch["series_id"] == SID
        ws.close()
        with urllib.request.urlopen(f"{url}/api/market/health", timeout=10) as r:
            health = json.loads(r.read())
        assert health["series"][0]["series_id"] == SID
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        emu.stop()
