"""Contract section 3 over real HTTP (real server on 127.0.0.1, ccxt, emulator): shapes, holes, read-path
coverage, every bad input (4xx JSON naming it, store untouched), the token and CORS."""
from __future__ import annotations

import http.client
import json
import logging
import sqlite3
from urllib.parse import urlsplit

import pytest
import requests

from tests.conftest import NOW
from tradecanvas_ext.domain import SeriesId, expected_latest_closed_time

SID = "binance:spot:BTC/USDT:1m"  # as clients send it
BTC = SeriesId.parse(SID)  # as the store takes it
ETH5 = "binance:spot:ETH/USDT:5m"
TF = 60
LAST = expected_latest_closed_time(NOW, TF)
TOKEN = "s3cret-token-value"
UI = "http://ui.example:3000"


class Api:
    def __init__(self, rt):
        self.rt = rt
        self.http = requests.Session()
        self.http.trust_env = False  # no proxy for 127.0.0.1

    def get(self, path: str, params=None, **kw) -> requests.Response:
        return self.http.get(self.rt.url + path, params=params, timeout=30, **kw)

    def post(self, path: str, body=None, **kw) -> requests.Response:
        """`body` goes as JSON; pass `data=` (and headers) instead to send raw bytes."""
        if "data" not in kw:
            kw["json"] = body
        return self.http.post(self.rt.url + path, timeout=30, **kw)

    def options(self, path: str, **kw) -> requests.Response:
        return self.http.options(self.rt.url + path, timeout=30, **kw)


@pytest.fixture
def api(make_runtime):
    def make(**section) -> Api:
        return Api(make_runtime(serve=True, **section))

    return make


def seed(rt, exchange, times, sid=SID, symbol="BTC/USDT", tf="1m"):
    rows = {r[0]: r for r in exchange.candles(symbol, tf, min(times), max(times))}
    res = rt.store.upsert_closed(SeriesId.parse(sid), [rows[t] for t in times], now=NOW)
    assert res.accepted == len(times)


def times_of(resp) -> list[int]:
    return [c["candle_time"] for c in resp.json()["candles"]]


def snapshot(rt) -> list[str]:
    """Every row of every table of the runtime's SQLite store."""
    path = rt.settings.db_url.split(":///", 1)[1]
    with sqlite3.connect(path) as conn:
        return list(conn.iterdump())


def assert_error(resp, status: int, code: str, *words: str) -> dict:
    assert resp.status_code == status, resp.text
    assert resp.headers["Content-Type"].startswith("application/json")
    err = resp.json()["error"]
    assert set(err) == {"code", "message"} and err["code"] == code, err
    for w in words:
        assert w.lower() in err["message"].lower(), (w, err["message"])
    return err


# ---- GET /api/market/candles ----------------------------------------------------------------------------

def test_candles_without_since_return_the_last_limit_closed_candles(api, exchange):
    a = api()
    seed(a.rt, exchange, [LAST - i * TF for i in range(10)])
    r = a.get("/api/market/candles", {"series_id": SID, "limit": 4})
    assert r.status_code == 200
    body = r.json()
    assert list(body) == ["series_id", "server_head_time", "candles", "holes"]
    assert body["series_id"] == SID and body["server_head_time"] == LAST
    assert times_of(r) == [LAST - 3 * TF, LAST - 2 * TF, LAST - TF, LAST]
    assert body["holes"] == []
    truth = {row[0]: row for row in exchange.candles("BTC/USDT", "1m", LAST - 3 * TF, LAST)}
    for c in body["candles"]:
        assert list(c) == ["candle_time", "open", "high", "low", "close", "volume"]
        assert tuple(c.values()) == truth[c["candle_time"]]


def test_candles_with_since_return_the_first_limit_after_it_exclusive(api, exchange):
    a = api()
    seed(a.rt, exchange, [LAST - i * TF for i in range(10)])
    r = a.get("/api/market/candles", {"series_id": SID, "since": LAST - 8 * TF, "limit": 3})
    assert times_of(r) == [LAST - 7 * TF, LAST - 6 * TF, LAST - 5 * TF]
    assert r.json()["server_head_time"] == LAST
    r = a.get("/api/market/candles", {"series_id": SID, "since": LAST})
    assert r.json()["candles"] == [] and r.json()["holes"] == []


def test_candles_limit_defaults_to_500_and_allows_5000(api, exchange):
    a = api(enable_market_auto_tail_backfill=False)
    seed(a.rt, exchange, [LAST - i * TF for i in range(600)])
    assert len(a.get("/api/market/candles", {"series_id": SID}).json()["candles"]) == 500
    assert len(a.get("/api/market/candles", {"series_id": SID, "limit": 5000}).json()["candles"]) == 600
    assert len(a.get("/api/market/candles", {"series_id": SID, "limit": 1}).json()["candles"]) == 1


def test_candles_of_an_empty_series(api):
    r = api().get("/api/market/candles", {"series_id": SID})
    assert r.status_code == 200
    assert r.json() == {"series_id": SID, "server_head_time": None, "candles": [], "holes": []}


