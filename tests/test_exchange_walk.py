"""Issue 13: the one range walk, through the REAL ccxt class of each exchange, against the emulator's dialect
of it (URL overrides only): every dialect x scenario — a servable hole filled with exactly the truth's
candles, a no-trade range void only where the exchange omits it, older-than-reach ranges unavailable (never
void) with the servable part filled, a pre-listing empty answer no error, Gate's "too long ago" learned,
OKX history-candles at 100 a page, and requests = ceil(missing / page limit)."""
from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tradecanvas_ext.domain import Hole, SeriesId
from tradecanvas_ext.sources import exchange_facts
from tradecanvas_ext.sources.ccxt_source import CcxtSource, ExchangePool
from tradecanvas_ext.testing import DIALECTS, SPECS, ExchangeEmulator, ManualClock

NOW = 1_700_006_400 + 30  # aligned for every timeframe; the 1m candle at NOW - 30 is forming
TF = 60
LATEST = NOW - 30 - TF  # the newest closed 1m candle
SERIES = {"binance": "binance:spot:BTC/USDT:1m", "binanceusdm": "binanceusdm:futures:BTC/USDT:USDT:1m",
          "bybit": "bybit:spot:BTC/USDT:1m", "okx": "okx:spot:BTC/USDT:1m", "kraken": "kraken:spot:BTC/USD:1m",
          "gate": "gate:spot:BTC/USDT:1m", "hyperliquid": "hyperliquid:futures:BTC/USDC:USDC:1m",
          "coinbase": "coinbase:spot:BTC/USD:1m"}
# the page a walk asks at most, per dialect (an old range: OKX's history-candles)
PAGE = {"binance": 1000, "binanceusdm": 1500, "bybit": 1000, "okx": 100, "kraken": 720, "gate": 1000,
        "hyperliquid": 5000, "coinbase": 300}
ALL = sorted(DIALECTS)


def reach_of(dialect: str) -> int | None:
    """The latest N candles the exchange serves at all (None: every endpoint together serves all history)."""
    reaches = [ep.reach for ep in SPECS[dialect].endpoints]
    return None if None in reaches else max(reaches)


