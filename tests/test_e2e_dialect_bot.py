"""Issue 13, end to end on an exchange other than Binance: a real `freqtrade trade` dry-run of the sample
strategy against the emulator's Bybit v5 dialect (freqtrade's own Bybit class, reached by URL override
only), with an exchange outage scripted in the truth before the start. Over real HTTP and WebSocket: the
startup sync is green for every series, the candles served equal the truth, the outage is reported as a
void exactly over its range (the store, `/gaps`, the WebSocket `gap` reason, freqtrade's own dataframe
through `tc_void`) and nothing anywhere else is void, unavailable or missing. Real clock.
"""
from __future__ import annotations

import time

import pytest

from tests.botkit import (  # noqa: F401 (bots: a pytest fixture)
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
from tradecanvas_ext.domain import SeriesId
from tradecanvas_ext.testing import ExchangeEmulator

pytestmark = pytest.mark.slow

SERIES = ("bybit:spot:BTC/USDT:1m", "bybit:spot:ETH/USDT:1m", "bybit:spot:BTC/USDT:5m")
BTC1 = SERIES[0]
TARGET = 300  # startup_sync_target_candles
# every public path the Bybit dialect serves (dialects/bybit.py); anything else answers 404
SERVED = {"/v5/market/" + k for k in ("instruments-info", "time", "kline", "tickers", "orderbook")}


@pytest.fixture
def bybit():
    e = ExchangeEmulator(seed=13, symbols=("BTC/USDT", "ETH/USDT"), dialect="bybit").start()
    yield e
    e.stop()


def void_hole(start: int, end: int, tf: int) -> dict:
    """The hole a series reports for an outage over open times [start, end)."""
    return {"start": start, "end": end - tf, "missing_candles": (end - start) // tf, "void": True,
            "unavailable": False}


def test_a_bybit_dry_run_syncs_serves_the_truth_and_reports_the_outage_as_a_void(tmp_path, bybit, bots):  # noqa: F811
    t_start = time.monotonic()
    # 15 minutes, on the 5m grid, about an hour ago: inside every series' startup window (300 candles)
    end5 = latest_closed(300)
    outage = (end5 - 12 * 300, end5 - 9 * 300)
    bybit.faults.outage(*outage)
    bot = Bot(tmp_path, bybit, api=True, series=list(SERIES), startup_sync_target_candles=TARGET)
    bots.append(bot)
    bot.start()

    # 1. the startup sync: every series synced, the outage's candles not counted as covered
    sync = bot.wait_synced(timeout=120)
    t_synced = time.monotonic() - t_start
    synced_at = latest_closed()  # for step 5
    assert (sync["series_total"], sync["series_synced"], sync["series_errors"]) == (3, 3, 0), sync
    for r in sync["series_results"]:
        tf = SeriesId.parse(r["series_id"]).tf_seconds
        assert (r["status"], r["error"]) == ("synced", None), r
        assert r["covered_candles"] == TARGET - (outage[1] - outage[0]) // tf, r
    assert sorted(r["series_id"] for r in sync["series_results"]) == sorted(SERIES)

    def green():
        assert bot.proc.poll() is None, bot.log()[-3000:]
        body = bot.health()
        return body if body["status"] == "green" and all(r["status"] == "green" for r in body["series"]) else None

    wait_for(green, 30, interval=0.5, what="every series green in health")

    listed = {r["series_id"]: r for r in get_json(bot.url + "/api/market/series")["series"]}
    assert set(listed) == set(SERIES)
    for sid_text in SERIES:
        sid = SeriesId.parse(sid_text)
        tf, want_hole = sid.tf_seconds, void_hole(*outage, sid.tf_seconds)
        assert bybit.candles(sid.symbol, sid.timeframe, outage[0], outage[1] - tf) == []  # a real outage

        # 2. the candles served equal the truth, every field; the only hole is the outage, void
        got = bot.candles(sid_text, limit=TARGET)
        rows = as_rows(got["candles"])
        assert rows[0][0] < outage[0] and rows[-1][0] >= outage[1], (sid_text, rows[0], rows[-1])
        truth = bybit.candles(sid.symbol, sid.timeframe, rows[0][0], rows[-1][0])
        if tf == 60:
            assert rows == truth, sid_text
        else:  # rolled up from 1m in part: volume summed in floats
            assert same_candles(rows, truth), sid_text
        assert got["holes"] == [want_hole], (sid_text, got["holes"])

        # 3. /gaps over everything stored: the outage, void, and nothing else (no false void, nothing
        # unavailable, nothing missing)
        first = listed[sid_text]["first_time"]
        head = bot.health(sid_text)["head_time"]
        gaps = get_json(bot.url + f"/api/market/gaps?series_id={sid_text}&start={first}&end={head}")
        assert gaps["holes"] == [want_hole], (sid_text, gaps)
        assert gaps["missing_candles"] == want_hole["missing_candles"]
        assert len(bybit.candles(sid.symbol, sid.timeframe, first, head)) == (head - first) // tf + 1 - \
            want_hole["missing_candles"]  # every truth candle stored: the store holds exactly the truth

    # 4. a WebSocket subscriber from before the outage: the candles, one `gap` with reason void over the
    # outage, then a live candle; every candle sent is the truth's
    head = bot.health(BTC1)["head_time"]
    since = outage[0] - 5 * 60
    ws = WS(bot.url)
    assert ws.subscribe(BTC1, since=since)["type"] == "subscribed"
    ws.until(lambda m: m.get("type") == "candle_closed" and m["candle"]["candle_time"] > head, timeout=90)
    ws.close()
    times = check_guarantee(ws.received, BTC1, 60, since)
    gaps_sent = [e for e in events(ws.received, BTC1) if e[0] == "gap"]
    assert gaps_sent == [("gap", outage[0], outage[1], (outage[1] - outage[0]) // 60, "void")], gaps_sent
    sent = [c for m in ws.received if m.get("series_id") == BTC1
            for c in ([m["candle"]] if m["type"] == "candle_closed" else m.get("candles", []))]
    assert as_rows(sent) == bybit.candles("BTC/USDT", "1m", times[0], times[-1])
    assert times[-1] > head

    # 5. freqtrade's own dataframe (its /api/v1/pair_candles): the sample strategy's tc_void is 1 exactly on
    # the rows freqtrade filled over the outage, tc_real 0 exactly there. An analysis that ran while the
    # sync was still recording voids carries tc_void 0 until the next candle: take one of a candle that
    # closed after the sync.

    def analysed():
        body = bot.pair_candles("BTC/USDT", limit=200)
        cols = body.get("columns", [])
        if body.get("length", 0) == 0 or "tc_void" not in cols:
            return None
        rows_ = [dict(zip(cols, r, strict=True)) for r in body["data"]]
        return rows_ if max(int(r["__date_ts"]) // 1000 for r in rows_) > synced_at else None

    frame = {int(r["__date_ts"]) // 1000: r for r in wait_for(analysed, 90, interval=1.0,
                                                              what="an analysis after the sync")}
    hole = list(range(outage[0], outage[1], 60))
    assert sorted(t for t, r in frame.items() if r["tc_void"] == 1) == hole
    assert sorted(t for t, r in frame.items() if r["tc_real"] == 0 and t <= head) == hole

    # the bot and the extension asked only what the dialect serves; nothing went wrong in the bot
    asked = {path for path, _ in bybit.requests}
    assert asked <= SERVED and {"/v5/market/instruments-info", "/v5/market/kline"} <= asked, asked
    assert bot.stop() in SIGINT_EXITS, bot.log()[-8000:]
    log = bot.log()
    assert log_problems(log) == [], log_problems(log)
    print(f"\n[dialect e2e timings] synced after {t_synced:.1f}s, total {time.monotonic() - t_start:.0f}s")