def test_candles_holes_are_strictly_inside_the_returned_range_and_flag_voids(api, exchange):
    a = api(enable_market_auto_tail_backfill=False)
    t0 = LAST - 19 * TF
    missing = {t0 + 3 * TF, t0 + 4 * TF, t0 + 8 * TF, t0 + 12 * TF, t0 + 13 * TF, t0 + 14 * TF}
    seed(a.rt, exchange, [t0 + i * TF for i in range(20) if t0 + i * TF not in missing])
    a.rt.store.record_void(BTC, t0 + 8 * TF, t0 + 8 * TF, "ccxt", checked_at=NOW)
    a.rt.store.record_void(BTC, t0 + 13 * TF, t0 + 13 * TF, "ccxt", checked_at=NOW)
    r = a.get("/api/market/candles", {"series_id": SID, "limit": 100})
    assert r.json()["holes"] == [
        {"start": t0 + 3 * TF, "end": t0 + 4 * TF, "missing_candles": 2, "void": False, "unavailable": False},
        {"start": t0 + 8 * TF, "end": t0 + 8 * TF, "missing_candles": 1, "void": True, "unavailable": False},
        {"start": t0 + 12 * TF, "end": t0 + 12 * TF, "missing_candles": 1, "void": False, "unavailable": False},
        {"start": t0 + 13 * TF, "end": t0 + 13 * TF, "missing_candles": 1, "void": True, "unavailable": False},
        {"start": t0 + 14 * TF, "end": t0 + 14 * TF, "missing_candles": 1, "void": False, "unavailable": False},
    ]
    # the hole before the first returned candle and the one after the last are not inside the range
    r = a.get("/api/market/candles", {"series_id": SID, "since": t0 + 4 * TF, "limit": 3})
    assert times_of(r) == [t0 + 5 * TF, t0 + 6 * TF, t0 + 7 * TF] and r.json()["holes"] == []
    r = a.get("/api/market/candles", {"series_id": SID, "since": t0 + 6 * TF, "limit": 2})
    assert times_of(r) == [t0 + 7 * TF, t0 + 9 * TF]
    assert r.json()["holes"] == [{"start": t0 + 8 * TF, "end": t0 + 8 * TF, "missing_candles": 1, "void": True, "unavailable": False}]
    # a single candle has no inside
    r = a.get("/api/market/candles", {"series_id": SID, "since": t0 + 6 * TF, "limit": 1})
    assert r.json()["holes"] == []


def test_candles_holes_with_the_tail_coverage_on(api, exchange):
    """The read path's coverage check stands in for the holes only when its window was whole and holds
    the whole batch: a batch reaching before the window, or a hole in it, is listed as without it."""
    a = api(enable_ccxt_backfill=False, auto_tail_backfill_max_candles=5)  # the check sees the last 5
    t0 = LAST - 19 * TF
    seed(a.rt, exchange, [t0 + i * TF for i in range(20) if i not in (3, 4)])
    r = a.get("/api/market/candles", {"series_id": SID, "limit": 100})  # its last 5 are whole, not the rest
    assert r.json()["holes"] == [{"start": t0 + 3 * TF, "end": t0 + 4 * TF, "missing_candles": 2, "void": False, "unavailable": False}]
    r = a.get("/api/market/candles", {"series_id": SID, "limit": 5})
    assert times_of(r) == [t0 + 15 * TF + i * TF for i in range(5)] and r.json()["holes"] == []
    assert r.json()["server_head_time"] == LAST
    b = api(enable_ccxt_backfill=False, db_url=f"sqlite:///{a.rt.settings.user_data_dir}/other.sqlite")
    seed(b.rt, exchange, [t0 + i * TF for i in range(20) if i != 17])
    r = b.get("/api/market/candles", {"series_id": SID, "limit": 4})  # a hole in the checked window
    assert times_of(r) == [t0 + 15 * TF, t0 + 16 * TF, t0 + 18 * TF, t0 + 19 * TF]
    assert r.json()["holes"] == [{"start": t0 + 17 * TF, "end": t0 + 17 * TF, "missing_candles": 1, "void": False, "unavailable": False}]


def test_read_path_tail_coverage_fetches_from_the_exchange(api, exchange):
    a = api(enable_ccxt_backfill_on_read=True)
    exchange.reset_counts()
    r = a.get("/api/market/candles", {"series_id": SID, "limit": 50})
    assert r.status_code == 200
    assert times_of(r) == [LAST - i * TF for i in range(49, -1, -1)]
    assert [tuple(c.values()) for c in r.json()["candles"]] == exchange.candles("BTC/USDT", "1m",
                                                                                LAST - 49 * TF, LAST)
    assert exchange.request_count("klines") >= 1
    assert a.rt.store.stats(BTC)["candle_count"] == 50


