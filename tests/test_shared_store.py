"""Several runtimes in separate processes on one real PostgreSQL store: one repair at a time across
processes (advisory-lock lease), cross-process live delivery through LISTEN/NOTIFY, and a killed lease
holder replaced by another process."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from tests.conftest import pg_url_or_skip, reset_pg
from tests.wsclient import WS, check_guarantee, events
from tradecanvas_ext.domain import SeriesId, expected_latest_closed_time
from tradecanvas_ext.store import open_store
from tradecanvas_ext.testing import ExchangeEmulator

pytestmark = [pytest.mark.postgres, pytest.mark.slow]
SID = "binance:spot:BTC/USDT:1m"


class Proc:
    def __init__(self, cfg: dict, serve: bool):
        self.p = subprocess.Popen([sys.executable, "-m", "tests.mp_worker", json.dumps(cfg),
                                   "serve" if serve else "bot"], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True, cwd=os.getcwd())
        self.hello = json.loads(self.p.stdout.readline())

    def send(self, **msg) -> None:
        self.p.stdin.write(json.dumps(msg) + "\n")
        self.p.stdin.flush()

    def read(self) -> dict:
        return json.loads(self.p.stdout.readline())

    def call(self, **msg) -> dict:
        self.send(**msg)
        return self.read()

    def close(self) -> None:
        if self.p.poll() is None:
            try:
                self.send(cmd="quit")
                self.p.wait(15)
            except Exception:
                self.p.kill()


@pytest.fixture
def shared(tmp_path):
    url = pg_url_or_skip()
    reset_pg(url)
    emu = ExchangeEmulator(seed=5, symbols=("BTC/USDT", "ETH/USDT")).start()  # real clock: other processes
    procs = []

    def start(serve=False, **section):
        tc = {"enabled": True, "listen_port": 0, "db_url": url, "series": [SID],
              "ccxt_config": emu.ccxt_config(), "ccxt_timeout_ms": 10000, **section}
        p = Proc({"tradecanvas": tc, "user_data_dir": str(tmp_path)}, serve)
        procs.append(p)
        return p

    start.emu, start.url = emu, url
    yield start
    for p in procs:
        p.close()
    emu.stop()


def test_a_hole_seen_by_three_processes_is_fetched_once(shared):
    a, b, c = shared(), shared(), shared(serve=True)
    emu = shared.emu
    to_time = expected_latest_closed_time(time.time(), 60) - 60  # clear of the late-candle grace (issue 13)
    emu.reset_counts()
    emu.faults.slow(0.5, n=1)  # the first fetch holds the lease while the others arrive
    for p in (a, b, c):
        p.send(cmd="cover", series=SID, target=600, to_time=to_time)
    results = [p.read() for p in (a, b, c)]
    assert all(r["complete"] and r["covered"] == 600 for r in results), results
    assert sorted(r["filled"] for r in results) == [0, 0, 600]
    assert emu.request_count("klines") == 1 and emu.request_count("exchangeInfo") == 1


def test_serve_client_receives_what_another_process_ingests(shared):
    bot_a, server = shared(), shared(serve=True)
    emu = shared.emu
    end = expected_latest_closed_time(time.time(), 60)
    rows = emu.candles("BTC/USDT", "1m", end - 9 * 60, end)
    assert bot_a.call(cmd="ingest", series=SID, candles=rows[:3])["accepted"] == 3
    ws = WS(server.hello["url"])
    try:
        ws.subscribe(SID, since=rows[2][0])
        for r in rows[3:]:
            assert bot_a.call(cmd="ingest", series=SID, candles=[r])["accepted"] == 1
        ws.until(lambda m: m.get("candle", {}).get("candle_time") == rows[-1][0])
        ws.drain(0.5)
        assert check_guarantee(ws.received[1:], SID, 60, rows[2][0]) == [r[0] for r in rows[3:]]
        assert [e for e in events(ws.received) if e[0] == "gap"] == []
    finally:
        ws.close()


def test_killing_the_lease_holder_lets_another_take_over(shared):
    a, b = shared(), shared()
    emu = shared.emu
    # one candle before the newest closed: the just-closed one waits for the late-candle grace (issue 13),
    # which would make this test depend on the second of the minute it runs in
    to_time = expected_latest_closed_time(time.time(), 60) - 60
    emu.faults.slow(8.0, n=1)  # A's first klines request hangs
    a.send(cmd="cover", series=SID, target=300, to_time=to_time)
    storage = open_store(shared.url, origin="test")
    store, rows = storage.candles, storage.tracker_rows
    sid = SeriesId.parse(SID)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # the tracker shows which process is repairing
        row = rows.tracker_get(sid)
        if row and row["state"] == "running":
            break
        time.sleep(0.05)
    assert row["owner"] == a.hello["owner"]
    done = {}

    def run_b():
        done["res"] = b.call(cmd="cover", series=SID, target=300, to_time=to_time)
        done["at"] = time.monotonic()

    t = threading.Thread(target=run_b)
    t.start()
    time.sleep(0.5)
    killed_at = time.monotonic()
    os.kill(a.p.pid, signal.SIGKILL)
    t.join(30)
    assert done["res"]["complete"] and done["res"]["filled"] == 300
    assert done["at"] - killed_at < 15.0  # the lease went with the killed process (its timeout is 30 s)
    assert rows.tracker_get(sid)["owner"] == b.hello["owner"]
    assert store.read_between(sid, 0, 10**10).rows() == emu.candles("BTC/USDT", "1m", to_time - 299 * 60,
                                                                    to_time)
    storage.close()
