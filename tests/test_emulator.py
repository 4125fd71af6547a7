"""The exchange emulator, exercised through the REAL ccxt binance client over 127.0.0.1 (no mocks)."""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import ccxt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import wait_for
from tradecanvas_ext.testing import TIMEFRAMES, ExchangeEmulator, ManualClock
from tradecanvas_ext.testing.emulator import FaultDecision

NOW = 1_700_006_400 + 30  # 2023-11-15 00:00:30 UTC: aligned for every timeframe; the 1m candle is forming
SYMBOLS = ("BTC/USDT", "ETH/USDT", "LTC/USDT", "XRP/USDT", "ETH/BTC")


@pytest.fixture
def clock():
    return ManualClock(NOW)


@pytest.fixture
def emu(clock):
    e = ExchangeEmulator(seed=1, symbols=SYMBOLS, clock=clock)
    e.start()
    yield e
    e.stop()


def make_exchange(emu: ExchangeEmulator, timeout_ms: int = 3000) -> ccxt.binance:
    return ccxt.binance({**emu.ccxt_config(), "timeout": timeout_ms, "enableRateLimit": False})


@pytest.fixture
def ex(emu):
    return make_exchange(emu)


def as_oracle(rows):
    """ccxt rows [ms, o, h, l, c, v] -> emulator oracle tuples (t_seconds, o, h, l, c, v)."""
    return [(r[0] // 1000, r[1], r[2], r[3], r[4], r[5]) for r in rows]


def raw_get(emu, path, **params):
    """GET without ccxt: (status, headers, body text)."""
    query = "&".join(f"{k}={v}" for k, v in params.items())
    url = f"{emu.url}{path}" + (f"?{query}" if query else "")
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, dict(resp.headers), resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read().decode()


def valid(c) -> bool:
    t, o, h, low, close, v = c
    prices = (o, h, low, close)
    return (all(math.isfinite(x) and x > 0 for x in prices) and math.isfinite(v) and v > 0
            and low <= min(o, close) and h >= max(o, close))


# ------------------------------------------------------------------------------------------ markets


def test_load_markets_gives_the_configured_spot_symbols(emu, ex):
    markets = ex.load_markets()
    assert set(markets) == set(SYMBOLS)
    btc = markets["BTC/USDT"]
    assert btc["id"] == "BTCUSDT" and btc["spot"] and btc["active"] and btc["type"] == "spot"
    assert btc["precision"]["price"] == 0.01
    assert btc["limits"]["cost"]["min"] == 5.0
    assert markets["ETH/BTC"]["quote"] == "BTC"
    # spot only: exactly one request, to exchangeInfo (no futures/sapi calls that would leave loopback)
    assert emu.request_count() == 1 and emu.request_count("exchangeInfo") == 1
    assert all(url.startswith(emu.url) for url in emu.ccxt_config()["urls"]["api"].values())
    assert emu.url.startswith("http://127.0.0.1:")


def test_time_and_ping(emu, ex):
    assert ex.fetch_time() == NOW * 1000
    assert ex.publicGetPing() == {}
    assert emu.request_count("time") == 1 and emu.request_count("ping") == 1


# ------------------------------------------------------------------------------------------ klines


def test_fetch_ohlcv_1m_equals_oracle(emu, ex):
    since = NOW - 30 - 3 * 3600
    rows = ex.fetch_ohlcv("BTC/USDT", "1m", since=since * 1000, params={"until": (NOW - 90) * 1000})
    assert emu.requests[-1][1]["limit"] == "1000"  # ccxt asks for its maximum when since+until are given
    oracle = emu.candles("BTC/USDT", "1m", since, NOW - 90)
    assert as_oracle(rows) == oracle
    assert all(valid(c) for c in oracle)
    assert [c[0] for c in oracle] == list(range(since, NOW - 30, 60))  # 180 closed candles, no forming one


def test_fetch_ohlcv_5m_equals_oracle_and_is_rollup_of_1m(emu, ex):
    start = NOW - 30 - 6 * 3600
    five = as_oracle(ex.fetch_ohlcv("ETH/USDT", "5m", since=start * 1000, params={"until": (NOW - 301) * 1000}))
    assert five == emu.candles("ETH/USDT", "5m", start, NOW - 301)
    assert [c[0] for c in five] == list(range(start, NOW - 30, 300))
    one = as_oracle(ex.fetch_ohlcv("ETH/USDT", "1m", since=start * 1000, params={"until": (NOW - 61) * 1000}))
    by_t = {c[0]: c for c in one}
    for t, o, h, low, c, v in five:
        parts = [by_t[x] for x in range(t, t + 300, 60)]
        assert o == parts[0][1] and c == parts[-1][4]
        assert h == max(p[2] for p in parts) and low == min(p[3] for p in parts)
        assert v == pytest.approx(sum(p[5] for p in parts), rel=1e-12)


@pytest.mark.parametrize("timeframe", sorted(TIMEFRAMES, key=TIMEFRAMES.get))
def test_every_timeframe_is_valid_aligned_and_an_exact_rollup(emu, timeframe):
    tf = TIMEFRAMES[timeframe]
    # Binance's grid: 3d opens 1970-01-02 + k x 3d (t % 259200 == 86400), 1w on Mondays; the rest on the epoch
    off = {"3d": 86_400, "1w": 345_600}.get(timeframe, 0)
    start = NOW - 30 - max(2 * 86400, 3 * tf)
    big = emu.candles("LTC/USDT", timeframe, start, NOW)
    one = {c[0]: c for c in emu.candles("LTC/USDT", "1m", start, NOW)}
    assert big and all(valid(c) and c[0] % tf == off for c in big)
    assert len(big) >= 2 and big[0][0] - tf < start  # every grid time in the window, none skipped
    assert big[-1][0] + tf <= NOW  # closed candles only
    for t, o, h, low, c, v in big:
        parts = [one[x] for x in range(t, t + tf, 60)]
        assert (o, c) == (parts[0][1], parts[-1][4])
        assert (h, low) == (max(p[2] for p in parts), min(p[3] for p in parts))
        assert v == pytest.approx(sum(p[5] for p in parts), rel=1e-12)


def test_candles_are_deterministic_per_seed_and_differ_between_seeds(emu):
    other = ExchangeEmulator(seed=1, symbols=SYMBOLS, clock=lambda: NOW)
    third = ExchangeEmulator(seed=2, symbols=SYMBOLS, clock=lambda: NOW)
    a = emu.candles("BTC/USDT", "15m", NOW - 86400, NOW)
    assert a == other.candles("BTC/USDT", "15m", NOW - 86400, NOW)
    assert a != third.candles("BTC/USDT", "15m", NOW - 86400, NOW)
    # any time, e.g. early 2018 and 2030
    for t0 in (1_514_764_800, 1_900_000_020):
        far = ExchangeEmulator(seed=1, symbols=SYMBOLS, clock=lambda t0=t0: t0 + 86400)
        assert all(valid(c) for c in far.candles("XRP/USDT", "1m", t0, t0 + 86400))


def test_forming_candle_is_served_partial_and_nothing_after_now(emu, ex, clock):
    rows = ex.fetch_ohlcv("BTC/USDT", "1m", limit=3)  # no since: the latest 3, ending with the forming one
    assert [r[0] // 1000 for r in rows] == [NOW - 30 - 120, NOW - 30 - 60, NOW - 30]
    forming = as_oracle(rows)[-1]
    assert forming == emu.forming("BTC/USDT", "1m")
    assert valid(forming)
    assert emu.candles("BTC/USDT", "1m", NOW - 600, NOW)[-1][0] == NOW - 30 - 60  # the oracle: closed only
    # since = now: only the forming candle, never one with open time > now
    assert [r[0] // 1000 for r in ex.fetch_ohlcv("BTC/USDT", "1m", since=(NOW - 30) * 1000, limit=10)] == [NOW - 30]
    assert ex.fetch_ohlcv("BTC/USDT", "1m", since=(NOW + 60) * 1000, limit=10) == []
    # larger timeframe: the forming 1h candle is there too
    assert ex.fetch_ohlcv("BTC/USDT", "1h", limit=2)[-1][0] // 1000 == NOW - 30
    # once the minute is over the candle is final, and it differs from what was served while forming
    clock.set(NOW + 60)
    final = emu.candles("BTC/USDT", "1m", NOW - 30, NOW - 30)[0]
    assert final[0] == forming[0] and final[1] == forming[1]
    assert final != forming and forming[5] < final[5]


def test_limit_default_cap_and_over_1000_error(emu, ex):
    assert len(ex.fetch_ohlcv("BTC/USDT", "1m")) == 500  # ccxt sends limit=500 (Binance's default)
    rows = ex.fetch_ohlcv("BTC/USDT", "1m", since=(NOW - 30 - 5000 * 60) * 1000, limit=5000)
    assert len(rows) == 1000 and emu.requests[-1][1]["limit"] == "1000"  # ccxt caps at 1000
    assert as_oracle(rows) == emu.candles("BTC/USDT", "1m", NOW - 30 - 5000 * 60, NOW - 30 - 4001 * 60)
    with pytest.raises(ccxt.BadRequest, match="-1130"):
        ex.publicGetKlines({"symbol": "BTCUSDT", "interval": "1m", "limit": 1001})
    status, _, body = raw_get(emu, "/api/v3/klines", symbol="BTCUSDT", interval="1m", limit=1001)
    assert status == 400 and json.loads(body)["code"] == -1130


def test_end_time_only_gives_the_latest_rows_up_to_it(emu, ex):
    end = NOW - 30 - 3600
    rows = ex.publicGetKlines({"symbol": "BTCUSDT", "interval": "5m", "endTime": end * 1000, "limit": 4})
    assert [r[0] // 1000 for r in rows] == [end - 900, end - 600, end - 300, end]
    assert rows[0][6] == (end - 900) * 1000 + 300_000 - 1  # closeTime
    assert len(rows[0]) == 12 and all(isinstance(x, str) for x in rows[0][1:6]) and isinstance(rows[0][8], int)


def test_unknown_symbol_and_bad_interval(emu, ex):
    with pytest.raises(ccxt.BadSymbol, match="-1121"):
        ex.publicGetKlines({"symbol": "DOGEUSDT", "interval": "1m"})
    with pytest.raises(ccxt.BadSymbol):
        ex.fetch_ohlcv("DOGE/USDT", "1m")  # ccxt itself: not in the loaded markets
    with pytest.raises(ccxt.BadRequest, match="-1120"):
        ex.publicGetKlines({"symbol": "BTCUSDT", "interval": "7m"})
    with pytest.raises(ValueError):
        emu.candles("DOGE/USDT", "1m", NOW - 600, NOW)


def test_outage_rows_are_absent_and_limit_counts_existing_rows(emu, ex):
    t0 = NOW - 30 - 3600
    emu.faults.outage(t0 + 600, t0 + 1200)  # 10 minutes, every symbol
    emu.faults.outage(t0, t0 + 120, symbol="ETH/USDT")
    rows = as_oracle(ex.fetch_ohlcv("BTC/USDT", "1m", since=t0 * 1000, limit=30))
    times = [r[0] for r in rows]
    assert len(rows) == 30
    assert times == [t0 + 60 * i for i in range(10)] + [t0 + 1200 + 60 * i for i in range(20)]
    assert rows == emu.candles("BTC/USDT", "1m", t0, t0 + 1200 + 19 * 60)
    eth = [r[0] // 1000 for r in ex.fetch_ohlcv("ETH/USDT", "1m", since=t0 * 1000, limit=5)]
    assert eth == [t0 + 120 + 60 * i for i in range(5)]
    # larger timeframes: a candle whose open time is inside the outage is absent; one overlapping it
    # partially is built from the 1m candles that exist
    five = emu.candles("BTC/USDT", "5m", t0, t0 + 1800)
    assert [c[0] for c in five] == [t0, t0 + 300, t0 + 1200, t0 + 1500, t0 + 1800]
    assert as_oracle(ex.fetch_ohlcv("BTC/USDT", "5m", since=t0 * 1000, limit=5)) == five
    emu.faults.outage(t0 + 60, t0 + 180, symbol="LTC/USDT")  # two 1m candles inside the t0 5m bucket
    (t, o, h, low, c, v), = emu.candles("LTC/USDT", "5m", t0, t0)
    parts = emu.candles("LTC/USDT", "1m", t0, t0 + 240)
    assert [p[0] for p in parts] == [t0, t0 + 180, t0 + 240]
    assert (o, h, low, c) == (parts[0][1], max(p[2] for p in parts), min(p[3] for p in parts), parts[-1][4])
    assert v == pytest.approx(sum(p[5] for p in parts), rel=1e-12)
    emu.faults.clear_outages()
    assert len(emu.candles("BTC/USDT", "1m", t0, t0 + 1799)) == 30


# ------------------------------------------------------------------------------------------ faults


@pytest.mark.parametrize(
    ("status", "error_class", "code"),
    [
        (429, ccxt.DDoSProtection, "-1003"),  # binance raises DDoSProtection for 418/429 before the body
        (418, ccxt.DDoSProtection, "-1003"),
        (503, ccxt.OperationFailed, "-1001"),
        (500, ccxt.OperationFailed, "-1000"),
        (502, ccxt.ExchangeNotAvailable, "502"),
    ],
)
def test_http_error_surfaces_as_ccxt_exception_then_recovers(emu, ex, status, error_class, code):
    ex.load_markets()
    emu.faults.http_error(status, retry_after=3)
    with pytest.raises(error_class, match=code) as info:
        ex.fetch_ohlcv("BTC/USDT", "1m", limit=5)
    assert isinstance(info.value, ccxt.OperationFailed)  # the family a backfill retries
    assert ex.last_response_headers["Retry-After"] == "3"
    assert len(ex.fetch_ohlcv("BTC/USDT", "1m", limit=5)) == 5
    assert emu.request_count("klines") == 2


def test_rate_limit_bodies_and_headers_are_binance_like(emu):
    emu.faults.http_error(429, retry_after=7)
    status, headers, body = raw_get(emu, "/api/v3/klines", symbol="BTCUSDT", interval="1m")
    assert status == 429 and headers["Retry-After"] == "7" and json.loads(body)["code"] == -1003
    assert headers["Content-Type"].startswith("application/json") and int(headers["x-mbx-used-weight-1m"]) > 0
    emu.faults.http_error(503)
    status, headers, body = raw_get(emu, "/api/v3/klines", symbol="BTCUSDT", interval="1m")
    assert status == 503 and "Retry-After" not in headers
    assert json.loads(body) == {"code": -1001, "msg": "Internal error; unable to process your request. Please try again."}


def test_slow_answer_times_out_then_next_request_works(emu):
    ex = make_exchange(emu, timeout_ms=300)
    ex.load_markets()
    emu.faults.slow(6.0)
    t = time.monotonic()
    with pytest.raises(ccxt.RequestTimeout):
        ex.fetch_ohlcv("BTC/USDT", "1m", limit=5)
    assert time.monotonic() - t < 4.0  # the 0.3 s timeout, not the 6 s answer
    assert len(ex.fetch_ohlcv("BTC/USDT", "1m", limit=5)) == 5


def test_malformed_json_never_yields_candles(emu, ex):
    ex.load_markets()
    emu.faults.malformed()
    status, _, body = raw_get(emu, "/api/v3/klines", symbol="BTCUSDT", interval="1m", limit=5)
    assert status == 200
    with pytest.raises(ValueError):
        json.loads(body)
    emu.faults.malformed()
    # ccxt 4.5 does NOT raise here: an unparsable 200 body is returned as text, which fetch_ohlcv turns into
    # []. A consumer must not read an empty page of a past range as "the exchange has no data".
    try:
        rows = ex.fetch_ohlcv("BTC/USDT", "1m", since=(NOW - 3630) * 1000, limit=5)
    except ccxt.BaseError:
        rows = []
    assert rows == []
    assert len(ex.fetch_ohlcv("BTC/USDT", "1m", since=(NOW - 3630) * 1000, limit=5)) == 5


def test_duplicate_rows(emu, ex):
    ex.load_markets()
    since = NOW - 30 - 3600
    emu.faults.duplicate_rows()
    raw = ex.publicGetKlines({"symbol": "BTCUSDT", "interval": "1m", "startTime": since * 1000, "limit": 6})
    assert [r[0] // 1000 - since for r in raw] == [0, 0, 60, 120, 180, 180, 240, 300]
    emu.faults.duplicate_rows()
    rows = ex.fetch_ohlcv("BTC/USDT", "1m", since=since * 1000, limit=10)
    times = [r[0] for r in rows]
    assert len(times) == 10 and len(set(times)) < len(times)  # ccxt passes duplicates through
    assert sorted(set(as_oracle(rows))) == emu.candles("BTC/USDT", "1m", since, since + 6 * 60)


def test_out_of_order_rows(emu, ex):
    ex.load_markets()
    since = NOW - 30 - 3600
    emu.faults.out_of_order()
    raw = ex.publicGetKlines({"symbol": "BTCUSDT", "interval": "1m", "startTime": since * 1000, "limit": 20})
    times = [r[0] for r in raw]
    assert times != sorted(times) and sorted(times) == [(since + 60 * i) * 1000 for i in range(20)]
    emu.faults.out_of_order()
    rows = ex.fetch_ohlcv("BTC/USDT", "1m", since=since * 1000, limit=20)  # ccxt sorts the rows
    assert as_oracle(rows) == emu.candles("BTC/USDT", "1m", since, since + 19 * 60)


def test_fault_counts_path_filter_and_persistence(emu, ex):
    emu.faults.http_error(503, path="exchangeInfo")
    with pytest.raises(ccxt.OperationFailed):
        ex.load_markets()
    ex.load_markets()  # a failed load is not cached: the retry works
    emu.faults.http_error(500, n=None)  # persistent, klines only
    for _ in range(3):
        with pytest.raises(ccxt.OperationFailed):
            ex.fetch_ohlcv("BTC/USDT", "1m", limit=2)
    assert ex.fetch_ticker("BTC/USDT")["last"] > 0  # other paths unaffected
    assert [f["kind"] for f in emu.faults.active()] == ["http_error"]
    emu.faults.clear()
    assert emu.faults.active() == []
    assert len(ex.fetch_ohlcv("BTC/USDT", "1m", limit=2)) == 2
    emu.faults.http_error(502, n=2, path=None)  # every path
    with pytest.raises(ccxt.ExchangeNotAvailable):
        ex.fetch_time()
    with pytest.raises(ccxt.ExchangeNotAvailable):
        ex.fetch_ohlcv("BTC/USDT", "1m", limit=2)
    assert ex.fetch_time() == NOW * 1000


def test_request_counts_and_log(emu, ex):
    ex.load_markets()
    ex.fetch_ohlcv("BTC/USDT", "1m", limit=2)
    emu.faults.http_error(429)
    with pytest.raises(ccxt.DDoSProtection):
        ex.fetch_ohlcv("ETH/USDT", "5m", limit=2)
    raw_get(emu, "/api/v3/nothing")
    assert emu.request_count() == 4
    assert emu.request_count("klines") == 2 and emu.request_count("/api/v3/klines") == 2
    assert emu.request_count("exchangeInfo") == 1 and emu.request_count("ping") == 0
    path, params = emu.requests[2]
    assert path == "/api/v3/klines"
    assert params == {"symbol": "ETHUSDT", "interval": "5m", "limit": "2"}
    emu.reset_counts()
    assert emu.request_count() == 0 and emu.requests == []


def test_unknown_path_is_404_json(emu):
    status, headers, body = raw_get(emu, "/api/v3/nothing")
    assert status == 404 and headers["Content-Type"].startswith("application/json")
    assert json.loads(body)["code"] == -5000
    assert raw_get(emu, "/fapi/v1/exchangeInfo")[0] == 404


def test_server_side_rate_limit(clock):
    with ExchangeEmulator(seed=1, symbols=SYMBOLS, clock=clock, max_requests_per_second=2) as emu:
        statuses = []  # a burst until the bucket (2 requests, refilled at 2/s) runs dry, however fast we are
        while not statuses or statuses[-1][0] != 429:
            assert len(statuses) < 200, f"never rate limited: {statuses[-3:]}"
            statuses.append(raw_get(emu, "/api/v3/ping"))
        assert [s for s, _, _ in statuses[:2]] == [200, 200]
        _, headers, body = statuses[-1]
        assert headers["Retry-After"] == "1" and json.loads(body)["code"] == -1003
        ex = make_exchange(emu)
        with pytest.raises(ccxt.DDoSProtection):
            for _ in range(200):
                ex.fetch_time()
        # the bucket refills: a request after Retry-After's wait passes again
        assert wait_for(lambda: ex.fetch_time() == NOW * 1000, 10, interval=0.5, what="the bucket to refill")
        assert emu.request_count("ping") == len(statuses)  # rate-limited requests are counted too


def test_restart_on_the_same_port(emu, ex):
    ex.load_markets()
    port, url = emu.port, emu.url
    emu.stop()
    emu.stop()  # idempotent
    assert not emu.running
    with pytest.raises(ccxt.NetworkError):
        ex.fetch_ohlcv("BTC/USDT", "1m", limit=2)
    emu.start()
    assert emu.port == port and emu.url == url
    assert len(ex.fetch_ohlcv("BTC/USDT", "1m", limit=2)) == 2
    emu.stop()
    emu.start()
    emu.start()  # already running: no-op
    assert len(ex.fetch_ohlcv("BTC/USDT", "1m", limit=2)) == 2


# ------------------------------------------------------------------------------------------ tickers


def test_tickers_and_order_book_parse(emu, ex):
    tickers = ex.fetch_tickers()
    assert set(tickers) == set(SYMBOLS)
    forming = emu.forming("BTC/USDT", "1m")
    t = ex.fetch_ticker("BTC/USDT")
    assert t["last"] == forming[4] and t["timestamp"] == NOW * 1000
    assert t["bid"] < t["last"] < t["ask"] and t["low"] <= t["last"] <= t["high"] and t["baseVolume"] > 0
    assert tickers["BTC/USDT"]["last"] == t["last"]
    some = ex.fetch_tickers(["ETH/USDT", "ETH/BTC"])
    assert set(some) == {"ETH/USDT", "ETH/BTC"}
    book = ex.fetch_order_book("ETH/USDT", limit=20)
    assert len(book["bids"]) == 20 and len(book["asks"]) == 20
    bids, asks = [p for p, _ in book["bids"]], [p for p, _ in book["asks"]]
    assert bids == sorted(bids, reverse=True) and asks == sorted(asks) and bids[0] < asks[0]
    assert all(q > 0 for _, q in book["bids"] + book["asks"])
    assert len(ex.fetch_order_book("BTC/USDT")["bids"]) == 100  # Binance's default depth
    ba = ex.fetch_bids_asks(["BTC/USDT"])
    assert ba["BTC/USDT"]["bid"] == t["bid"] and ba["BTC/USDT"]["ask"] == t["ask"]
    assert ex.fetch_last_prices()["LTC/USDT"]["price"] == emu.forming("LTC/USDT", "1m")[4]


# ------------------------------------------------------------------------------------------ misc


def test_large_request_is_answered_whole(emu):
    rows = emu.candles("BTC/USDT", "1d", NOW - 1000 * 86400, NOW)
    assert len(rows) == 999


def test_command_line_runs_until_sigterm():
    env = dict(os.environ)
    proc = subprocess.Popen(
        [sys.executable, "-m", "tradecanvas_ext.testing.emulator", "--port", "0", "--seed", "3",
         "--symbols", "BTC/USDT,ETH/USDT", "--outage-in", "0:3600", "--outage", "1700000000:1700000600"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()
        assert "http://127.0.0.1:" in line, proc.stderr.read() if proc.poll() is not None else line
        url = line.strip().split()[-1]
        port = int(url.rsplit(":", 1)[1])
        assert port > 0
        # the scripted outage is on from start-up: the exchange answers 503 -1001
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(url + "/api/v3/ping", timeout=5)
        assert info.value.code == 503 and json.loads(info.value.read())["code"] == -1001
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()


# ------------------------------------------------------------------------------------------ properties

outage_strategy = st.lists(
    st.tuples(st.integers(0, 20_000), st.integers(1, 5_000), st.sampled_from([None, "BTC/USDT", "ETH/USDT"])),
    max_size=4)


@settings(max_examples=60, deadline=None)
@given(outages=outage_strategy, timeframe=st.sampled_from(["1m", "3m", "5m", "15m", "1h"]),
       start=st.integers(0, 25_000), span=st.integers(0, 25_000), limit=st.integers(1, 1000),
       from_end=st.booleans())
def test_outages_and_limits_match_brute_force(outages, timeframe, start, span, limit, from_end):
    base = NOW - 30 - 86400
    emu = ExchangeEmulator(seed=5, symbols=SYMBOLS, clock=lambda: NOW)
    clean = ExchangeEmulator(seed=5, symbols=SYMBOLS, clock=lambda: NOW)
    for off, length, sym in outages:
        emu.faults.outage(base + off, base + off + length, symbol=sym)
    tf = TIMEFRAMES[timeframe]
    lo, hi = base + start, base + start + span

    def gone(t):
        return any(base + o <= t < base + o + n and s in (None, "BTC/USDT") for o, n, s in outages)

    got = emu.candles("BTC/USDT", timeframe, lo, hi)
    expected_times = [t for t in range(math.ceil(lo / tf) * tf, hi + 1, tf) if t + tf <= NOW and not gone(t)]
    assert [c[0] for c in got] == expected_times
    assert all(valid(c) for c in got)
    full = {c[0]: c for c in clean.candles("BTC/USDT", timeframe, lo, hi)}
    ones = {c[0]: c for c in clean.candles("BTC/USDT", "1m", lo, hi + tf)}
    for c in got:
        kept = [ones[t] for t in range(c[0], c[0] + tf, 60) if not gone(t)]
        assert c[1] == kept[0][1] and c[4] == kept[-1][4]
        assert (c[2], c[3]) == (max(k[2] for k in kept), min(k[3] for k in kept))
        if len(kept) == tf // 60:
            assert c == full[c[0]]
    # what klines serves: the first (startTime given) or last (no startTime) `limit` of the same rows
    raw = emu.routes.klines({"symbol": "BTCUSDT", "interval": timeframe, "limit": str(limit),
                             "endTime": str(hi * 1000), **({} if from_end else {"startTime": str(lo * 1000)})},
                            NOW, FaultDecision())
    served = [r[0] // 1000 for r in raw]
    if from_end:  # the latest `limit` present candles with open time <= endTime
        want, t = [], hi // tf * tf
        while len(want) < limit:
            if not gone(t):
                want.append(t)
            t -= tf
        assert served == want[::-1]
    else:
        assert served == expected_times[:limit]