def test_read_path_tail_coverage_target_is_capped_by_auto_tail_backfill_max_candles(api, exchange):
    a = api(enable_ccxt_backfill_on_read=True, auto_tail_backfill_max_candles=30)
    r = a.get("/api/market/candles", {"series_id": SID, "limit": 100})
    assert times_of(r) == [LAST - i * TF for i in range(29, -1, -1)]


def test_read_path_tail_coverage_respects_the_cooldown(api, exchange, clock):
    a = api(enable_ccxt_backfill_on_read=True, backfill_cooldown_s=2.0)
    assert len(a.get("/api/market/candles", {"series_id": SID, "limit": 50}).json()["candles"]) == 50
    klines = exchange.request_count("klines")
    # a second read right away wants 50 more candles, but the series was repaired less than 2 s ago
    r = a.get("/api/market/candles", {"series_id": SID, "limit": 100})
    assert len(r.json()["candles"]) == 50
    assert exchange.request_count("klines") == klines
    clock.advance(2.5)  # past the cooldown, still the same latest closed candle
    r = a.get("/api/market/candles", {"series_id": SID, "limit": 100})
    assert len(r.json()["candles"]) == 100
    assert exchange.request_count("klines") > klines


def test_auto_tail_switch_off_asks_the_exchange_nothing(api, exchange):
    a = api(enable_market_auto_tail_backfill=False, enable_ccxt_backfill_on_read=True)
    exchange.reset_counts()
    r = a.get("/api/market/candles", {"series_id": SID, "limit": 50})
    assert r.status_code == 200 and r.json()["candles"] == []
    assert exchange.request_count() == 0
    assert a.rt.core.storage.tracker_rows.tracker_get(BTC) is None  # not even a tracker row: no repair ran


def test_auto_tail_switch_forced_off_by_the_environment(api, exchange):
    a = api(env={"TRADE_CANVAS_ENABLE_MARKET_AUTO_TAIL_BACKFILL": "0"}, enable_ccxt_backfill_on_read=True)
    exchange.reset_counts()
    assert a.get("/api/market/candles", {"series_id": SID}).json()["candles"] == []
    assert exchange.request_count() == 0


def test_a_read_with_since_runs_no_tail_coverage(api, exchange):
    a = api(enable_ccxt_backfill_on_read=True)
    exchange.reset_counts()
    r = a.get("/api/market/candles", {"series_id": SID, "since": LAST - 100 * TF})
    assert r.status_code == 200 and r.json()["candles"] == []
    assert exchange.request_count() == 0


def test_a_failing_tail_coverage_never_fails_the_read(api, exchange, monkeypatch, caplog):
    a = api()
    seed(a.rt, exchange, [LAST - TF, LAST])

    def broken(*args, **kwargs):
        raise RuntimeError("repair exploded")

    monkeypatch.setattr(a.rt.backfill, "ensure_tail_coverage", broken)
    with caplog.at_level(logging.WARNING):
        r = a.get("/api/market/candles", {"series_id": SID})
    assert r.status_code == 200 and times_of(r) == [LAST - TF, LAST]
    assert "repair exploded" in caplog.text


# ---- GET /api/market/health -----------------------------------------------------------------------------

HEALTH_FIELDS = ["series_id", "timeframe_seconds", "now_time", "expected_latest_closed_time", "head_time",
                 "lag_seconds", "missing_seconds", "missing_candles", "status", "status_reason", "backfill"]


def test_health_of_one_series(api, exchange):
    a = api()
    seed(a.rt, exchange, [LAST - 2 * TF])
    r = a.get("/api/market/health", {"series_id": SID})
    assert r.status_code == 200
    h = r.json()
    assert list(h) == HEALTH_FIELDS
    assert h["series_id"] == SID and h["timeframe_seconds"] == TF and h["now_time"] == NOW
    assert h["head_time"] == LAST - 2 * TF and h["missing_seconds"] == 2 * TF and h["missing_candles"] == 2
    assert h["lag_seconds"] == NOW - (LAST - 2 * TF)
    assert h["status"] == "red" and h["status_reason"] == "lagging_no_recent_backfill"


def test_health_now_time_replays_another_moment(api, exchange):
    a = api()
    seed(a.rt, exchange, [LAST - 2 * TF])
    h = a.get("/api/market/health", {"series_id": SID, "now_time": LAST - TF}).json()
    assert h["now_time"] == LAST - TF and h["expected_latest_closed_time"] == LAST - 2 * TF
    assert h["status"] == "green" and h["status_reason"] == "up_to_date"


def test_health_of_all_series(api, exchange):
    a = api(series=[SID, ETH5])
    seed(a.rt, exchange, [LAST])
    body = a.get("/api/market/health").json()
    assert list(body) == ["status", "series", "startup_sync"]
    assert [s["series_id"] for s in body["series"]] == [SID, ETH5]
    assert [s["status"] for s in body["series"]] == ["green", "red"]
    assert body["status"] == "red" and body["startup_sync"] is None


# ---- GET /api/market/series -----------------------------------------------------------------------------

