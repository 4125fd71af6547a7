"""The OpenAPI document is kept true (every route described, every answer validates), a fixed-seed
property fuzz of every route and of WebSocket frames (no 5xx, no dropped socket, nothing stored changed
by a rejected request), and the Prometheus metrics."""
from __future__ import annotations

import json

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from tests.conftest import NOW
from tests.wsclient import WS
from tradecanvas_ext.domain import SeriesId
from tradecanvas_ext.web.openapi import SPEC

SID = "binance:spot:BTC/USDT:1m"
S = SeriesId.parse(SID)
LAST = (NOW // 60) * 60 - 60
FUZZ = settings(max_examples=60, derandomize=True, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def validator(name: str) -> Draft202012Validator:
    return Draft202012Validator({"$ref": f"#/components/schemas/{name}", "components": SPEC["components"]})


@pytest.fixture
def api(make_runtime, exchange):
    rt = make_runtime(serve=True, ccxt_timeout_ms=1000)
    rt.store.upsert_closed(S, exchange.candles("BTC/USDT", "1m", LAST - 200 * 60, LAST - 100 * 60))
    rt.store.upsert_closed(S, exchange.candles("BTC/USDT", "1m", LAST - 90 * 60, LAST))
    return rt


def snapshot(rt):
    return rt.store.stats(S), rt.store.voids(S), rt.core.storage.tracker_rows.tracker_get(S)


def test_openapi_describes_every_route(api):
    doc = requests.get(api.url + "/api/market/openapi.json", timeout=10).json()
    assert doc == json.loads(json.dumps(SPEC))
    Draft202012Validator.check_schema({"$defs": doc["components"]["schemas"]})
    app = api.server.app if hasattr(api.server, "app") else None
    from tradecanvas_ext.web.app import create_app

    app = app or create_app(api)
    routes = {r.rule for r in app.url_map.iter_rules()
              if r.endpoint not in ("static", "market_ws") and not r.rule.startswith("/static")
              and r.rule != "/" and not r.endpoint.startswith("page")}
    assert routes == set(doc["paths"]), routes ^ set(doc["paths"])


def test_real_answers_validate_against_the_document(api):
    u = api.url
    checks = [
        (requests.get(f"{u}/api/market/candles", params={"series_id": SID, "limit": 300}), "Candles"),
        (requests.get(f"{u}/api/market/candles", params={"series_id": SID, "since": LAST - 150 * 60}),
         "Candles"),
        (requests.get(f"{u}/api/market/health"), "Health"),
        (requests.get(f"{u}/api/market/health", params={"series_id": SID}), "Health"),
        (requests.get(f"{u}/api/market/series"), "SeriesList"),
        (requests.get(f"{u}/api/market/gaps", params={"series_id": SID}), "Gaps"),
        (requests.post(f"{u}/api/market/backfill", json={"series_id": SID, "start": LAST - 95 * 60,
                                                         "end": LAST - 91 * 60}), "Coverage"),
        (requests.get(f"{u}/api/market/candles", params={"series_id": "x"}), "Error"),
        (requests.get(f"{u}/api/market/nope"), "Error"),
    ]
    for resp, schema in checks:
        validator(schema).validate(resp.json())
    assert checks[0][0].json()["holes"] == [{"start": LAST - 99 * 60, "end": LAST - 91 * 60,
                                              "missing_candles": 9, "void": False, "unavailable": False}]


_garbage = st.one_of(st.text(max_size=12), st.integers(-10**20, 10**20).map(str),
                     st.floats(allow_nan=True).map(str), st.sampled_from(["", "1e3", "0x10", " 5", "true"]))
_time = st.one_of(st.integers(LAST - 300 * 60, LAST + 600), _garbage)
_series = st.one_of(st.just(SID), st.sampled_from(["binance:spot:ETH/USDT:1m", "binance:spot:BTC/USDT:2w",
                                                   "nope:spot:BTC/USDT:1m", "a:b", ""]), st.text(max_size=30))


def _params(**fields):
    return st.fixed_dictionaries({}, optional=fields)


OPS = {
    "candles": ("get", "/api/market/candles", _params(series_id=_series, since=_time,
                                                      limit=st.one_of(st.integers(-5, 6000), _garbage))),
    "health": ("get", "/api/market/health", _params(series_id=_series, now_time=_time)),
    "series": ("get", "/api/market/series", _params(x=_garbage)),
    "gaps": ("get", "/api/market/gaps", _params(series_id=_series, start=_time, end=_time)),
}


@pytest.mark.parametrize("op", sorted(OPS))
def test_fuzz_get_routes(api, op):
    method, path, strategy = OPS[op]
    before = snapshot(api)

    @FUZZ
    @given(params=strategy)
    def run(params):
        resp = requests.request(method, api.url + path, params=params, timeout=30)
        assert resp.status_code < 500, (params, resp.text)
        body = resp.json()
        if resp.status_code >= 400:
            validator("Error").validate(body)
        else:
            op_spec = SPEC["paths"][path][method]["responses"]["200"]["content"]["application/json"]["schema"]
            validator(op_spec["$ref"].rsplit("/", 1)[1]).validate(body)

    run()
    if op != "candles":  # reads never change what is stored (candles may top up the tail: allowed)
        assert snapshot(api) == before


_bodies = st.one_of(
    st.fixed_dictionaries({"series_id": _series, "start": _time, "end": _time}),
    st.dictionaries(st.text(max_size=8), st.one_of(st.none(), st.integers(), st.text(max_size=8)), max_size=4),
    st.lists(st.integers(), max_size=3), st.text(max_size=20), st.none(),
)


def test_fuzz_backfill_post_rejected_requests_change_nothing(api):
    @FUZZ
    @given(body=_bodies, as_json=st.booleans())
    def run(body, as_json):
        before = snapshot(api)
        if as_json:
            resp = requests.post(api.url + "/api/market/backfill", json=body, timeout=60)
        else:
            resp = requests.post(api.url + "/api/market/backfill", data=str(body), timeout=60)
        assert resp.status_code < 500, (body, resp.text)
        if resp.status_code >= 400:
            validator("Error").validate(resp.json())
            assert snapshot(api) == before, body
        else:
            validator("Coverage").validate(resp.json())

    run()


_frames = st.one_of(
    st.text(max_size=40),
    st.dictionaries(st.sampled_from(["type", "series_id", "since", "supports_batch", "x"]),
                    st.one_of(st.none(), st.booleans(), st.integers(-5, 10**12), st.floats(), st.text(max_size=10),
                              st.sampled_from(["subscribe", "unsubscribe", "ping", SID])), max_size=4)
    .map(json.dumps),
    st.lists(st.integers(), max_size=3).map(json.dumps),
)


def test_fuzz_websocket_frames_never_drop_the_socket(api):
    ws = WS(api.url)
    watcher = WS(api.url)  # another client's subscription is never disturbed
    try:
        watcher.subscribe(SID, since=LAST - 2 * 60)
        watcher.drain(0.3)

        @FUZZ
        @given(frames=st.lists(_frames, min_size=1, max_size=5))
        def run(frames):
            for f in frames:
                ws.send(f)
            ws.send({"type": "ping"})
            msg = ws.until(lambda m: m["type"] in ("pong",))
            assert msg == {"type": "pong"}
            for m in ws.received:
                if m["type"] == "error":
                    assert m["code"] in ("bad_request", "unknown_series", "unauthorized", "too_many_subscriptions")
                    assert isinstance(m["message"], str) and m["message"]
            ws.received.clear()

        run()
        watcher.send({"type": "ping"})
        assert watcher.until(lambda m: m["type"] == "pong")
    finally:
        ws.close()
        watcher.close()


def test_metrics(api, exchange):
    u = api.url
    api.ingest_closed(SID, [(LAST + 600 * 60, 1, 1, 1, 1, 1), (LAST - 95 * 60, -1, 1, 1, 1, 1)])  # not closed, bad
    requests.post(f"{u}/api/market/backfill", json={"series_id": SID, "start": LAST - 99 * 60,
                                                    "end": LAST - 91 * 60}, timeout=30)
    ws = WS(u)
    try:
        ws.subscribe(SID, since=LAST - 60)
        ws.drain(0.3)
        text = requests.get(f"{u}/metrics", timeout=10).text
    finally:
        ws.close()
    for needle in [
        f'tradecanvas_candles_stored_total{{series_id="{SID}",source="ccxt"}} 9.0',
        'tradecanvas_candles_rejected_total{reason="not_closed"} 1.0',
        'tradecanvas_candles_rejected_total{reason="non_positive_price"} 1.0',
        f'tradecanvas_repairs_total{{note="tail_coverage_done",series_id="{SID}"}} 1.0',
        f'tradecanvas_repair_duration_seconds_count{{series_id="{SID}"}} 1.0',
        'tradecanvas_exchange_requests_total{exchange="binance"} 1.0',
        "tradecanvas_exchange_retries_total 0.0",
        f'tradecanvas_holes{{series_id="{SID}"}}',
        f'tradecanvas_health_status{{series_id="{SID}"}} 0.0',
        "tradecanvas_ws_clients 1.0",
        'tradecanvas_ws_messages_total{type="subscribed"} 1.0',
    ]:
        assert needle in text, needle
