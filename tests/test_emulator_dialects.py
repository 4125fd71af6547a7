"""The emulator's exchange dialects, each exercised through the REAL ccxt class of that exchange over
127.0.0.1 (reached by `ccxt_config` URL overrides only): markets, candles equal to the one truth model,
empty answers, history reach and refusal, omission of buckets without trades, page caps, rate limits."""
from __future__ import annotations

import json
import math
import urllib.error
import urllib.request

import ccxt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tradecanvas_ext.testing import DIALECTS, SPECS, ExchangeEmulator, ManualClock, ccxt_config_for

NOW = 1_700_006_400 + 30  # 2023-11-15 00:00:30 UTC: aligned for every timeframe; the 1m candle is forming
SYMBOL = {"binance": "BTC/USDT", "binanceusdm": "BTC/USDT:USDT", "bybit": "BTC/USDT", "okx": "BTC/USDT",
          "kraken": "BTC/USD", "gate": "BTC/USDT", "hyperliquid": "BTC/USDC:USDC", "coinbase": "BTC/USD"}
ALL = sorted(DIALECTS)


@pytest.fixture
def clock():
    return ManualClock(NOW)


@pytest.fixture(params=ALL)
def emu(request, clock):
    e = ExchangeEmulator(seed=3, clock=clock, dialect=request.param)
    e.start()
    yield e
    e.stop()


def exchange_for(emu: ExchangeEmulator):
    cls = getattr(ccxt, emu.dialect.spec.ccxt_id)
    return cls({**emu.ccxt_config(), "enableRateLimit": False, "timeout": 5000})


@pytest.fixture
def ex(emu):
    return exchange_for(emu)