def test_series_lists_the_configured_series_in_config_order(api, exchange):
    a = api(series=[ETH5, SID])
    seed(a.rt, exchange, [LAST - 5 * TF, LAST - TF, LAST])
    body = a.get("/api/market/series").json()
    assert body == {"series": [
        {"series_id": ETH5, "timeframe_seconds": 300, "first_time": None, "head_time": None, "candle_count": 0,
         "status": "red", "status_reason": "missing_head", "active": True},
        {"series_id": SID, "timeframe_seconds": TF, "first_time": LAST - 5 * TF, "head_time": LAST,
         "candle_count": 3, "status": "green", "status_reason": "up_to_date", "active": True},
    ]}


# ---- GET /api/market/gaps -------------------------------------------------------------------------------

def test_gaps_lists_every_hole_in_the_window_with_voids(api, exchange):
    a = api()
    t0 = LAST - 29 * TF
    missing = {t0 + 5 * TF, t0 + 6 * TF, t0 + 7 * TF, t0 + 20 * TF}
    seed(a.rt, exchange, [t0 + i * TF for i in range(30) if t0 + i * TF not in missing])
    a.rt.store.record_void(BTC, t0 + 6 * TF, t0 + 6 * TF, "ccxt", checked_at=NOW)
    r = a.get("/api/market/gaps", {"series_id": SID, "start": t0 - 2 * TF, "end": LAST})
    assert r.status_code == 200
    assert r.json() == {"series_id": SID, "start": t0 - 2 * TF, "end": LAST, "holes": [
        {"start": t0 - 2 * TF, "end": t0 - TF, "missing_candles": 2, "void": False, "unavailable": False},
        {"start": t0 + 5 * TF, "end": t0 + 5 * TF, "missing_candles": 1, "void": False, "unavailable": False},
        {"start": t0 + 6 * TF, "end": t0 + 6 * TF, "missing_candles": 1, "void": True, "unavailable": False},
        {"start": t0 + 7 * TF, "end": t0 + 7 * TF, "missing_candles": 1, "void": False, "unavailable": False},
        {"start": t0 + 20 * TF, "end": t0 + 20 * TF, "missing_candles": 1, "void": False, "unavailable": False},
    ], "missing_candles": 6}


def test_gaps_default_window_runs_from_the_first_stored_candle_to_the_latest_closed(api, exchange):
    a = api()
    seed(a.rt, exchange, [LAST - 10 * TF, LAST - 9 * TF, LAST - 5 * TF])
    body = a.get("/api/market/gaps", {"series_id": SID}).json()
    assert body["start"] == LAST - 10 * TF and body["end"] == LAST
    assert body["holes"] == [
        {"start": LAST - 8 * TF, "end": LAST - 6 * TF, "missing_candles": 3, "void": False, "unavailable": False},
        {"start": LAST - 4 * TF, "end": LAST, "missing_candles": 5, "void": False, "unavailable": False},
    ]
    assert body["missing_candles"] == 8


def test_gaps_with_nothing_stored_and_no_start_is_empty(api):
    body = api().get("/api/market/gaps", {"series_id": SID}).json()
    assert body == {"series_id": SID, "start": None, "end": LAST, "holes": [], "missing_candles": 0}


def test_gaps_default_window_is_cut_to_its_newest_five_million_candles(api, exchange):
    a = api()
    old = LAST - 6_000_000 * TF
    a.rt.store.upsert_closed(BTC, [(old, 1.0, 1.0, 1.0, 1.0, 0.0), (LAST, 1.0, 1.0, 1.0, 1.0, 0.0)], now=NOW)
    body = a.get("/api/market/gaps", {"series_id": SID}).json()
    assert body["start"] == LAST - (5_000_000 - 1) * TF and body["end"] == LAST
    assert body["holes"] == [{"start": body["start"], "end": LAST - TF, "missing_candles": 4_999_999,
                              "void": False, "unavailable": False}]


# ---- POST /api/market/backfill --------------------------------------------------------------------------

def test_backfill_repairs_the_range_through_the_decision_tree(api, exchange):
    a = api()
    start, end = LAST - 59 * TF, LAST - 10 * TF
    r = a.post("/api/market/backfill", {"series_id": SID, "start": start, "end": end})
    assert r.status_code == 200, r.text
    res = r.json()
    assert res["series_id"] == SID and res["start"] == start and res["end"] == end
    assert res["covered"] == 50 and res["filled"] == 50 and res["complete"] is True
    assert res["sources"]["ccxt"] == 50 and res["note"] == "tail_coverage_done"
    assert a.rt.store.read_between(BTC, 0, 10**10).rows() == exchange.candles("BTC/USDT", "1m", start, end)


# ---- bad input: 4xx JSON naming what is wrong, never 5xx, the store untouched ---------------------------

