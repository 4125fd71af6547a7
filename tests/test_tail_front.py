"""The covered tail read answered in front of Flask (web/tail_front.py): for every request, the answer with
the layer is byte for byte the answer Flask alone gives (status, headers in order, body) — the covered
read, a refused Host, a missing or wrong token, foreign and listed Origins, a preflight, bad parameters,
and reads right after writes in this process and in another one; and the layer answers only the covered
read itself (Flask sees every other request)."""
from __future__ import annotations

import http.client
import json

import pytest
from flask import Flask, request_started
from werkzeug.test import EnvironBuilder, run_wsgi_app

from tests.conftest import NOW
from tests.test_tail_answers import row, write_elsewhere
from tradecanvas_ext.domain import SeriesId, expected_latest_closed_time
from tradecanvas_ext.web.app import create_app
from tradecanvas_ext.web.server import WebServer

SID = "binance:spot:BTC/USDT:1m"
BTC = SeriesId.parse(SID)
TF = 60
LAST = expected_latest_closed_time(NOW, TF)
TOKEN = "s3cret-token-value"
UI = "http://ui.example:3000"
PATH = "/api/market/candles"
TAIL = f"series_id={SID}&limit=40"


class Pair:
    """One app, called with the layer (`front`, as served) and without it (`flask`: Flask.wsgi_app)."""

    def __init__(self, rt):
        self.rt = rt
        self.app = create_app(rt)
        self.dispatched = 0  # requests Flask handled

        def count(sender, **extra):
            self.dispatched += 1

        self._count = count  # the signal holds its receivers weakly
        request_started.connect(count, self.app)

    def call(self, wsgi, query: str = TAIL, method: str = "GET", path: str = PATH, **headers):
        env = EnvironBuilder(path=path, query_string=query, method=method,
                             headers={"Host": "localhost", **headers}).get_environ()
        body, status, hdrs = run_wsgi_app(wsgi, env, buffered=True)
        return status, list(hdrs.items()), b"".join(body)

    def front(self, **kw):
        before = self.dispatched
        answer = self.call(self.app, **kw)
        return answer, self.dispatched == before  # (answer, served in front of Flask)

    def flask(self, **kw):
        return self.call(lambda e, s: Flask.wsgi_app(self.app, e, s), **kw)

    def same(self, **kw) -> tuple:
        """The answer with the layer equals Flask's own; returns it and whether the layer served it."""
        answer, in_front = self.front(**kw)
        assert answer == self.flask(**kw)
        return answer, in_front


@pytest.fixture
def pair(make_runtime):
    def make(**section) -> Pair:
        rt = make_runtime(enable_ccxt_backfill=False, **section)  # the tail check finds what is stored
        base = LAST - 60 * TF
        rt.store.upsert_closed(BTC, [row(base + i * TF) for i in range(60) if i != 30], now=NOW)
        return Pair(rt)

    return make


def header(answer, name: str) -> str | None:
    return dict(answer[1]).get(name)


@pytest.mark.parametrize("section", [{}, {"api_token": TOKEN}, {"cors_origins": [UI]},
                                     {"api_token": TOKEN, "cors_origins": [UI]}])
def test_the_covered_read_is_served_in_front_with_flasks_bytes(pair, section):
    p = pair(**section)
    auth = {"Authorization": f"Bearer {TOKEN}"} if "api_token" in section else {}
    first, in_front = p.front(**auth)
    assert not in_front and first[0] == "200 OK"  # nothing kept yet: Flask built and kept it
    for origin in ({}, {"Origin": UI}, {"Origin": "http://evil.example"}):
        answer, in_front = p.same(**auth, **origin)
        assert in_front and answer[0] == "200 OK" and answer[2] == first[2]
        assert header(answer, "X-Content-Type-Options") == "nosniff"
        allowed = "cors_origins" in section and origin.get("Origin") == UI
        assert header(answer, "Access-Control-Allow-Origin") == (UI if allowed else None)
        assert header(answer, "Vary") == ("Origin" if "cors_origins" in section else None)
    # a default limit and parameters in another order are the same read
    _, in_front = p.front(query=f"limit=500&series_id={SID}", **auth)
    assert not in_front  # limit 500 not kept yet
    for query in (f"limit=500&series_id={SID}", f"series_id={SID}", f"series_id={SID}&_=12345"):
        answer, in_front = p.same(query=query, **auth)
        assert in_front and answer[0] == "200 OK"


@pytest.mark.parametrize("host", ["evil.example", "localhost:8090", "127.0.0.1.evil.example", ""])
def test_a_foreign_host_is_refused_by_flask(pair, host):
    p = pair()
    p.front()  # kept
    answer, in_front = p.same(Host=host)
    assert answer[0] == "403 FORBIDDEN" and b"Host" in answer[2] and not in_front


@pytest.mark.parametrize("auth", [None, "Bearer wrong-token-value", f"Basic {TOKEN}", "Bearer ",
                                  f"Bearer {TOKEN}x", TOKEN])
def test_a_missing_or_wrong_token_is_refused_by_flask(pair, auth):
    p = pair(api_token=TOKEN, cors_origins=[UI])
    p.front(Authorization=f"Bearer {TOKEN}")  # kept
    headers = {} if auth is None else {"Authorization": auth}
    answer, in_front = p.same(Origin=UI, **headers)
    assert answer[0] == "401 UNAUTHORIZED" and not in_front
    assert header(answer, "WWW-Authenticate") and header(answer, "Access-Control-Allow-Origin") == UI
    # the query token is the WebSocket's only, not the HTTP API's
    answer, in_front = p.same(query=f"{TAIL}&token={TOKEN}", **headers)
    assert answer[0] == "401 UNAUTHORIZED" and not in_front


