"""End to end, with a real `freqtrade trade` dry-run process running the sample strategy and the extension,
its exchange pointed at the emulator on 127.0.0.1 (real clock, so 1m candles take real minutes): the
startup sync, candles equal to the exchange's, a hole opened by stopping the exchange and repaired after
it comes back (seen over HTTP and WebSocket, never a made-up candle), and a SIGKILL in the middle of a
startup sync followed by a clean second start. Checked over real HTTP and WebSocket only.
"""
from __future__ import annotations

import sqlite3
import threading
import time
import urllib.request

import pytest

from tests.botkit import (  # noqa: F401 (bots: a pytest fixture; the other e2e tests import these from here)
    SERIES,
    SIGINT_EXITS,
    Bot,
    as_rows,
    bots,
    get_json,
    latest_closed,
    log_problems,
    same_candles,
    wait_for,
)
from tests.wsclient import WS, check_guarantee, events
from tradecanvas_ext.backfill.tracker import ProgressTracker
from tradecanvas_ext.domain import SeriesId
from tradecanvas_ext.store import open_store
from tradecanvas_ext.testing import ExchangeEmulator

pytestmark = pytest.mark.slow

BTC1 = SERIES[0]


@pytest.fixture
def emu():
    e = ExchangeEmulator(seed=7, symbols=("BTC/USDT", "ETH/USDT")).start()
    yield e
    e.stop()


def symbol_tf(series_id: str) -> tuple[str, str]:
    sid = SeriesId.parse(series_id)
    return sid.symbol, sid.timeframe


class Reader:
    """Collects every WebSocket message in a background thread."""

    def __init__(self, ws: WS):
        self.ws, self._stop = ws, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self._stop.is_set():
            try:
                self.ws.recv(0.5)
            except Exception:  # closed
                return

    def stop(self):
        self._stop.set()
        self.thread.join(5)