BAD_SERIES = [
    ("", "4 parts"),
    ("binance:spot:BTC/USDT", "4 parts"),
    (":spot:BTC/USDT:1m", "exchange"),
    ("notanexchange:spot:BTC/USDT:1m", "exchange"),
    ("binance:margin:BTC/USDT:1m", "market"),
    ("binance:spot::1m", "symbol"),
    ("binance:spot:BTC/USDT:", "timeframe"),
    ("binance:spot:BTC/USDT:2w", "timeframe"),
    ("binance:spot:BTC/USDT:1M", "timeframe"),
    ("binance:spot:BTC/USDT:0m", "timeframe"),
    ("binance:spot:BTC/USDT:5x", "timeframe"),
]
BAD_INTS = ["1.5", "abc", "-1", "", "true", "false", "1e3", "0x10", " 1", "1 ", "+1", "1_000", "١",
            "99999999999999999999", "null"]
ROUTES_WITH_SERIES = ["/api/market/candles", "/api/market/health", "/api/market/gaps"]


def test_every_bad_series_id_is_400_naming_the_wrong_part(api, exchange):
    a = api()
    before = snapshot(a.rt)
    exchange.reset_counts()
    for path in ROUTES_WITH_SERIES:
        for raw, word in BAD_SERIES:
            assert_error(a.get(path, {"series_id": raw}), 400, "bad_parameter", word)
        for raw, word in BAD_SERIES:
            r = a.post("/api/market/backfill", {"series_id": raw, "start": 0, "end": 60})
            assert_error(r, 400, "bad_parameter", word)
    for path in ("/api/market/candles", "/api/market/gaps"):
        assert_error(a.get(path), 400, "bad_parameter", "series_id", "required")
    assert snapshot(a.rt) == before and exchange.request_count() == 0


def test_a_valid_but_unconfigured_series_is_404_unknown_series(api, exchange):
    a = api()
    before = snapshot(a.rt)
    other = "binance:spot:ETH/USDT:1m"
    for path in ROUTES_WITH_SERIES:
        assert_error(a.get(path, {"series_id": other}), 404, "unknown_series", other)
    r = a.post("/api/market/backfill", {"series_id": other, "start": 0, "end": 60})
    assert_error(r, 404, "unknown_series", other)
    assert snapshot(a.rt) == before and exchange.request_count() == 0


@pytest.mark.parametrize("path,name", [("/api/market/candles", "since"), ("/api/market/candles", "limit"),
                                       ("/api/market/health", "now_time"), ("/api/market/gaps", "start"),
                                       ("/api/market/gaps", "end")])
def test_every_bad_integer_parameter_is_400_naming_it(api, exchange, path, name):
    a = api(enable_ccxt_backfill_on_read=True)
    before = snapshot(a.rt)
    exchange.reset_counts()
    for raw in BAD_INTS:
        assert_error(a.get(path, {"series_id": SID, name: raw}), 400, "bad_parameter", name)
    assert_error(a.get(f"{path}?series_id={SID}&{name}=1&{name}=2"), 400, "bad_parameter", name, "once")
    assert snapshot(a.rt) == before and exchange.request_count() == 0


@pytest.mark.parametrize("limit", [0, 5001, 10**6])
def test_limit_outside_1_to_5000_is_400(api, limit):
    assert_error(api().get("/api/market/candles", {"series_id": SID, "limit": limit}), 400, "bad_parameter",
                 "limit")


def test_gaps_window_must_be_ordered_and_bounded(api, exchange):
    a = api()
    before = snapshot(a.rt)
    assert_error(a.get("/api/market/gaps", {"series_id": SID, "start": LAST, "end": LAST - TF}), 400,
                 "bad_parameter", "end", "start")
    assert_error(a.get("/api/market/gaps", {"series_id": SID, "start": 0, "end": LAST}), 400,
                 "bad_parameter", "5000000")
    assert snapshot(a.rt) == before


BAD_BODIES = [
    # (raw body, content type, code, words in the message)
    ("not json", "application/json", "bad_request", ["json"]),
    ("", "application/json", "bad_request", ["json"]),
    ('{"series_id": "x", ', "application/json", "bad_request", ["json"]),
    (json.dumps({"series_id": SID, "start": 0, "end": 60}), "text/plain", "bad_request", ["content-type"]),
    (json.dumps({"series_id": SID, "start": 0, "end": 60}), None, "bad_request", ["content-type"]),
    ("[]", "application/json", "bad_request", ["object"]),
    ("null", "application/json", "bad_request", ["object"]),
    ('"x"', "application/json", "bad_request", ["object"]),
    ("1", "application/json", "bad_request", ["object"]),
    ("{}", "application/json", "bad_parameter", ["series_id", "start", "end"]),
]


def _body(**fields):
    base = {"series_id": SID, "start": LAST - 10 * TF, "end": LAST}
    base.update(fields)
    return {k: v for k, v in base.items() if v is not ...}