def hole(start: int, end: int) -> Hole:
    return Hole(start, end, (end - start) // TF + 1)


@pytest.fixture(params=ALL)
def dialect(request):
    return request.param


@pytest.fixture
def emu(dialect):
    e = ExchangeEmulator(seed=5, clock=ManualClock(NOW), dialect=dialect).start()
    yield e
    e.stop()


@pytest.fixture
def source(emu):
    pool = ExchangePool(emu.ccxt_config(), timeout_ms=5000)
    yield CcxtSource(pool, emu.clock, sleep=lambda s: None)
    pool.close()


def sid_of(dialect: str) -> SeriesId:
    return SeriesId.parse(SERIES[dialect])


def oldest_served(dialect: str) -> int | None:
    reach = reach_of(dialect)
    return None if reach is None else (NOW // TF - (reach - 1)) * TF


def truth(emu, sid: SeriesId, start: int, end: int) -> list[tuple]:
    return emu.candles(sid.symbol, sid.timeframe, start, end)


def test_a_servable_hole_is_filled_with_exactly_the_truths_candles(dialect, emu, source):
    sid = sid_of(dialect)
    start, end = LATEST - 400 * TF, LATEST - 300 * TF
    res = source.fetch(sid, [hole(start, end)], NOW)
    assert res.errors == [] and res.voids == [] and res.unavailable == []
    assert res.candles.rows() == truth(emu, sid, start, end) and len(res.candles) == 101  # every field


def test_a_no_trade_range_is_a_void_only_where_the_exchange_omits_it(dialect, emu, source):
    sid = sid_of(dialect)
    start, end = LATEST - 400 * TF, LATEST - 300 * TF
    q0, q1 = start + 30 * TF, start + 60 * TF
    emu.faults.quiet(q0, q1)
    res = source.fetch(sid, [hole(start, end)], NOW)
    assert res.errors == [] and res.unavailable == []
    assert res.candles.rows() == emu.served(sid.symbol, sid.timeframe, start, end)
    if SPECS[dialect].omits_quiet:
        assert res.voids == [(q0, q1 - TF)]
        assert len(res.candles) == 101 - 30
    else:
        assert res.voids == [] and len(res.candles) == 101  # served with volume 0: candles, no void
        assert {float(v) for t, v in zip(res.candles.times, res.candles.volume, strict=True)
                if q0 <= t < q1} == {0.0}


def test_an_outage_between_candles_is_a_void_and_never_a_false_one(dialect, emu, source):
    sid = sid_of(dialect)
    start, end = LATEST - 400 * TF, LATEST - 300 * TF
    emu.faults.outage(start + 10 * TF, start + 20 * TF)
    res = source.fetch(sid, [hole(start, end)], NOW)
    assert res.errors == [] and res.voids == [(start + 10 * TF, start + 19 * TF)]
    assert res.candles.rows() == truth(emu, sid, start, end)


def test_older_than_the_reach_is_unavailable_never_void_and_the_servable_part_filled(dialect, emu, source):
    sid = sid_of(dialect)
    reach = reach_of(dialect)
    span = (reach or 3000) + 500
    start = LATEST - (span - 1) * TF
    res = source.fetch(sid, [hole(start, LATEST)], NOW)
    assert res.errors == [] and res.voids == []
    oldest = oldest_served(dialect)
    if oldest is None:
        assert res.unavailable == [] and res.candles.rows() == truth(emu, sid, start, LATEST)
    else:
        assert res.unavailable == [(start, oldest - TF)]
        assert res.candles.rows() == truth(emu, sid, oldest, LATEST)


@pytest.mark.parametrize("learned", ["kraken", "gate", "hyperliquid"])
def test_a_reach_nobody_told_us_is_learned_from_the_answers(learned, monkeypatch):
    # Kraken answers its latest 720 whatever `since` says; Gate refuses "too long ago" and names 10000
    monkeypatch.setitem(exchange_facts.KNOWN_REACH, learned, None)
    monkeypatch.delitem(exchange_facts.KNOWN_REACH, learned)
    emu = ExchangeEmulator(seed=5, clock=ManualClock(NOW), dialect=learned).start()
    pool = ExchangePool(emu.ccxt_config(), timeout_ms=5000)
    try:
        sid = sid_of(learned)
        reach = reach_of(learned)
        start = LATEST - (reach + 999) * TF
        res = CcxtSource(pool, emu.clock, sleep=lambda s: None).fetch(sid, [hole(start, LATEST)], NOW)
        oldest = oldest_served(learned)
        assert res.voids == []
        if learned == "hyperliquid":  # an empty answer before its window: no evidence of anything
            assert res.errors == [] and res.unavailable == [] and res.reach is None
            assert res.candles.rows() == truth(emu, sid, oldest, LATEST)
            return
        assert res.errors == [] and res.reach is not None and res.reach.candles == reach
        assert res.unavailable == [(start, oldest - TF)]
        assert res.candles.rows() == truth(emu, sid, oldest, LATEST)
    finally:
        pool.close()
        emu.stop()


def test_a_pre_listing_empty_answer_is_no_error(dialect):
    listed = LATEST - 200 * TF
    sid = sid_of(dialect)
    emu = ExchangeEmulator(seed=5, clock=ManualClock(NOW), dialect=dialect,
                           listings={sid.symbol.split(":")[0]: listed}).start()
    pool = ExchangePool(emu.ccxt_config(), timeout_ms=5000)
    try:
        start = LATEST - 600 * TF
        res = CcxtSource(pool, emu.clock, sleep=lambda s: None).fetch(sid, [hole(start, LATEST)], NOW)
        assert res.errors == [] and res.unavailable == []
        assert res.candles.rows() == truth(emu, sid, start, LATEST) == truth(emu, sid, listed, LATEST)
        if not SPECS[dialect].omits_quiet:  # nothing before the listing is evidence of anything
            assert res.voids == []
    finally:
        pool.close()
        emu.stop()


def test_requests_are_ceil_missing_over_the_page_limit(dialect, emu, source):
    sid = sid_of(dialect)
    reach = reach_of(dialect)
    page = PAGE[dialect]
    n = min(page * 5 // 2, (reach or 10**9) - 1)
    end = LATEST - (0 if reach else 3000 * TF)  # OKX: older than 1440 bars, so history-candles
    start = end - (n - 1) * TF
    emu.reset_counts()
    res = source.fetch(sid, [hole(start, end)], NOW)
    assert res.errors == [] and res.voids == [] and res.unavailable == []
    assert res.candles.rows() == truth(emu, sid, start, end)
    assert res.requests == emu.request_count("klines") == math.ceil(n / page)


def test_okx_history_candles_at_100_a_page_fill_the_hole_completely():
    emu = ExchangeEmulator(seed=5, clock=ManualClock(NOW), dialect="okx").start()
    pool = ExchangePool(emu.ccxt_config(), timeout_ms=5000)
    try:
        sid = sid_of("okx")
        end = LATEST - 2000 * TF
        start = end - 2999 * TF
        res = CcxtSource(pool, emu.clock, sleep=lambda s: None).fetch(sid, [hole(start, end)], NOW)
        assert res.errors == [] and res.voids == []
        assert res.candles.rows() == truth(emu, sid, start, end) and len(res.candles) == 3000
        assert emu.request_count("market/history-candles") == res.requests == 30
        recent = LATEST - 899 * TF  # inside the latest 1440: /market/candles at 300 a page
        res = CcxtSource(pool, emu.clock, sleep=lambda s: None).fetch(sid, [hole(recent, LATEST)], NOW)
        assert res.errors == [] and res.candles.rows() == truth(emu, sid, recent, LATEST)
        assert emu.request_count("market/candles") == 3
    finally:
        pool.close()
        emu.stop()


# ---------------------------------------------------------------------------------------------- property

@pytest.fixture(scope="module", params=ALL)
def shared(request):
    """One emulator and one pool per dialect for the property (faults cleared per example)."""
    e = ExchangeEmulator(seed=9, clock=ManualClock(NOW), dialect=request.param).start()
    pool = ExchangePool(e.ccxt_config(), timeout_ms=5000)
    yield request.param, e, CcxtSource(pool, e.clock, sleep=lambda s: None)
    pool.close()
    e.stop()


SPAN = 12_000  # candles back from the latest: past every reach (Gate 10000) and OKX's 1440


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_property_random_truths_and_holes_on_every_dialect(shared, data):
    """After a walk: every candle equals the truth, every void is a range the truth has no candle in (or,
    on an exchange that omits them, only no-trade candles), every unavailable range is older than the
    reach, and every servable truth candle of the holes is there."""
    dialect, emu, source = shared
    emu.faults.clear()
    sid = sid_of(dialect)
    base = LATEST - (SPAN - 1) * TF
    listed = base + data.draw(st.integers(0, SPAN), label="listing") * TF
    emu.faults.listing(sid.symbol.split(":")[0], listed)
    for a, n in data.draw(st.lists(st.tuples(st.integers(0, SPAN), st.integers(1, 300)), max_size=3), label="out"):
        emu.faults.outage(base + a * TF, base + (a + n) * TF)
    for a, n in data.draw(st.lists(st.tuples(st.integers(0, SPAN), st.integers(1, 300)), max_size=2), label="q"):
        emu.faults.quiet(base + a * TF, base + (a + n) * TF)
    raw = sorted(data.draw(st.lists(st.tuples(st.integers(0, SPAN - 1), st.integers(0, 2500)), min_size=1,
                                    max_size=3), label="holes"))
    wanted, cursor = [], base
    for a, n in raw:
        s = max(cursor, base + a * TF)
        e = min(LATEST, s + n * TF)
        if s <= e:
            wanted.append(hole(s, e))
            cursor = e + 2 * TF
    res = source.fetch(sid, wanted, NOW)
    assert res.errors == []
    truth_rows = {r[0]: r for r in truth(emu, sid, base, LATEST)}
    served = {r[0] for r in emu.served(sid.symbol, sid.timeframe, base, LATEST)}
    for row in res.candles.rows():
        assert truth_rows[row[0]] == row
    for s, e in res.voids:
        inside = [t for t in range(s, e + 1, TF) if t in truth_rows]
        assert all(t not in served for t in inside)  # never a candle the exchange serves
        if not SPECS[dialect].omits_quiet:
            assert inside == []
    oldest = oldest_served(dialect)
    for _s, e in res.unavailable:
        assert oldest is not None and e < oldest
    got = set(res.candles.times.tolist())
    for h in wanted:
        for t in range(h.start, h.end + 1, TF):
            if t in served and (oldest is None or t >= oldest):
                assert t in got