def test_bot_syncs_serves_and_repairs_a_hole_over_http_and_websocket(tmp_path, emu, bots):  # noqa: F811
    t_start = time.monotonic()
    bot = Bot(tmp_path, emu)
    bots.append(bot)
    bot.start()

    # 1. the startup sync ran for every series, as the bot started; its table is in the log
    sync = bot.wait_synced()
    t_synced = time.monotonic() - t_start
    assert sync["series_total"] == 3 and sync["series_synced"] == 3, sync
    assert sorted(r["series_id"] for r in sync["series_results"]) == sorted(SERIES)
    assert all(r["error"] is None and r["covered_candles"] == 300 for r in sync["series_results"])
    wait_for(lambda: "synced 3 / lagging 0 / errors 0" in bot.log(), 10, what="the sync table in the log")

    # 2. candles served equal the exchange's (values, times, no holes)
    for series_id in SERIES:
        got = bot.candles(series_id, limit=300)
        rows = as_rows(got["candles"])
        assert len(rows) >= 299 and got["holes"] == []
        symbol, tf = symbol_tf(series_id)
        assert same_candles(rows, emu.candles(symbol, tf, rows[0][0], rows[-1][0])), series_id

    # 3. a WebSocket client follows BTC 1m live
    head = bot.health(BTC1)["head_time"]
    since = head - 5 * 60
    ws = WS(bot.url)
    assert ws.subscribe(BTC1, since=since, supports_batch=True)["type"] == "subscribed"
    reader = Reader(ws)

    # 4. stop the exchange a few seconds into a minute, after the bot took the candle that just closed
    while not 3 <= time.time() % 60 <= 40:
        time.sleep(0.5)
    b0 = int(time.time() // 60) * 60  # the candle opening now closes while the exchange is down
    wait_for(lambda: bot.health(BTC1)["head_time"] == b0 - 60, 15, what="the bot to ingest the last candle")
    emu.stop()
    t_down, stopped_at = time.monotonic(), time.time()
    seen = []  # (status, status_reason, tracker state) of every health poll, from the outage to green

    def poll() -> dict:
        h = bot.health(BTC1)
        if not seen or seen[-1] != (h["status"], h["status_reason"], h["backfill"]["state"]):
            seen.append((h["status"], h["status_reason"], h["backfill"]["state"]))
        return h

    def failed_repair_during_outage():
        assert bot.proc.poll() is None, bot.log()[-3000:]
        h = poll()
        tr = h["backfill"]
        return h if tr["state"] == "failed" and (tr["started_at"] or 0) >= stopped_at else None

    # b0 closes while the exchange is down: the bot asks for a lag repair, whose exchange level fails
    health_down = wait_for(failed_repair_during_outage, b0 + 60 + 150 - time.time(), interval=0.5,
                           what="a lag repair that ran and failed while the exchange was down")
    down_for = time.monotonic() - t_down
    assert (health_down["status"], health_down["status_reason"]) == ("yellow", "backfill_recent"), health_down
    assert health_down["head_time"] == b0 - 60 and health_down["missing_candles"] >= 1
    tr = health_down["backfill"]
    assert tr["ran_levels"] >= 1 and tr["note"] == "tail_coverage_best_effort_failed" and tr["error"], tr
    assert tr["reason"] == "tail_coverage" and tr["current_missing_candles"] >= 1, tr

    # 5. the exchange comes back: the hole is repaired, health goes green
    emu.start()
    t_up = time.monotonic()
    wait_for(lambda: poll()["status"] == "green" and bot.health()["status"] == "green", 60, interval=0.5,
             what="health green after the outage")
    repaired_in = time.monotonic() - t_up
    # green until b0 closed; then (red only until the bot's lag check started a repair) yellow while
    # repairs ran and failed, never red again; green once the hole was repaired
    statuses = [st for st, _, _ in seen]
    compressed = [st for i, st in enumerate(statuses) if i == 0 or statuses[i - 1] != st]
    assert compressed in (["green", "yellow", "green"], ["green", "red", "yellow", "green"]), seen
    assert all(reason in ("backfill_running", "backfill_recent") for st, reason, _ in seen if st == "yellow"), seen
    got = bot.candles(BTC1, since=b0 - 6 * 60, limit=20)
    rows = as_rows(got["candles"])
    assert b0 in [r[0] for r in rows] and got["holes"] == []
    assert rows == emu.candles("BTC/USDT", "1m", b0 - 5 * 60, rows[-1][0])

    # 6. the WebSocket client got the repaired candle (or one gap for it): never silence, never made up
    last = latest_closed()
    wait_for(lambda: any(e[0] == "c" and e[1] >= last for e in events(ws.received, BTC1)), 20,
             what="the live candles after the outage on the WebSocket")
    reader.stop()
    ws.close()
    times = check_guarantee(ws.received, BTC1, 60, since)
    gaps = [e for e in events(ws.received, BTC1) if e[0] == "gap"]
    assert b0 in times or any(g[1] <= b0 < g[2] for g in gaps)
    assert len(gaps) <= 1
    sent = {c["candle_time"]: c for m in ws.received if m.get("series_id") == BTC1
            for c in ([m["candle"]] if m["type"] == "candle_closed" else m.get("candles", []))}
    truth = {r[0]: r for r in emu.candles("BTC/USDT", "1m", min(sent), max(sent))}
    assert as_rows(list(sent.values())) == [truth[t] for t in sent]  # every candle sent is the exchange's

    assert bot.stop() in SIGINT_EXITS, bot.log()[-8000:]
    log = bot.log()
    assert "tradecanvas: detached from the bot" in log and log_problems(log) == [], log_problems(log)
    print(f"\n[e2e timings] synced after {t_synced:.1f}s, first failed repair {down_for:.0f}s into the outage, "
          f"green {repaired_in:.1f}s after it came back, total {time.monotonic() - t_start:.0f}s; hole candle {b0}, "
          f"health: {seen}")


def test_bot_killed_mid_startup_sync_restarts_cleanly(tmp_path, emu, bots):  # noqa: F811
    t_start = time.monotonic()
    emu.faults.slow(0.7, n=None, path="klines")  # every klines page takes 0.7 s: a sync of several seconds
    bot = Bot(tmp_path, emu, api=True, startup_sync_target_candles=3000)
    bots.append(bot)
    bot.start()
    slow_5m = SERIES[2]

    def syncing_5m():
        assert bot.proc.poll() is None, bot.log()[-3000:]
        rows = {r["series_id"]: r for r in bot.health()["series"]}
        return rows[slow_5m]["backfill"]["state"] == "running"

    wait_for(syncing_5m, 90, interval=0.1, what="the startup sync of the 5m series to run")
    bot.kill()  # SIGKILL: no cleanup at all
    t_killed = time.monotonic() - t_start

    # the store the killed bot left: no duplicate, nothing invalid or made up; the tracker shows the kill
    con = sqlite3.connect(bot.db_path)
    dupes = con.execute("SELECT series_key, candle_time, COUNT(*) FROM tc_candles "
                        "GROUP BY series_key, candle_time HAVING COUNT(*) > 1").fetchall()
    con.close()
    assert dupes == []
    storage = open_store(f"sqlite:///{bot.db_path}", origin="test")
    store = storage.candles
    try:
        for series_id in SERIES:
            sid = SeriesId.parse(series_id)
            first, head = store.first_time(sid), store.head_time(sid)
            if first is None:
                continue
            stored = store.read_between(sid, first, head)
            assert len(stored.split_valid(sid.tf_seconds, time.time())[1]) == 0
            truth = {r[0]: r for r in emu.candles(sid.symbol, sid.timeframe, first, head)}
            rows = stored.rows()
            assert same_candles(rows, [truth.get(r[0]) or (None,) * 6 for r in rows]), series_id
        tracker = ProgressTracker(storage.tracker_rows, time.time).get(SeriesId.parse(slow_5m))
        assert tracker["state"] == "failed" and tracker["error"] == "interrupted", tracker
    finally:
        storage.close()

    # started again (and the exchange fast again): the interruption is reported, the sync completes
    emu.faults.clear()
    bot.start()
    sync = bot.wait_synced()
    assert sync["series_synced"] == sync["series_total"] == 3, sync
    log = bot.log()
    assert f"{slow_5m}: a repair was interrupted by a crash or kill; marked failed" in log
    rows = {r["series_id"]: r for r in bot.health()["series"]}
    assert rows[slow_5m]["backfill"]["state"] == "succeeded"
    for series_id in SERIES:
        got = bot.candles(series_id, limit=3000)
        rows_ = as_rows(got["candles"])
        assert len(rows_) >= 2999 and got["holes"] == []
        symbol, tf = symbol_tf(series_id)
        assert same_candles(rows_, emu.candles(symbol, tf, rows_[0][0], rows_[-1][0])), series_id

    # a config reload through freqtrade's own API: one server for the process, rebound to the new bot
    assert bot.reload_config() == {"status": "Reloading config ..."}
    wait_for(lambda: bot.log().count("bound to the bot's DataProvider") == 2, 60, interval=0.3,
             what="the reloaded bot to bind")
    log = bot.log()
    assert log.count("tradecanvas web server listening") == 1 and "detached from the bot" in log
    assert log.count("tradecanvas: store sqlite") == 1  # the store was opened once too
    head = bot.health(BTC1)["head_time"]
    wait_for(lambda: bot.health(BTC1)["head_time"] > head, 75, interval=1,
             what="the reloaded bot's loop to ingest the next candle")
    assert bot.stop() in SIGINT_EXITS, bot.log()[-8000:]
    print(f"\n[kill timings] killed {t_killed:.1f}s after start; total {time.monotonic() - t_start:.0f}s")


def test_bot_with_a_non_loopback_address_and_no_token_keeps_trading_with_the_server_off(tmp_path, emu, bots):  # noqa: F811
    """Contract section 2: `listen_ip_address: 0.0.0.0` without `api_token` is refused; inside freqtrade the
    refusal is logged with its reason, nothing listens, and the bot trades on."""
    bot = Bot(tmp_path, emu, listen_ip_address="0.0.0.0")
    # freqtrade logs its state every second
    bot.edit_config(lambda config: config["internals"].update(heartbeat_interval=1))
    bots.append(bot)
    bot.start()
    said = ("tradecanvas_ext.bot - ERROR - tradecanvas: bad \"tradecanvas\" config section: "
            "tradecanvas.listen_ip_address is 0.0.0.0, which other machines can reach, and tradecanvas.api_token "
            "is not set: the chart server would be open to all of them, so it is not started. Set api_token")
    off = "or listen on 127.0.0.1. The extension and its chart server are off; the bot goes on."

    def flat_log() -> str:  # freqtrade's console handler wraps long lines at spaces
        return " ".join(bot.log().split())

    wait_for(lambda: off in flat_log() or bot.proc.poll() is not None, 60, interval=0.3, what="the refusal")
    assert bot.proc.poll() is None, bot.log()[-3000:]
    assert said in flat_log() and flat_log().index(said) < flat_log().index(off)

    def beats_after_refusal() -> bool:
        assert bot.proc.poll() is None, bot.log()[-3000:]
        after = flat_log().split(off, 1)[1]
        return after.count("Bot heartbeat.") >= 3 and "state='RUNNING'" in after

    wait_for(beats_after_refusal, 30, interval=0.3, what="three heartbeats of a running bot after the refusal")
    with pytest.raises(OSError):  # nothing listens on the configured port, on any address
        urllib.request.urlopen(bot.url + "/api/market/health", timeout=2)
    assert bot.stop() in SIGINT_EXITS