BAD_FIELDS = [
    (_body(series_id=...), "series_id"), (_body(start=...), "start"), (_body(end=...), "end"),
    (_body(series_id=5), "series_id"), (_body(series_id=None), "series_id"),
    (_body(start="100"), "start"), (_body(start=1.5), "start"), (_body(start=float(LAST)), "start"),
    (_body(start=True), "start"), (_body(start=None), "start"), (_body(start=-1), "start"),
    (_body(start=[1]), "start"), (_body(start={"a": 1}), "start"), (_body(start=2**60), "start"),
    (_body(end="x"), "end"), (_body(end=False), "end"), (_body(end=-60), "end"),
    (_body(start=LAST, end=LAST - TF), "end"),
    (_body(start=LAST - 100_000 * TF, end=LAST), "100000"),
    (_body(to_time=LAST), "to_time"),
]


def test_every_bad_backfill_body_is_400_and_changes_nothing(api, exchange):
    a = api()
    seed(a.rt, exchange, [LAST - 5 * TF])
    before = snapshot(a.rt)
    exchange.reset_counts()
    for raw, ctype, code, words in BAD_BODIES:
        headers = {"Content-Type": ctype} if ctype else {}
        r = a.post("/api/market/backfill", data=raw.encode(), headers=headers)
        assert_error(r, 400, code, *words)
    for body, word in BAD_FIELDS:
        assert_error(a.post("/api/market/backfill", body), 400, "bad_parameter", word)
    nan = f'{{"series_id": "{SID}", "start": NaN, "end": {LAST}}}'
    r = a.post("/api/market/backfill", data=nan, headers={"Content-Type": "application/json"})
    assert_error(r, 400, "bad_parameter", "start")
    r = a.post("/api/market/backfill", data=b"{" + b" " * 100_000 + b"}",
               headers={"Content-Type": "application/json"})
    assert_error(r, 413, "payload_too_large")
    assert snapshot(a.rt) == before and exchange.request_count() == 0


def test_the_largest_allowed_backfill_range_is_accepted(api, exchange):
    a = api()
    first, btc = LAST - 99_999 * TF, SeriesId.parse(SID)
    # the store already holds the range but for two holes: the real service repairs just those
    holes = [(first, first + 2 * TF), (LAST - 50_000 * TF, LAST - 49_990 * TF)]
    rows = [r for r in exchange.candles("BTC/USDT", "1m", first, LAST)
            if not any(s <= r[0] <= e for s, e in holes)]
    assert a.rt.store.upsert_closed(btc, rows, now=NOW).accepted == 100_000 - 14
    exchange.reset_counts()
    r = a.post("/api/market/backfill", _body(start=first, end=LAST))
    assert r.status_code == 200, r.text
    res = r.json()
    assert (res["series_id"], res["start"], res["end"], res["target"]) == (SID, first, LAST, 100_000)
    assert res["complete"] and res["covered"] == 100_000 and res["filled"] == 14 and res["holes"] == []
    assert res["sources"]["ccxt"] == 14 and res["errors"] == []
    assert 1 <= exchange.request_count("klines") <= 2  # one request per hole at most
    assert a.rt.store.count_between(btc, first, LAST) == 100_000
    assert a.rt.store.read_between(btc, first, LAST).rows() == exchange.candles("BTC/USDT", "1m", first, LAST)


# ---- errors that are not about parameters ---------------------------------------------------------------

def test_unknown_routes_and_methods_answer_json(api):
    a = api()
    assert_error(a.get("/nope"), 404, "not_found", "/nope")  # `/` is the chart page (tests/test_page_browser.py)
    assert_error(a.get("/api/market/nope"), 404, "not_found", "/api/market/nope")
    assert_error(a.get("/api/market/candles/"), 404, "not_found")
    r = a.http.put(a.rt.url + "/api/market/candles", timeout=30)
    assert_error(r, 405, "method_not_allowed", "PUT")
    assert "GET" in r.headers["Allow"]
    assert_error(a.get("/api/market/backfill"), 405, "method_not_allowed")
    assert_error(a.get("/ws/market"), 400, "bad_request", "websocket")


def test_a_server_fault_is_500_internal_error_without_details_and_is_logged(api, monkeypatch, caplog):
    a = api()

    def broken(sid):
        raise RuntimeError("secret internals")

    monkeypatch.setattr(a.rt.store, "stats", broken)
    with caplog.at_level(logging.ERROR):
        r = a.get("/api/market/series")
    err = assert_error(r, 500, "internal_error")
    assert "secret" not in err["message"] and "Traceback" not in r.text
    assert "secret internals" in caplog.text and "Traceback" in caplog.text


# ---- api_token ------------------------------------------------------------------------------------------

