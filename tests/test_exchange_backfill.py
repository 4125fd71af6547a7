"""Issue 13 through the runtime: the decision tree on non-Binance dialects (history reach recorded
unavailable and reported, an illiquid Coinbase pair green once its quiet stretch is answered), and a store
written by the previous version (its false voids re-checked and cleared by the first repair over them)."""
from __future__ import annotations

import pytest
from sqlalchemy import text

from tradecanvas_ext.domain import SeriesId
from tradecanvas_ext.store import open_store
from tradecanvas_ext.testing import ExchangeEmulator

NOW = 1_700_006_400 + 30  # conftest's clock
TF = 60
LAST = NOW - 90  # the newest closed 1m candle
KRAKEN = SeriesId.parse("kraken:spot:BTC/USD:1m")
COINBASE = SeriesId.parse("coinbase:spot:BTC/USD:1m")
KRAKEN_OLDEST = (NOW // TF - 719) * TF  # Kraken serves its latest 720 (the forming one included)


@pytest.fixture
def dialect_emu(request, clock):
    e = ExchangeEmulator(seed=2, clock=clock, dialect=request.param).start()
    yield e
    e.stop()


def runtime_on(make_runtime, emu, sid: SeriesId, **section):
    return make_runtime(ccxt_config=emu.ccxt_config(), series=[sid], **section)


@pytest.mark.parametrize("dialect_emu", ["kraken"], indirect=True)
def test_kraken_startup_window_fills_its_reach_and_reports_the_rest_unavailable(make_runtime, dialect_emu):
    rt = runtime_on(make_runtime, dialect_emu, KRAKEN)
    res = rt.backfill.ensure_tail_coverage(KRAKEN, 2000, to_time=LAST)
    assert res.errors == [] and res.complete and res.note == "tail_coverage_done"
    start = LAST - 1999 * TF
    assert rt.store.read_between(KRAKEN, start, LAST).rows() == dialect_emu.candles(
        KRAKEN.symbol, "1m", KRAKEN_OLDEST, LAST)
    holes = [h.to_dict() for h in rt.store.holes(KRAKEN, start, LAST)]
    assert holes == [{"start": start, "end": KRAKEN_OLDEST - TF, "missing_candles": (KRAKEN_OLDEST - start) // TF,
                      "void": False, "unavailable": True}]
    assert rt.store.voids(KRAKEN) == []
    # recorded, so the next repair asks nothing
    dialect_emu.reset_counts()
    again = rt.backfill.ensure_tail_coverage(KRAKEN, 2000, to_time=LAST)
    assert again.complete and dialect_emu.request_count("klines") == 0


@pytest.mark.parametrize("dialect_emu", ["kraken"], indirect=True)
def test_gaps_and_candles_report_unavailable(make_runtime, dialect_emu):
    rt = runtime_on(make_runtime, dialect_emu, KRAKEN, serve=True)
    rt.backfill.ensure_tail_coverage(KRAKEN, 1000, to_time=LAST)
    import json
    import urllib.request

    with urllib.request.urlopen(f"{rt.url}/api/market/gaps?series_id={KRAKEN}&start={LAST - 999 * TF}"
                                f"&end={LAST}", timeout=10) as resp:
        doc = json.loads(resp.read())
    assert [h["unavailable"] for h in doc["holes"]] == [True] and not doc["holes"][0]["void"]
    assert doc["holes"][0]["end"] == KRAKEN_OLDEST - TF


@pytest.mark.parametrize("dialect_emu", ["coinbase"], indirect=True)
def test_an_illiquid_coinbase_pair_is_green_once_its_quiet_stretch_is_answered(make_runtime, dialect_emu, clock):
    # no trade in the last 10 minutes: Coinbase sends no candle for them
    dialect_emu.faults.quiet(LAST - 9 * TF, NOW + 3600)
    rt = runtime_on(make_runtime, dialect_emu, COINBASE, enable_startup_kline_sync=False)
    rt.store.upsert_closed(COINBASE, dialect_emu.candles(COINBASE.symbol, "1m", LAST - 100 * TF, LAST - 10 * TF))
    assert rt.health(COINBASE)["status"] == "red"
    res = rt.backfill.ensure_tail_coverage(COINBASE, 101, to_time=LAST)
    assert res.errors == []
    # the old part of the stretch is a confirmed void; its newest minutes are too young to be one, but the
    # exchange answered them without a candle: not missing either
    voids = [(v.start, v.end) for v in rt.store.voids(COINBASE)]
    assert voids and voids[0][0] == LAST - 9 * TF and voids[-1][1] < LAST
    h = rt.health(COINBASE)
    assert (h["status"], h["status_reason"], h["missing_candles"]) == ("green", "up_to_date", 0)


@pytest.mark.parametrize("dialect_emu", ["coinbase"], indirect=True)
def test_a_real_gap_on_coinbase_is_still_missing(make_runtime, dialect_emu):
    rt = runtime_on(make_runtime, dialect_emu, COINBASE, enable_startup_kline_sync=False, enable_ccxt_backfill=False)
    rt.store.upsert_closed(COINBASE, dialect_emu.candles(COINBASE.symbol, "1m", LAST - 100 * TF, LAST - 10 * TF))
    rt.backfill.ensure_tail_coverage(COINBASE, 101, to_time=LAST)
    h = rt.health(COINBASE)
    assert h["status"] == "red" and h["missing_candles"] == 10


@pytest.mark.parametrize("dialect_emu", ["kraken"], indirect=True)
def test_a_store_of_the_previous_version_keeps_its_data_and_its_false_voids_clear(
        make_runtime, dialect_emu, tmp_path):
    url = f"sqlite:///{tmp_path / 'tc.sqlite'}"
    # the previous version's store: no tc_unavailable / tc_reach, and a "void" it recorded today from the
    # short pages of Kraken's latest-720 window (the exchange has those candles)
    old = open_store(url, origin="old")
    kept = dialect_emu.candles(KRAKEN.symbol, "1m", LAST - 200 * TF, LAST - 101 * TF)
    old.candles.upsert_closed(KRAKEN, kept)
    false_void = (LAST - 100 * TF, LAST - 50 * TF)
    old.candles.record_voids(KRAKEN, [false_void], "ccxt", checked_at=NOW - 60)
    with old.dialect.write() as conn:
        conn.execute(text("DROP TABLE tc_unavailable"))
        conn.execute(text("DROP TABLE tc_reach"))
    old.close()
    rt = runtime_on(make_runtime, dialect_emu, KRAKEN, db_url=url, enable_startup_kline_sync=False)
    assert rt.store.read_between(KRAKEN, LAST - 200 * TF, LAST - 101 * TF).rows() == kept  # data kept
    assert [(v.start, v.end, v.checked_at) for v in rt.store.voids(KRAKEN)] == [(*false_void, 0.0)]
    res = rt.backfill.ensure_tail_coverage(KRAKEN, 201, to_time=LAST)
    assert res.errors == [] and res.complete
    assert rt.store.voids(KRAKEN) == []  # re-checked: the exchange had those candles
    assert rt.store.read_between(KRAKEN, LAST - 200 * TF, LAST).rows() == dialect_emu.candles(
        KRAKEN.symbol, "1m", LAST - 200 * TF, LAST)


def test_weekly_candles_are_stored_and_their_holes_computed_on_the_monday_grid(tmp_path):
    week, monday = 604_800, 1_699_833_600  # 2023-11-13 00:00 UTC, a Monday
    sid = SeriesId.parse("binance:spot:BTC/USDT:1w")
    s = open_store(f"sqlite:///{tmp_path / 'w.sqlite'}", origin="test")
    try:
        times = [monday - k * week for k in range(20, 0, -1) if k not in (5, 6, 12)]
        up = s.candles.upsert_closed(sid, [(t, 1.0, 2.0, 0.5, 1.5, 3.0) for t in times] +
                                     [(monday - 86400, 1.0, 2.0, 0.5, 1.5, 3.0)], now=monday + 3600)
        assert up.accepted == len(times) and up.rejected == [(monday - 86400, "unaligned")]  # a Sunday
        holes = [(h.start, h.end, h.missing_candles) for h in s.candles.holes(sid, monday - 20 * week + 1,
                                                                            monday - 1)]
        # the window is cut to the grid times inside it; the epoch-aligned grid would be three days off
        assert holes == [(monday - 12 * week, monday - 12 * week, 1), (monday - 6 * week, monday - 5 * week, 2)]
    finally:
        s.close()