def as_truth(rows):
    """ccxt rows [ms, o, h, l, c, v] -> the truth's tuples (t_seconds, o, h, l, c, v)."""
    return [(r[0] // 1000, r[1], r[2], r[3], r[4], r[5]) for r in rows]


def raw(emu, path, method="GET", body=None, **params):
    """A request without ccxt: (status, headers, parsed JSON or text)."""
    query = "&".join(f"{k}={v}" for k, v in params.items())
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"{emu.url}{path}" + (f"?{query}" if query else ""), data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            status, headers, text = resp.status, dict(resp.headers), resp.read().decode()
    except urllib.error.HTTPError as err:
        status, headers, text = err.code, dict(err.headers), err.read().decode()
    try:
        return status, headers, json.loads(text)
    except ValueError:
        return status, headers, text


# ------------------------------------------------------------------------------------------ markets


def test_every_dialect_is_registered_with_its_rules():
    assert set(SPECS) == set(DIALECTS) >= {"binance", "binanceusdm", "bybit", "okx", "kraken", "gate",
                                           "hyperliquid", "coinbase"}
    caps = {name: {ep.kind: ep.page_cap for ep in spec.endpoints} for name, spec in SPECS.items()}
    assert caps["binance"] == {"klines": 1000} and caps["binanceusdm"] == {"klines": 1500, "markPriceKlines": 1500}
    assert caps["okx"] == {"market/candles": 300, "market/history-candles": 100}
    assert caps["coinbase"] == {"market/products/candles": 350} and caps["kraken"] == {"OHLC": 720}
    reach = {name: spec.endpoints[0].reach for name, spec in SPECS.items()}
    assert (reach["kraken"], reach["hyperliquid"], reach["gate"], reach["bybit"]) == (720, 5000, 10000, None)
    assert SPECS["gate"].endpoints[0].refuses_older and not SPECS["kraken"].endpoints[0].refuses_older
    assert [n for n, s in SPECS.items() if s.omits_quiet] == ["coinbase"]


def test_load_markets_through_url_overrides_only(emu, ex):
    cfg = ccxt_config_for(emu.dialect.spec.name, emu.url)
    assert cfg == emu.ccxt_config() and set(cfg) <= {"urls", "options"}

    def urls(node):
        if isinstance(node, dict):
            for v in node.values():
                yield from urls(v)
        else:
            yield node

    assert all(u.startswith(emu.url) for u in urls(cfg["urls"]))
    markets = ex.load_markets()
    assert set(markets) == set(emu.listed_symbols) and SYMBOL[emu.dialect.spec.name] in markets
    m = markets[SYMBOL[emu.dialect.spec.name]]
    assert m["active"] and m[emu.dialect.spec.market_type] is True
    assert emu.request_count() >= 1 and emu.request_count("klines") == 0


def test_fetch_time(emu, ex):
    if not ex.has.get("fetchTime"):
        pytest.skip(f"ccxt {ex.id} has no fetchTime")
    assert ex.fetch_time() // 1000 == NOW


def test_fetch_ticker_is_the_forming_candle(emu, ex):
    """freqtrade prices dry-run orders from fetch_ticker (use_order_book false): last is the truth's
    latest price, bid and ask around it."""
    sym = SYMBOL[emu.dialect.spec.name]
    t = ex.fetch_ticker(sym)
    assert t["last"] == emu.forming(sym, "1m")[4]
    assert t["bid"] <= t["last"] <= t["ask"]



def test_bybit_order_book_is_the_ticker_s_book(clock):
    """freqtrade's dry-run reads the l2 order book before it fills an order (`_dry_is_price_crossed`):
    Bybit's best bid and ask are the ticker's; depth default 1, capped at 200 (Bybit's docs)."""
    with ExchangeEmulator(seed=3, clock=clock, dialect="bybit") as emu:
        ex = exchange_for(emu)
        book, ticker = ex.fetch_l2_order_book("BTC/USDT", 1), ex.fetch_ticker("BTC/USDT")
        assert (book["bids"][0][0], book["asks"][0][0]) == (ticker["bid"], ticker["ask"])
        assert book["timestamp"] == NOW * 1000 and len(book["bids"]) == len(book["asks"]) == 1
        assert len(ex.fetch_order_book("BTC/USDT")["asks"]) == 50  # ccxt's spot default
        _, _, body = raw(emu, "/v5/market/orderbook", category="spot", symbol="BTCUSDT")
        assert len(body["result"]["b"]) == 1
        _, _, body = raw(emu, "/v5/market/orderbook", category="spot", symbol="BTCUSDT", limit=500)
        assert len(body["result"]["a"]) == 200
        _, _, body = raw(emu, "/v5/market/orderbook", category="linear", symbol="BTCUSDT")
        assert body["retCode"] == 10001


# ------------------------------------------------------------------------------------------ candles


@pytest.mark.parametrize("timeframe", ["1m", "5m", "1h"])
def test_fetch_ohlcv_is_exactly_the_truth(emu, ex, timeframe):
    """A servable range with an outage and a quiet stretch in it: every field of every candle equals the
    truth's; the quiet buckets come with volume 0, or not at all where the exchange omits them."""
    name, sym = emu.dialect.spec.name, SYMBOL[emu.dialect.spec.name]
    tf = ccxt.Exchange.parse_timeframe(timeframe)
    since = math.floor(NOW / tf) * tf - 200 * tf
    emu.faults.outage(since + 10 * tf, since + 13 * tf)
    emu.faults.quiet(since + 30 * tf, since + 35 * tf, symbol=emu.symbols[0])
    got = as_truth(ex.fetch_ohlcv(sym, timeframe, since=since * 1000, limit=100))
    assert got and got[0][0] == since and got[-1][0] >= since + 90 * tf
    assert got == emu.served(sym, timeframe, since, got[-1][0])
    truth = emu.candles(sym, timeframe, since, got[-1][0])
    quiet = [c for c in truth if c[5] == 0]
    assert [c[0] for c in quiet] == [since + i * tf for i in range(30, 35)]
    assert all(c[1] == c[2] == c[3] == c[4] for c in quiet)  # flat: no trade
    if name == "coinbase":
        assert got == [c for c in truth if c[5] > 0]
    else:
        assert got == truth
    assert since + 11 * tf not in {c[0] for c in got}


def test_empty_answers_parse_as_empty(emu, ex, clock):
    """Before the listing there are no candles: the exchange's empty answer (a JSON object on most) is an
    answer, parsed by ccxt as []."""
    name, sym = emu.dialect.spec.name, SYMBOL[emu.dialect.spec.name]
    emu.faults.listing(emu.symbols[0], NOW - 7200)
    since = NOW - 30 - 4 * 3600
    if name != "kraken":  # Kraken answers its latest 720 whatever `since` says: those after the listing
        assert ex.fetch_ohlcv(sym, "1m", since=since * 1000, limit=60,
                              params={"until": (since + 3600) * 1000}) == []
        got = as_truth(ex.fetch_ohlcv(sym, "1m", since=(NOW - 7200 - 600) * 1000, limit=60))
        assert got[0][0] == NOW - 30 - 7200 + 60 and got == emu.served(sym, "1m", NOW - 7200, got[-1][0])
    emu.faults.listing(emu.symbols[0], NOW + 3600)  # listed, not trading yet: nothing anywhere
    assert ex.fetch_ohlcv(sym, "1m", since=(NOW - 600) * 1000, limit=5) == []


def test_bybit_empty_answer_shape():
    with ExchangeEmulator(clock=lambda: NOW, dialect="bybit", listings={"BTC/USDT": NOW}) as emu:
        status, _, body = raw(emu, "/v5/market/kline", category="spot", symbol="BTCUSDT", interval="1",
                              start=(NOW - 3600) * 1000, end=(NOW - 1800) * 1000)
        assert status == 200 and body["retCode"] == 0 and body["result"]["list"] == []


def test_row_order_and_time_units_per_dialect(emu, ex):
    """Raw answers come in the exchange's order and units (ccxt sorts them; a range walk must not care)."""
    spec = emu.dialect.spec
    ex.load_markets()
    ex.fetch_ohlcv(SYMBOL[spec.name], "1m", since=(NOW - 30 - 600) * 1000, limit=5)
    path, params = emu.requests[-1]
    status, _, body = raw(emu, path, method="POST" if "body" in params else "GET", body=params.get("body"),
                          **{k: v for k, v in params.items() if k != "body"})
    assert status == 200
    rows = {"bybit": lambda b: b["result"]["list"], "okx": lambda b: b["data"],
            "kraken": lambda b: next(v for k, v in b["result"].items() if k != "last"),
            "coinbase": lambda b: b["candles"], "hyperliquid": lambda b: b}.get(spec.name, lambda b: b)(body)
    times = [int(r["t"] if isinstance(r, dict) and "t" in r else r["start"] if isinstance(r, dict) else r[0])
             for r in rows]
    assert len(times) >= 5 and times == sorted(times, reverse=spec.newest_first)
    unit = 1000 if spec.time_unit == "ms" else 1
    assert times[-1 if spec.newest_first else 0] == (NOW - 30 - 600) * unit


# ------------------------------------------------------------------------------------------ reach


def _reach_emu(dialect, clock):
    return ExchangeEmulator(seed=3, clock=clock, dialect=dialect)


def test_kraken_serves_only_its_latest_720_whatever_since_says(clock):
    with _reach_emu("kraken", clock) as emu:
        ex = exchange_for(emu)
        got = as_truth(ex.fetch_ohlcv("BTC/USD", "1m", since=(NOW - 30 - 2000 * 60) * 1000))
        start = NOW - 30 - 719 * 60
        assert emu.reach_start("1m") == start and emu.reach_start("1h") == NOW - 30 - 719 * 3600
        assert len(got) == 720 and got[0][0] == start
        assert got[:-1] == emu.candles("BTC/USD", "1m", start, NOW) and got[-1] == emu.forming("BTC/USD", "1m")
        # `since` is exclusive, and the answer carries `last` (the latest committed candle)
        status, _, body = raw(emu, "/0/public/OHLC", pair="XXBTZUSD", interval=1, since=NOW - 30 - 120)
        rows = body["result"]["XXBTZUSD"]
        assert [r[0] for r in rows] == [NOW - 30 - 60, NOW - 30] and body["result"]["last"] == NOW - 30 - 60


def test_hyperliquid_serves_only_its_latest_5000(clock):
    with _reach_emu("hyperliquid", clock) as emu:
        ex = exchange_for(emu)
        got = as_truth(ex.fetch_ohlcv("BTC/USDC:USDC", "1m", since=(NOW - 30 - 8000 * 60) * 1000))
        start = NOW - 30 - 4999 * 60
        assert len(got) == 5000 and got[0][0] == start
        assert got[:-1] == emu.candles("BTC/USDC:USDC", "1m", start, NOW)


def test_gate_refuses_ranges_older_than_its_latest_10000_points(clock):
    with _reach_emu("gate", clock) as emu:
        ex = exchange_for(emu)
        oldest = NOW - 30 - 9999 * 60
        assert emu.reach_start("1m") == oldest
        got = as_truth(ex.fetch_ohlcv("BTC/USDT", "1m", since=oldest * 1000, limit=1000))
        assert len(got) == 1000 and got == emu.candles("BTC/USDT", "1m", oldest, oldest + 999 * 60)
        with pytest.raises(ccxt.BadRequest, match="Candlestick too long ago"):
            ex.fetch_ohlcv("BTC/USDT", "1m", since=(oldest - 60) * 1000, limit=1000)
        status, _, body = raw(emu, "/api/v4/spot/candlesticks", currency_pair="BTC_USDT", interval="1m",
                              **{"from": oldest - 60, "to": oldest + 600})
        assert status == 400 and body == {"label": "INVALID_PARAM_VALUE",
                                          "message": "Candlestick too long ago. Maximum 10000 points ago are allowed"}


def test_okx_history_candles_at_100_a_page_and_candles_reach(clock):
    with _reach_emu("okx", clock) as emu:
        ex = exchange_for(emu)
        since = NOW - 30 - 3000 * 60
        assert emu.reach_start("1m") == NOW - 30 - 1439 * 60 and emu.reach_start("1m", "market/history-candles") is None
        got = as_truth(ex.fetch_ohlcv("BTC/USDT", "1m", since=since * 1000, limit=300))
        path, params = emu.requests[-1]
        assert path == "/api/v5/market/history-candles" and params["limit"] == "300"
        # OKX pages from `after` backwards: the newest 100 of the 300 asked for
        assert got == emu.candles("BTC/USDT", "1m", since + 200 * 60, since + 299 * 60)
        assert emu.request_count("market/history-candles") == 1 and emu.request_count("klines") == 1
        # the candles endpoint: 300 a page, only the latest 1440 buckets
        recent = NOW - 30 - 1000 * 60
        got = as_truth(ex.fetch_ohlcv("BTC/USDT", "1m", since=recent * 1000, limit=300,
                                      params={"type": "Candles"}))
        assert emu.requests[-1][0] == "/api/v5/market/candles"
        assert got == emu.candles("BTC/USDT", "1m", recent, recent + 299 * 60)
        assert ex.fetch_ohlcv("BTC/USDT", "1m", since=since * 1000, limit=100, params={"type": "Candles"}) == []
        # after/before are exclusive
        status, _, body = raw(emu, "/api/v5/market/history-candles", instId="BTC-USDT", bar="1m",
                              after=(since + 180) * 1000, before=since * 1000)
        assert [int(r[0]) // 1000 for r in body["data"]] == [since + 120, since + 60]


def test_coinbase_omits_quiet_buckets_and_caps_at_350(clock):
    with _reach_emu("coinbase", clock) as emu:
        ex = exchange_for(emu)
        t0 = NOW - 30 - 600
        emu.faults.quiet(t0, NOW + 3600, symbol="BTC/USD")  # no trade in the last 10 minutes
        got = as_truth(ex.fetch_ohlcv("BTC/USD", "1m", since=(t0 - 3600) * 1000, limit=300))
        assert got == emu.candles("BTC/USD", "1m", t0 - 3600, t0 - 60) and got[-1][0] == t0 - 60
        assert [c[5] for c in emu.candles("BTC/USD", "1m", t0, NOW)] == [0.0] * 10  # the truth has them
        status, _, body = raw(emu, "/api/v3/brokerage/market/products/BTC-USD/candles", granularity="ONE_MINUTE",
                              start=t0 - 351 * 60, end=t0)
        assert status == 400 and body["error"] == "INVALID_ARGUMENT"
        with pytest.raises(ccxt.BadRequest):
            ex.fetch_ohlcv("BTC/USD", "1m", since=(t0 - 400 * 60) * 1000, params={"until": t0 * 1000})


@pytest.mark.parametrize(("dialect", "path", "params", "cap"), [
    ("binance", "/api/v3/klines", {"symbol": "BTCUSDT", "interval": "1m"}, 1000),
    ("binanceusdm", "/fapi/v1/klines", {"symbol": "BTCUSDT", "interval": "1m"}, 1500),
    ("bybit", "/v5/market/kline", {"category": "spot", "symbol": "BTCUSDT", "interval": "1"}, 1000),
    ("okx", "/api/v5/market/candles", {"instId": "BTC-USDT", "bar": "1m"}, 300),
    ("okx", "/api/v5/market/history-candles", {"instId": "BTC-USDT", "bar": "1m"}, 100),
])
def test_page_caps(clock, dialect, path, params, cap):
    """`limit` up to the cap is served whole; above it Binance refuses, Bybit and OKX cap."""
    with ExchangeEmulator(clock=clock, dialect=dialect) as emu:
        status, _, body = raw(emu, path, limit=cap, **params)
        rows = body if isinstance(body, list) else body.get("data") or body["result"]["list"]
        assert status == 200 and len(rows) == cap
        status, _, body = raw(emu, path, limit=cap + 1, **params)
        if dialect.startswith("binance"):
            assert status == 400 and body["code"] == -1130
        else:
            rows = body.get("data") or body["result"]["list"]
            assert status == 200 and len(rows) == cap


def test_binance_usdm_pages_at_1500_through_ccxt(clock):
    """ccxt's unified fetch_ohlcv caps every binance class at 1000 (binance.py fetch_ohlcv, `maxLimit`);
    the futures endpoint serves 1500, reached through ccxt's implicit API."""
    with ExchangeEmulator(clock=clock, dialect="binanceusdm") as emu:
        ex = exchange_for(emu)
        since = NOW - 30 - 3000 * 60
        ex.load_markets()
        rows = ex.fapiPublicGetKlines({"symbol": "BTCUSDT", "interval": "1m", "startTime": since * 1000,
                                       "limit": 1500})
        got = as_truth(ex.parse_ohlcvs(rows, ex.market("BTC/USDT:USDT"), "1m"))
        assert got == emu.candles("BTC/USDT:USDT", "1m", since, since + 1499 * 60)
        assert len(ex.fetch_ohlcv("BTC/USDT:USDT", "1m", since=since * 1000, limit=1500)) == 1000


def test_binance_usdm_mark_price_klines_funding_and_premium_index(clock):
    """USD-M's mark-price klines (ccxt `price="mark"` -> /fapi/v1/markPriceKlines) are the truth's trade
    candles lifted by the mark basis, volume 0, on the same times (outages too); premiumIndex and the
    funding-rate history parse through ccxt."""
    with ExchangeEmulator(clock=clock, dialect="binanceusdm") as emu:
        emu.faults.outage(NOW - 30 - 40 * 60, NOW - 30 - 30 * 60)
        ex = exchange_for(emu)
        since = NOW - 30 - 120 * 60
        for tf in ("1m", "5m"):
            mark = as_truth(ex.fetch_ohlcv("BTC/USDT:USDT", tf, since=since * 1000, limit=200,
                                           params={"price": "mark"}))
            trades = emu.candles("BTC/USDT:USDT", tf, since, NOW)
            assert mark[:-1] == emu.candles("BTC/USDT:USDT", tf, since, NOW, price="mark")  # the last is forming
            assert [r[0] for r in mark[:-1]] == [r[0] for r in trades] and all(r[5] == 0 for r in mark)
            lifted = [tuple(round(p * 1e8) * 10_004 // 10_000 / 1e8 for p in t[1:5]) for t in trades]
            assert [m[1:5] for m in mark[:-1]] == lifted  # 4 basis points up, floored to 1e-8
        status, _, body = raw(emu, "/fapi/v1/markPriceKlines", symbol="BTCUSDT", interval="1m", limit=1501)
        assert status == 400 and body["code"] == -1130
        assert emu.request_count("/fapi/v1/markPriceKlines") == 3 and emu.request_count("klines") == 3
        rate = ex.fetch_funding_rate("BTC/USDT:USDT")
        assert rate["fundingRate"] == 0.0001 and rate["fundingTimestamp"] == (NOW // 28800 + 1) * 28800 * 1000
        assert rate["markPrice"] > rate["indexPrice"]
        history = ex.fetch_funding_rate_history("BTC/USDT:USDT", since=(NOW - 3 * 86400) * 1000)
        funding_times = list(range(NOW - 30 - 3 * 86400 + 28800, NOW, 28800))  # every 8 h since `since`
        assert [h["timestamp"] // 1000 for h in history] == funding_times and len(funding_times) == 9
        assert all(h["fundingRate"] == 0.0001 and h["info"]["markPrice"] for h in history)
    with ExchangeEmulator(clock=clock) as spot:  # spot Binance has no mark prices
        assert raw(spot, "/api/v3/markPriceKlines", symbol="BTCUSDT", interval="1m")[0] == 404


# ------------------------------------------------------------------------------------------ errors


def test_rate_limit_answer_maps_to_ccxt_rate_limit_errors(emu, ex):
    """The exchange's own rate-limit answer (status, body, headers) raises ccxt's DDoSProtection or
    RateLimitExceeded (siblings under NetworkError in ccxt 4.5); so does an HTTP 429 with the exchange's
    body; the next request works."""
    sym = SYMBOL[emu.dialect.spec.name]
    since = (NOW - 30 - 600) * 1000
    ex.load_markets()
    emu.faults.rate_limit()
    with pytest.raises((ccxt.DDoSProtection, ccxt.RateLimitExceeded)):
        ex.fetch_ohlcv(sym, "1m", since=since, limit=5)
    if emu.dialect.spec.retry_after:
        assert ex.last_response_headers["Retry-After"] == "1"
    emu.faults.http_error(429)
    with pytest.raises((ccxt.DDoSProtection, ccxt.RateLimitExceeded)):
        ex.fetch_ohlcv(sym, "1m", since=since, limit=5)
    assert len(ex.fetch_ohlcv(sym, "1m", since=since, limit=5)) == 5
    assert emu.request_count("klines") == 3


def test_server_side_rate_limit_speaks_the_dialect(clock):
    for dialect in ("bybit", "kraken", "okx"):
        with ExchangeEmulator(clock=clock, dialect=dialect, max_requests_per_second=1) as emu:
            answers = [raw(emu, "/nothing") for _ in range(3)]
            status, _, body = answers[-1]
            want = {"bybit": (200, 10006), "kraken": (200, "EAPI:Rate limit exceeded"), "okx": (429, "50011")}
            got = (status, body.get("retCode") if dialect == "bybit" else
                   body["error"][0] if dialect == "kraken" else body["code"])
            assert got == want[dialect]


def test_downtime_answers_the_dialects_503(clock):
    with ExchangeEmulator(clock=clock, dialect="okx") as emu:
        ex = exchange_for(emu)
        ex.load_markets()
        emu.faults.downtime(NOW - 1, NOW + 60)
        with pytest.raises(ccxt.OnMaintenance):  # OKX 50001
            ex.fetch_ohlcv("BTC/USDT", "1m", since=(NOW - 630) * 1000, limit=5)


# ------------------------------------------------------------------------------------------ the truth


def test_quiet_stretch_rolls_up_and_links_prices(clock):
    """A quiet stretch: flat 1m candles at the price it began with (the previous close), volume 0; a
    larger bucket aggregates them with the traded minutes; the forming quiet minute stays at volume 0."""
    emu = ExchangeEmulator(seed=3, clock=clock, symbols=["BTC/USDT"])
    t0 = NOW - 30 - 3600
    emu.faults.quiet(t0 + 120, NOW + 600)
    ones = emu.candles("BTC/USDT", "1m", t0, NOW)
    assert [c[5] > 0 for c in ones[:4]] == [True, True, False, False]
    assert ones[2][1] == ones[1][4] and all(c[1:5] == (ones[1][4],) * 4 for c in ones[2:])
    (t, o, h, low, close, v), = emu.candles("BTC/USDT", "5m", t0, t0)
    assert (o, close) == (ones[0][1], ones[1][4]) and v == pytest.approx(ones[0][5] + ones[1][5], rel=1e-12)
    assert (h, low) == (max(ones[0][2], ones[1][2]), min(ones[0][3], ones[1][3]))
    assert emu.forming("BTC/USDT", "1m")[5] == 0.0


def test_command_line_speaks_a_dialect():
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "tradecanvas_ext.testing.emulator", "--port", "0",
                             "--dialect", "bybit"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert "(bybit format" in line, proc.stderr.read() if proc.poll() is not None else line
        url = line.strip().split()[-1]
        with urllib.request.urlopen(url + "/v5/market/time", timeout=5) as resp:
            assert json.loads(resp.read())["retCode"] == 0
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        proc.stdout.close()
        proc.stderr.close()


@pytest.mark.parametrize("dialect", [d for d in ALL if d != "binance"])
def test_freqtrades_exchange_class_loads_on_the_dialect(tmp_path, clock, dialect):
    """freqtrade builds its Exchange for the class (markets validated, whitelist checked) against the
    emulator through `ccxt_config` only, and prices from its ticker (USD-M: from its order book, as
    freqtrade requires for Binance futures)."""
    from freqtrade.enums import RunMode
    from freqtrade.resolvers import ExchangeResolver

    sym = SYMBOL[dialect]
    futures = ":" in sym
    book = dialect == "binanceusdm"
    with ExchangeEmulator(seed=3, clock=clock, dialect=dialect) as emu:
        pricing = {"price_side": "same", "use_order_book": book, "order_book_top": 1}
        cfg = {"exchange": {"name": SPECS[dialect].ccxt_id, "enable_ws": False, "key": "", "secret": "",
                            "ccxt_config": emu.ccxt_config(), "ccxt_async_config": emu.ccxt_config(),
                            "pair_whitelist": [sym]},
               "dry_run": True, "runmode": RunMode.DRY_RUN, "stake_currency": sym.split("/")[1].split(":")[0],
               "timeframe": "1m", "datadir": tmp_path, "dataformat_ohlcv": "feather",
               "entry_pricing": pricing, "exit_pricing": dict(pricing),
               "trading_mode": "futures" if futures else "spot", "margin_mode": "isolated" if futures else "",
               "candle_type_def": "futures" if futures else "spot"}
        ex = ExchangeResolver.load_exchange(cfg, load_leverage_tiers=False)
        try:
            assert sym in ex.markets
            price = ex.fetch_l2_order_book(sym, 5)["bids"][0][0] if book else ex.fetch_ticker(sym)["last"]
            assert price == pytest.approx(emu.forming(sym, "1m")[4], rel=1e-3)
        finally:
            ex.close()


# ------------------------------------------------------------------------------------------ property

@pytest.mark.parametrize("dialect", ALL)
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(listed_ago=st.integers(0, 3000), outages=st.lists(st.tuples(st.integers(0, 3000), st.integers(1, 300)),
                                                          max_size=3),
       quiet=st.lists(st.tuples(st.integers(0, 3000), st.integers(1, 300)), max_size=3),
       back=st.integers(1, 2900), limit=st.integers(1, 100), timeframe=st.sampled_from(["1m", "5m"]))
def test_random_truths_are_served_exactly(clock, dialect, listed_ago, outages, quiet, back, limit, timeframe):
    """Random listing, outages and quiet stretches: what ccxt gets for (since, limit) is exactly the
    exchange's view of the truth from max(since, reach) on, with nothing skipped at its start; an empty
    answer means there was nothing to serve in the range asked for."""
    tf = ccxt.Exchange.parse_timeframe(timeframe)
    now_open = NOW - 30
    with ExchangeEmulator(seed=7, clock=clock, dialect=dialect) as emu:
        sym, spot = SYMBOL[dialect], emu.symbols[0]
        emu.faults.listing(spot, now_open - listed_ago * 60)
        for off, n in outages:
            emu.faults.outage(now_open - off * 60, now_open - off * 60 + n * 60)
        for off, n in quiet:
            emu.faults.quiet(now_open - off * 60, now_open - off * 60 + n * 60, symbol=spot)
        since = now_open // tf * tf - back * tf
        ex = exchange_for(emu)
        got = as_truth(ex.fetch_ohlcv(sym, timeframe, since=since * 1000, limit=limit))
        # the reach of the endpoint ccxt chose (OKX: history-candles when `since` is old on ccxt's own clock)
        kind = emu.dialect.kind("GET", emu.requests[-1][0], None) if dialect == "okx" else None
        lo = max(since, emu.reach_start(timeframe, kind) or 0)
        closed_end = now_open // tf * tf - tf
        assert all(c[0] >= since for c in got) and len(got) <= limit
        if got:
            if got[-1][0] > closed_end:  # the forming candle: compare it with the forming truth
                assert got[-1] == emu.forming(sym, timeframe)
                got = got[:-1]
            assert got == emu.served(sym, timeframe, lo, got[-1][0] if got else lo - 1)
        else:
            assert emu.served(sym, timeframe, lo, since + (limit - 1) * tf) == []