def test_token_is_required_on_every_route_but_health(api, exchange):
    a = api(api_token=TOKEN)
    good = {"Authorization": f"Bearer {TOKEN}"}
    calls = [("GET", "/api/market/candles", {"series_id": SID}), ("GET", "/api/market/series", None),
             ("GET", "/api/market/gaps", {"series_id": SID}), ("POST", "/api/market/backfill", None)]
    body = _body(start=LAST - TF)
    for method, path, params in calls:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN},
                        {"Authorization": f"Basic {TOKEN}"}, {"Authorization": f"Bearer {TOKEN}x"},
                        {"Authorization": "Bearer"}):
            r = a.http.request(method, a.rt.url + path, params=params, json=body, headers=headers, timeout=30)
            assert_error(r, 401, "unauthorized", "token")
            assert r.headers["WWW-Authenticate"].startswith("Bearer")
        r = a.http.request(method, a.rt.url + path, params={**(params or {}), "token": TOKEN}, json=body,
                           timeout=30)
        assert_error(r, 401, "unauthorized")  # ?token= is for the WebSocket only
        r = a.http.request(method, a.rt.url + path, params=params, json=body, headers=good, timeout=30)
        assert r.status_code == 200, (path, r.text)
        r = a.http.request(method, a.rt.url + path, params=params, json=body,
                           headers={"Authorization": f"bearer  {TOKEN} "}, timeout=30)
        assert r.status_code == 200, (path, r.text)
    assert a.get("/api/market/health").status_code == 200
    assert a.get("/api/market/health", {"series_id": SID}).status_code == 200


def test_without_a_token_configured_no_header_is_needed(api):
    assert api().get("/api/market/series").status_code == 200


def test_the_token_never_reaches_the_logs(api, caplog):
    a = api(api_token=TOKEN)
    with caplog.at_level(logging.DEBUG):
        a.get("/api/market/series", headers={"Authorization": f"Bearer {TOKEN}"})
        a.get("/api/market/series", headers={"Authorization": f"Bearer {TOKEN}-wrong"})
        a.get("/api/market/health", {"token": TOKEN})
        a.get("/api/market/nope", {"token": TOKEN})
    server_side = "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith("urllib3"))
    assert "GET /api/market/health?token=*** " in server_side  # the access line is there, redacted
    assert TOKEN not in server_side


# ---- CORS -----------------------------------------------------------------------------------------------

def test_cors_allows_configured_origins_only(api):
    a = api(cors_origins=[UI])
    r = a.get("/api/market/series", headers={"Origin": UI})
    assert r.status_code == 200
    assert r.headers["Access-Control-Allow-Origin"] == UI and "Origin" in r.headers["Vary"]
    r = a.get("/api/market/series", headers={"Origin": "http://evil.example"})
    assert r.status_code == 200 and "Access-Control-Allow-Origin" not in r.headers
    r = a.get("/api/market/series")
    assert "Access-Control-Allow-Origin" not in r.headers


def test_cors_preflight_answers_without_a_token(api):
    a = api(cors_origins=[UI], api_token=TOKEN)
    pre = {"Origin": UI, "Access-Control-Request-Method": "POST",
           "Access-Control-Request-Headers": "authorization, content-type"}
    r = a.options("/api/market/backfill", headers=pre)
    assert r.status_code in (200, 204)
    assert r.headers["Access-Control-Allow-Origin"] == UI
    assert {"GET", "POST"} <= {m.strip() for m in r.headers["Access-Control-Allow-Methods"].split(",")}
    allowed = {h.strip().lower() for h in r.headers["Access-Control-Allow-Headers"].split(",")}
    assert {"authorization", "content-type"} <= allowed
    r = a.options("/api/market/backfill", headers={**pre, "Origin": "http://evil.example"})
    assert "Access-Control-Allow-Origin" not in r.headers
    assert "Access-Control-Allow-Methods" not in r.headers


def test_cors_headers_are_on_error_answers_too(api):
    a = api(cors_origins=[UI], api_token=TOKEN)
    r = a.get("/api/market/series", headers={"Origin": UI})
    assert r.status_code == 401 and r.headers["Access-Control-Allow-Origin"] == UI
    r = a.get("/api/market/health", {"series_id": "bad"}, headers={"Origin": UI})
    assert r.status_code == 400 and r.headers["Access-Control-Allow-Origin"] == UI


def test_without_cors_origins_no_cors_header_is_sent(api):
    r = api().get("/api/market/series", headers={"Origin": UI})
    assert "Access-Control-Allow-Origin" not in r.headers


# ---- hostile or careless input, and what an answer may reveal (issue 12) --------------------------------

@pytest.mark.parametrize("body", ["[" * 60_000, '{"series_id": ' + "[" * 60_000 + "]" * 4000,
                                  '{"a":' * 10_000 + "1" + "}" * 10_000])
def test_a_deeply_nested_backfill_body_is_400_and_no_traceback(api, exchange, caplog, body):
    a = api()
    before = snapshot(a.rt)
    with caplog.at_level(logging.DEBUG):
        r = a.post("/api/market/backfill", data=body, headers={"Content-Type": "application/json"})
    assert_error(r, 400, "bad_request", "nests too deeply")
    assert "RecursionError" not in caplog.text and "Traceback" not in caplog.text
    assert snapshot(a.rt) == before and exchange.request_count("klines") == 0
    assert a.get("/api/market/series").status_code == 200  # the server is fine


