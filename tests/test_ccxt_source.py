"""CcxtSource and ExchangePool: real ccxt against the Binance-format emulator on 127.0.0.1, fixed clock."""
from __future__ import annotations

import math
import threading
import time

import pytest

from tradecanvas_ext.domain import Hole, SeriesId
from tradecanvas_ext.sources.base import PageLimit
from tradecanvas_ext.sources.ccxt_source import MAX_TRIES, CcxtSource, ExchangePool
from tradecanvas_ext.testing.emulator import ExchangeEmulator

NOW = 1_700_006_430.0  # mid-minute: the 1m candle at 1_700_006_400 is forming
LAST_CLOSED = 1_700_006_340  # expected_latest_closed_time(NOW, 60)
OLD_END = LAST_CLOSED - 3600  # an hour before now: well past the void threshold
BTC_1M = SeriesId.parse("binance:spot:BTC/USDT:1m")


def clock() -> float:
    return NOW


def hole(start: int, end: int, tf: int = 60) -> Hole:
    return Hole(start, end, (end - start) // tf + 1)


@pytest.fixture(scope="module")
def emu():
    e = ExchangeEmulator(seed=1, symbols=("BTC/USDT", "ETH/USDT"), clock=clock, port=0).start()
    yield e
    e.stop()


@pytest.fixture
def emulator(emu):
    emu.faults.clear()
    emu.reset_counts()
    yield emu
    emu.faults.clear()


def make_pool(emu, timeout_ms: int = 2000, extra: dict | None = None) -> ExchangePool:
    return ExchangePool({**emu.ccxt_config(), **(extra or {})}, timeout_ms=timeout_ms)


@pytest.fixture
def pool(emulator):
    p = make_pool(emulator)
    yield p
    p.close()


@pytest.fixture
def source(pool):
    return CcxtSource(pool, clock)


def oracle(emu, series: SeriesId, start: int, end: int) -> list[tuple]:
    return emu.candles(series.symbol, series.timeframe, start, end)


def klines_params(emu) -> list[dict]:
    return [p for path, p in emu.requests if path.endswith("/klines")]


# ---------------------------------------------------------------------------------------------- basics


@pytest.mark.parametrize("sid", ["binance:spot:BTC/USDT:1m", "binance:spot:ETH/USDT:5m",
                                 "binance:spot:BTC/USDT:1h"])
def test_fetches_exactly_the_exchange_candles_of_a_hole(emulator, source, sid):
    series = SeriesId.parse(sid)
    tf = series.tf_seconds
    end = (int(NOW) // tf - 5) * tf
    start = end - 40 * tf
    res = source.fetch(series, [hole(start, end, tf)], NOW)
    assert res.errors == [] and res.voids == []
    assert res.candles.rows() == oracle(emulator, series, start, end)
    assert len(res.candles) == 41
    assert res.requests == 1 == emulator.request_count("klines")


def test_forming_candle_is_never_asked_for_nor_returned(emulator, source):
    res = source.fetch(BTC_1M, [hole(LAST_CLOSED - 10 * 60, LAST_CLOSED + 600)], NOW)
    assert res.errors == []
    assert res.candles.rows() == oracle(emulator, BTC_1M, LAST_CLOSED - 600, LAST_CLOSED)
    assert int(res.candles.times[-1]) == LAST_CLOSED
    assert emulator.forming("BTC/USDT", "1m")[0] not in res.candles.times.tolist()
    (params,) = klines_params(emulator)
    assert int(params["endTime"]) < (LAST_CLOSED + 60) * 1000  # inside the last closed candle
    assert res.voids == []


def test_a_hole_entirely_in_the_future_costs_nothing(emulator, source):
    res = source.fetch(BTC_1M, [hole(LAST_CLOSED + 60, LAST_CLOSED + 600)], NOW)
    assert (len(res.candles), res.requests, res.errors) == (0, 0, [])
    assert emulator.request_count() == 0  # not even the markets


def test_result_and_requests_are_limited_to_the_hole(emulator, source):
    start, end = OLD_END - 99 * 60, OLD_END
    res = source.fetch(BTC_1M, [hole(start, end)], NOW)
    times = res.candles.times.tolist()
    assert times == list(range(start, end + 1, 60))
    for p in klines_params(emulator):  # the hole and its two neighbour candles (issue 13: void evidence)
        assert int(p["startTime"]) >= (start - 60) * 1000
        assert int(p["endTime"]) < (end + 2 * 60) * 1000
        assert int(p["limit"]) <= 102


# ---------------------------------------------------------------------------------------------- economy


@pytest.mark.parametrize("n", [1, 999, 1000, 1001, 2500])
def test_request_economy_ceil_n_over_1000(emulator, source, n):
    start = OLD_END - (n - 1) * 60
    res = source.fetch(BTC_1M, [hole(start, OLD_END)], NOW)
    assert res.errors == []
    assert len(res.candles) == n
    assert emulator.request_count("klines") == res.requests == math.ceil(n / 1000)
    assert res.candles.rows() == oracle(emulator, BTC_1M, start, OLD_END)


def test_several_holes_cost_one_request_per_1000_plus_one_per_hole(emulator, source):
    sizes = [3, 1000, 1500, 1, 700]
    holes, end = [], OLD_END
    for n in sizes:  # separate holes, newest first, 5 stored candles between them
        holes.append(hole(end - (n - 1) * 60, end))
        end -= (n + 5) * 60
    res = source.fetch(BTC_1M, holes, NOW)
    assert res.errors == [] and res.voids == []
    assert len(res.candles) == sum(sizes)
    assert emulator.request_count("klines") == sum(math.ceil(n / 1000) for n in sizes)
    assert emulator.request_count("klines") <= sum(sizes) // 1000 + len(sizes)
    expected = sorted(t for h in holes for t in range(h.start, h.end + 1, 60))
    assert res.candles.times.tolist() == expected


# ---------------------------------------------------------------------------------------------- voids


def test_outage_inside_a_hole_is_reported_as_an_exact_void(emulator, source):
    start, end = OLD_END - 2499 * 60, OLD_END
    out_start, out_end = start + 990 * 60, start + 1020 * 60  # spans the first page boundary
    emulator.faults.outage(out_start, out_end)
    res = source.fetch(BTC_1M, [hole(start, end)], NOW)
    assert res.errors == []
    assert res.voids == [(out_start, out_end - 60)]
    assert res.candles.rows() == oracle(emulator, BTC_1M, start, end)
    assert len(res.candles) == 2500 - 30
    assert res.requests == 3


def test_outage_at_the_edges_of_a_range_seen_from_one_side_only_is_no_void(emulator, source):
    # issue 13 (contract section 5): an outage is a void only when one answer holds candles on both sides
    # of it; here no answer does (the outages reach past the hole), so the edges stay open holes
    start, end = OLD_END - 99 * 60, OLD_END
    emulator.faults.outage(start - 600, start + 5 * 60)
    emulator.faults.outage(end - 9 * 60, end + 600)
    res = source.fetch(BTC_1M, [hole(start, end)], NOW)
    assert res.errors == [] and res.voids == [] and res.unavailable == []
    assert res.candles.rows() == oracle(emulator, BTC_1M, start, end)
    assert len(res.candles) == 100 - 5 - 10


def test_an_outage_at_the_start_of_a_hole_with_a_candle_before_it_is_a_void(emulator, source):
    start, end = OLD_END - 99 * 60, OLD_END
    emulator.faults.outage(start, start + 5 * 60)  # the candle at start - 60 exists (the hole's neighbour)
    res = source.fetch(BTC_1M, [hole(start, end)], NOW)
    assert res.errors == [] and res.voids == [(start, start + 4 * 60)]
    assert res.candles.rows() == oracle(emulator, BTC_1M, start, end)
    assert res.requests == 1  # the page asked the neighbour candles too: one answer sees both sides


def test_a_fully_empty_past_range_between_two_candles_is_one_void(emulator, source):
    start, end = OLD_END - 49 * 60, OLD_END
    emulator.faults.outage(start, end + 60)
    res = source.fetch(BTC_1M, [hole(start, end)], NOW)
    assert (len(res.candles), res.voids, res.errors) == (0, [(start, end)], [])


def test_a_fully_empty_past_range_with_no_candle_around_is_no_void_and_no_error(emulator, source):
    # issue 13: an empty page is an answer (no error), never evidence
    start, end = OLD_END - 49 * 60, OLD_END
    emulator.faults.outage(start - 600, end + 600)
    res = source.fetch(BTC_1M, [hole(start, end)], NOW)
    assert (len(res.candles), res.voids, res.errors, res.requests) == (0, [], [], 1)


def test_recent_missing_candles_are_not_voids(emulator, source):
    # the last two closed candles close at NOW-90 and NOW-30: younger than 120 s, maybe not published yet
    emulator.faults.outage(LAST_CLOSED - 60, NOW + 3600)
    res = source.fetch(BTC_1M, [hole(LAST_CLOSED - 20 * 60, LAST_CLOSED)], NOW)
    assert res.errors == [] and res.voids == []
    assert int(res.candles.times[-1]) == LAST_CLOSED - 120


def test_a_void_stops_at_the_age_threshold(emulator, source):
    # candles 6160 (closes NOW-210), 6220 (NOW-150), 6280 (NOW-90) skipped; 6340 is served after them
    emulator.faults.outage(1_700_006_160, 1_700_006_340)
    res = source.fetch(BTC_1M, [hole(LAST_CLOSED - 20 * 60, LAST_CLOSED)], NOW)
    assert res.errors == []
    assert res.voids == [(1_700_006_160, 1_700_006_220)]
    assert LAST_CLOSED in res.candles.times.tolist()


# ---------------------------------------------------------------------------------------------- faults

PAST = (OLD_END - 299 * 60, OLD_END)


def assert_exact(emu, res):
    assert res.errors == []
    assert res.candles.rows() == oracle(emu, BTC_1M, *PAST)
    times = res.candles.times.tolist()
    assert times == sorted(set(times))


def test_429_retry_after_is_honoured(emulator, source):
    emulator.faults.http_error(429, n=1, retry_after=1)
    t0 = time.monotonic()
    res = source.fetch(BTC_1M, [hole(*PAST)], NOW)
    elapsed = time.monotonic() - t0
    assert_exact(emulator, res)
    assert 1.0 <= elapsed < 10  # waited the Retry-After, not the 30 s cap (generous: no speed assumed)
    assert res.requests == 2 and source.retries == 1


@pytest.mark.parametrize("status", [503, 500, 502, 504, 418])
def test_transient_http_errors_recover_within_the_fetch(emulator, source, status):
    emulator.faults.http_error(status, n=2)
    res = source.fetch(BTC_1M, [hole(*PAST)], NOW)
    assert_exact(emulator, res)
    assert res.requests == 3 and source.retries == 2


def test_slow_answer_past_the_timeout_is_retried(emulator):
    pool = make_pool(emulator, timeout_ms=500)
    source = CcxtSource(pool, clock)
    emulator.faults.slow(1.0, n=1)
    try:
        res = source.fetch(BTC_1M, [hole(*PAST)], NOW)
    finally:
        pool.close()
    assert_exact(emulator, res)
    assert source.retries == 1


@pytest.mark.parametrize("fault", ["malformed", "duplicate_rows", "out_of_order"])
def test_garbled_answers_never_leak_into_the_result(emulator, source, fault):
    getattr(emulator.faults, fault)(n=1)
    res = source.fetch(BTC_1M, [hole(*PAST)], NOW)
    assert_exact(emulator, res)
    assert res.voids == []  # an unparsable page is not "no data"


def test_transient_errors_that_last_are_recorded_and_other_holes_still_run(emulator, source):
    emulator.faults.http_error(503, n=MAX_TRIES)
    other = (PAST[0] - 200 * 60, PAST[0] - 101 * 60)
    res = source.fetch(BTC_1M, [hole(*other), hole(*PAST)], NOW)
    assert len(res.errors) == 1
    assert str(BTC_1M) in res.errors[0] and f"{other[0]}..{other[1]}" in res.errors[0]
    assert "gave up" in res.errors[0]
    assert res.candles.rows() == oracle(emulator, BTC_1M, *PAST)
    assert res.voids == []


def test_non_transient_errors_are_recorded_not_retried(emulator, source):
    emulator.faults.http_error(400, n=1, body={"code": -1121, "msg": "Invalid symbol."})
    other = (PAST[0] - 200 * 60, PAST[0] - 101 * 60)
    res = source.fetch(BTC_1M, [hole(*other), hole(*PAST)], NOW)
    assert len(res.errors) == 1 and "BadSymbol" in res.errors[0] and f"{other[0]}..{other[1]}" in res.errors[0]
    assert res.requests == 2 and source.retries == 0
    assert res.candles.rows() == oracle(emulator, BTC_1M, *PAST)


def test_unknown_symbol_is_an_error_not_an_exception(emulator, source):
    res = source.fetch(SeriesId.parse("binance:spot:DOGE/USDT:1m"), [hole(*PAST)], NOW)
    assert len(res.candles) == 0 and res.requests == 0
    assert len(res.errors) == 1 and "BadSymbol" in res.errors[0] and "DOGE/USDT" in res.errors[0]


@pytest.mark.parametrize("fault", ["http_error", "malformed"])
def test_markets_load_failure_is_retried(emulator, source, fault):
    if fault == "http_error":
        emulator.faults.http_error(503, n=1, path="exchangeInfo")
    else:
        emulator.faults.malformed(n=1, path="exchangeInfo")
    res = source.fetch(BTC_1M, [hole(*PAST)], NOW)
    assert_exact(emulator, res)
    assert emulator.request_count("exchangeInfo") == 2


def test_failed_markets_load_is_not_cached(emulator, source):
    emulator.faults.http_error(503, n=MAX_TRIES, path="exchangeInfo")
    first = source.fetch(BTC_1M, [hole(*PAST)], NOW)
    assert len(first.errors) == 1 and first.requests == 0
    second = source.fetch(BTC_1M, [hole(*PAST)], NOW)
    assert_exact(emulator, second)
    assert emulator.request_count("exchangeInfo") == MAX_TRIES + 1


def test_deadline_bounds_a_fetch_against_a_slow_exchange(emulator):
    pool = make_pool(emulator, timeout_ms=500)
    source = CcxtSource(pool, clock)
    emulator.faults.slow(1.0, n=None)
    t0 = time.monotonic()
    try:
        res = source.fetch(BTC_1M, [hole(*PAST), hole(PAST[0] - 400 * 60, PAST[0] - 350 * 60)], NOW,
                           deadline=t0 + 1.2)
    finally:
        elapsed = time.monotonic() - t0
        pool.close()
    assert elapsed < 4.0  # without the deadline: two holes x four tries x a 0.5 s timeout, over 6 s
    assert any("time bound reached" in e for e in res.errors)
    assert len(res.candles) == 0 and res.voids == []


def test_retry_after_beyond_the_deadline_is_not_waited_for(emulator, source):
    emulator.faults.http_error(429, n=1, retry_after=10)
    t0 = time.monotonic()
    res = source.fetch(BTC_1M, [hole(*PAST)], NOW, deadline=t0 + 2)
    assert time.monotonic() - t0 < 5.0  # the 10 s Retry-After was not waited for
    assert any("time bound reached" in e for e in res.errors)


def test_an_expired_deadline_starts_no_request(emulator, source):
    res = source.fetch(BTC_1M, [hole(*PAST)], NOW, deadline=time.monotonic() - 1)
    assert emulator.request_count() == 0 and res.requests == 0
    assert any("time bound reached" in e for e in res.errors)


# ---------------------------------------------------------------------------------------------- pool


def test_pool_reuses_one_exchange_and_loads_markets_once(emulator, pool, source):
    a = pool.get("binance", "spot")
    for i in range(3):
        res = source.fetch(BTC_1M, [hole(PAST[0] - i * 60, PAST[0] - i * 60)], NOW)
        assert res.errors == []
    assert pool.get("binance", "spot") is a
    assert emulator.request_count("exchangeInfo") == 1
    assert pool.get("binance", "futures") is not a


def test_pool_deep_merges_the_user_config_with_ours(emulator):
    user = emulator.ccxt_config()
    user["options"]["userFlag"] = 7
    user["timeout"] = 1
    user["headers"] = {"X-Test": "yes"}
    pool = ExchangePool(user, timeout_ms=1234)
    try:
        spot = pool.get("binance", "spot").exchange
        fut = pool.get("binance", "futures").exchange
    finally:
        pool.close()
    for ex in (spot, fut):
        assert ex.options["fetchMarkets"]["types"] == ["spot"]  # user's nested option kept
        assert ex.options["userFlag"] == 7
        assert ex.headers["X-Test"] == "yes"
        assert ex.timeout == 1234 and ex.enableRateLimit is True  # ours
        assert ex.urls["api"]["public"] == emulator.url + "/api/v3"
    assert fut.options["defaultType"] == "swap"
    assert spot.options["defaultType"] == "spot"
    assert user["timeout"] == 1 and "defaultType" not in user["options"]  # the caller's dict untouched


def test_closed_pool_is_an_error_not_an_exception(emulator, pool, source):
    pool.close()
    pool.close()
    res = source.fetch(BTC_1M, [hole(*PAST)], NOW)
    assert len(res.errors) == 1 and "closed" in res.errors[0]


# ---------------------------------------------------------------------------------------------- threads


def test_concurrent_fetches_on_one_exchange_are_all_correct(emulator, source):
    jobs = []
    for i in range(8):
        series = BTC_1M if i % 2 == 0 else SeriesId.parse("binance:spot:ETH/USDT:1m")
        end = OLD_END - i * 1500 * 60
        jobs.append((series, end - (1199 - i * 7) * 60, end))
    results: dict[int, object] = {}
    failures: list[BaseException] = []
    start = threading.Barrier(len(jobs))

    def run(i, series, s, e):
        try:
            start.wait()
            results[i] = source.fetch(series, [hole(s, e)], NOW)
        except BaseException as exc:  # the test reports any escape
            failures.append(exc)

    threads = [threading.Thread(target=run, args=(i, *job)) for i, job in enumerate(jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert failures == []
    for i, (series, s, e) in enumerate(jobs):
        res = results[i]
        assert res.errors == [] and res.voids == []
        assert res.candles.rows() == oracle(emulator, series, s, e)
        assert res.requests == 2
    assert emulator.request_count("exchangeInfo") == 1
    assert emulator.request_count("klines") == 16


# ---------------------------------------------------------------------------------------------- page limit


def test_page_limit_is_the_page_the_walk_asks(emulator, source):
    """The page a caller groups holes by is the walk's: a hole of exactly that many candles is one request,
    one more candle is two; the markets it loaded are the fetch's (no second load)."""
    page = source.page_limit(BTC_1M, OLD_END - 5000 * 60, NOW)
    assert page == PageLimit(1000)  # ccxt's features for binance spot
    for n, requests in ((page.candles, 1), (page.candles + 1, 2)):
        emulator.reset_counts()
        res = source.fetch(BTC_1M, [hole(OLD_END - (n - 1) * 60, OLD_END)], NOW)
        assert res.errors == [] and len(res.candles) == n
        assert emulator.request_count("klines") == res.requests == requests
        assert emulator.request_count("exchangeInfo") == 0


def test_page_limit_of_okx_follows_the_endpoint_it_picks_by_age():
    """OKX serves 300 a page from /market/candles, 100 from /market/history-candles (older than 1439
    candles): the page limit says which, from the same rule the walk uses."""
    with ExchangeEmulator(seed=3, clock=clock, dialect="okx") as emu:
        pool = ExchangePool(emu.ccxt_config(), timeout_ms=2000)
        try:
            src = CcxtSource(pool, clock)
            sid = SeriesId.parse("okx:spot:BTC/USDT:1m")
            assert src.page_limit(sid, LAST_CLOSED - 100 * 60, NOW) == PageLimit(300)
            assert src.page_limit(sid, LAST_CLOSED - 2000 * 60, NOW) == PageLimit(100)
        finally:
            pool.close()


def test_page_limit_when_markets_cannot_load_is_an_error_not_an_exception(emulator, pool):
    emulator.faults.http_error(503, n=MAX_TRIES, path="exchangeInfo")
    src = CcxtSource(pool, clock, sleep=lambda s: None)
    got = src.page_limit(BTC_1M, OLD_END, NOW)
    assert got.candles is None and "loading markets" in got.error and "binance:spot:BTC/USDT:1m" in got.error
    assert emulator.request_count("exchangeInfo") == MAX_TRIES and src.retries == MAX_TRIES - 1
    assert src.page_limit(BTC_1M, OLD_END, NOW) == PageLimit(1000)  # the failure was not cached