def test_a_cors_preflight_goes_to_flask(pair):
    p = pair(api_token=TOKEN, cors_origins=[UI])
    p.front(Authorization=f"Bearer {TOKEN}")
    for origin in (UI, "http://evil.example"):
        answer, in_front = p.same(method="OPTIONS", Origin=origin, **{"Access-Control-Request-Method": "GET"})
        assert not in_front and answer[0].startswith("200")
        assert header(answer, "Access-Control-Allow-Methods") == ("GET, POST, OPTIONS" if origin == UI else None)


@pytest.mark.parametrize("query", [
    f"series_id={SID}&limit=0", f"series_id={SID}&limit=5001", f"series_id={SID}&limit=abc",
    f"series_id={SID}&limit=-1", f"series_id={SID}&limit=40&limit=40", f"series_id={SID}&limit=",
    "series_id=binance:spot:ETH/USDT:1m&limit=40", "series_id=nonsense&limit=40", "limit=40",
    f"series_id={SID}&series_id={SID}&limit=40", f"series_id={SID}&limit=40&since=0",
    f"series_id={SID}&limit=40&since=abc", f"series_id={SID}&limit=40&since=",
])
def test_bad_parameters_and_the_plain_read_go_to_flask(pair, query):
    p = pair()
    for limit in (1, 40, 500, 5000):  # kept: a lenient parse would find one of them
        p.front(query=f"series_id={SID}&limit={limit}")
        assert p.front(query=f"series_id={SID}&limit={limit}")[1]
    answer, in_front = p.same(query=query)
    assert not in_front
    assert answer[0] == "200 OK" if query.endswith("since=0") else answer[0][0] == "4", answer


def test_other_routes_and_methods_go_to_flask(pair):
    p = pair()
    p.front()
    for kw in ({"method": "HEAD"}, {"method": "POST"}, {"path": PATH + "/"}, {"path": "/api/market/health"}):
        _, in_front = p.same(**kw)
        assert not in_front


def doc(answer) -> dict:
    return json.loads(answer[2])


def test_a_write_in_this_process_is_in_the_next_read(pair):
    p = pair()
    base = LAST - 60 * TF
    kept, _ = p.front()
    assert p.front() == (kept, True) and doc(kept)["holes"][0]["start"] == base + 30 * TF
    for k, value in ((60, 100.0), (30, 100.0), (60, 300.0)):  # a new head, the hole filled, the head rewritten
        p.rt.store.upsert_closed(BTC, [row(base + k * TF, base=value)], now=NOW)
        answer, in_front = p.front()
        assert not in_front and answer == Pair(p.rt).flask()  # rebuilt: what an app with nothing kept gives
        candles = {c["candle_time"]: c for c in doc(answer)["candles"]}
        assert candles[base + k * TF]["open"] == value
        assert p.same() == (answer, True)
    assert doc(answer)["holes"] == [] and doc(answer)["server_head_time"] == base + 60 * TF
    p.rt.store.record_void(BTC, base + 61 * TF - 3600, base + 61 * TF - 3600, "ccxt", checked_at=NOW)
    answer, in_front = p.front()
    assert not in_front and answer == Pair(p.rt).flask()


def test_another_process_write_is_in_the_next_read(pair):
    p = pair()
    p.rt.core.storage.watcher.stop()  # only the read's own sequence check may notice the other process
    base = LAST - 60 * TF
    p.front()
    assert p.front()[1]
    write_elsewhere(p.rt.settings.db_url, [row(base + 30 * TF, base=700.0)])  # a hole filled elsewhere
    answer, in_front = p.front()
    assert not in_front and answer == Pair(p.rt).flask()
    opens = {c["candle_time"]: c["open"] for c in doc(answer)["candles"]}
    assert doc(answer)["holes"] == [] and opens[base + 30 * TF] == 700.0
    assert p.same() == (answer, True)


def raw_get(url: str, path: str, headers: dict) -> tuple:
    """Status, headers (without Date) and body exactly as the server wrote them."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request("GET", path, headers=headers)
        r = conn.getresponse()
        return r.status, [(k, v) for k, v in r.getheaders() if k != "Date"], r.read()
    finally:
        conn.close()


def test_over_the_wire_the_layer_and_flask_write_the_same_bytes(pair):
    p = pair(api_token=TOKEN, cors_origins=[UI])
    servers = [WebServer(p.app, "127.0.0.1", 0), WebServer(lambda e, s: Flask.wsgi_app(p.app, e, s), "127.0.0.1", 0)]
    for s in servers:
        s.start()
    try:
        for headers in ({"Authorization": f"Bearer {TOKEN}", "Origin": UI}, {"Origin": UI}, {}):
            answers = []
            for s in servers:
                raw_get(s.url, f"{PATH}?{TAIL}", {**headers, "Host": s.url.removeprefix("http://")})  # kept
                before = p.dispatched
                answers.append((raw_get(s.url, f"{PATH}?{TAIL}", {**headers, "Host": s.url.removeprefix("http://")}),
                                p.dispatched == before))
            (ours, in_front), (theirs, _) = answers
            assert ours == theirs and in_front == ("Authorization" in headers)
            assert ours[0] == (200 if "Authorization" in headers else 401)
    finally:
        for s in servers:
            s.stop()


def test_a_retired_series_is_still_read_in_front_without_a_tail_check(pair):
    p = pair()
    kept, _ = p.front()
    p.rt.registry.retire([BTC])  # left the whitelist: its history stays readable, never repaired
    assert not p.rt.is_configured(BTC) and p.rt.is_known(BTC)
    answer, in_front = p.same()
    assert in_front and answer == kept