def test_openapi_is_behind_the_token_when_one_is_set(api):
    a = api(api_token=TOKEN)
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        assert_error(a.get("/api/market/openapi.json", headers=headers), 401, "unauthorized", "token")
    r = a.get("/api/market/openapi.json", headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200 and r.json()["openapi"].startswith("3.")
    assert api().get("/api/market/openapi.json").status_code == 200  # no token configured: open


def _failed_repair_and_sync(a, exchange):
    """A tracker row with an error text and an owner, and a startup sync result with per-series errors."""
    exchange.faults.http_error(400, n=None, body={"code": -1121, "msg": "upstream says no: secret-detail"})
    a.rt.run_startup_sync()
    exchange.faults.clear()
    doc = a.rt.health()
    (row,) = doc["series"]
    assert row["backfill"]["state"] == "failed" and row["backfill"]["error"] and row["backfill"]["owner"]
    assert doc["startup_sync"]["series_results"][0]["error"]
    return doc


def test_health_without_the_token_shows_status_fields_only(api, exchange):
    """Contract section 3: no error texts, no process names (host:pid) to a caller without the token."""
    a = api(api_token=TOKEN)
    full = _failed_repair_and_sync(a, exchange)
    owner = full["series"][0]["backfill"]["owner"]
    good = {"Authorization": f"Bearer {TOKEN}"}
    for params in (None, {"series_id": SID}):
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            r = a.get("/api/market/health", params, headers=headers)
            assert r.status_code == 200
            assert owner not in r.text and "secret-detail" not in r.text and "upstream" not in r.text
            doc = r.json()
            rows = doc["series"] if params is None else [doc]
            for row in rows:
                assert row["status"] == "red" and row["backfill"]["state"] == "failed"
                assert "error" not in row["backfill"] and "owner" not in row["backfill"]
                assert set(row["backfill"]) == set(full["series"][0]["backfill"]) - {"error", "owner"}
            if params is None:
                (res,) = doc["startup_sync"]["series_results"]
                assert "error" not in res and res["status"] == "errors" and res["series_id"] == SID
                assert doc["startup_sync"]["series_errors"] == 1
        with_token = a.get("/api/market/health", params, headers=good)
        assert owner in with_token.text and "secret-detail" in with_token.text  # the operator sees it all


def test_health_without_a_token_configured_shows_everything(api, exchange):
    a = api()
    full = _failed_repair_and_sync(a, exchange)
    r = a.get("/api/market/health")
    assert full["series"][0]["backfill"]["owner"] in r.text and "secret-detail" in r.text


def test_every_response_has_nosniff_and_no_version_in_server(api, exchange):
    a = api(api_token=TOKEN)
    good = {"Authorization": f"Bearer {TOKEN}"}
    answers = [a.get("/"), a.get("/assets/app.js"), a.get("/api/market/health"), a.get("/api/market/series"),
               a.get("/api/market/series", headers=good), a.get("/api/market/nope", headers=good),
               a.get("/api/market/candles", {"series_id": "x"}, headers=good),
               a.post("/api/market/backfill", data="[", headers={**good, "Content-Type": "application/json"}),
               a.get("/metrics", headers=good), a.get("/api/market/openapi.json", headers=good),
               a.options("/api/market/series"), a.get("/ws/market")]
    assert sorted({r.status_code for r in answers}) == [200, 400, 401, 404]
    for r in answers:
        assert r.headers.get("X-Content-Type-Options") == "nosniff", (r.url, r.status_code)
        assert r.headers["Server"] == "tradecanvas", (r.url, r.headers["Server"])
        assert "werkzeug" not in str(r.headers).lower() and "python" not in str(r.headers).lower()


def test_the_token_is_masked_in_logs_however_its_name_is_encoded(api, caplog):
    """The request line goes as typed (http.client; requests would decode %74 itself); the app URL-decodes
    the name, so `?%74oken=` is the token too, and the log must hide its value."""
    a = api(api_token=TOKEN)
    queries = (f"?%74oken={TOKEN}", f"?a=1&t%6Fk%65n={TOKEN}&b=2", f"?TOKEN={TOKEN}", f"?x=1?token={TOKEN}",
               f"?%74%6F%6B%65%6E={TOKEN}", f"?to%6Ben={TOKEN.replace('-', '%2D')}")
    conn = http.client.HTTPConnection("127.0.0.1", urlsplit(a.rt.url).port, timeout=30)
    with caplog.at_level(logging.DEBUG):
        for query in queries:
            conn.request("GET", "/api/market/health" + query)
            assert conn.getresponse().read()
        conn.request("GET", f"/ws/market?%74oken={TOKEN}")  # the WebSocket route, which reads ?token=
        conn.getresponse().read()
    conn.close()
    server_side = "\n".join(r.getMessage() for r in caplog.records)
    for line in ("?%74oken=*** ", "?a=1&t%6Fk%65n=***&b=2 ", "?TOKEN=*** ", "?x=1?token=*** ", "?%74%6F%6B%65%6E=*** ",
                 "?to%6Ben=*** "):
        assert f'"GET /api/market/health{line}HTTP/1.1" 200' in server_side, line
    assert '"GET /ws/market?%74oken=*** HTTP/1.1"' in server_side
    assert TOKEN not in server_side and "s3cret" not in server_side
