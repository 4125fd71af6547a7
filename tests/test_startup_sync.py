"""Contract section 6: run_startup_kline_sync — every series, concurrently, one failure never stops the
others, and the result shape."""
from __future__ import annotations

from tests.conftest import NOW
from tradecanvas_ext.backfill.startup_sync import format_table, run_startup_kline_sync
from tradecanvas_ext.core import default_sources
from tradecanvas_ext.domain import expected_latest_closed_time

BTC, ETH, BTC5 = "binance:spot:BTC/USDT:1m", "binance:spot:ETH/USDT:1m", "binance:spot:BTC/USDT:5m"
BAD = "binance:spot:DOGE/USDT:1m"  # not listed on the emulator


def test_sync_every_series_and_report(make_runtime, exchange):
    rt = make_runtime(series=[BTC, ETH, BTC5, BAD], startup_sync_target_candles=1500)
    exchange.reset_counts()
    out = rt.run_startup_sync()
    assert set(out) >= {"enabled", "series_total", "series_synced", "series_lagging", "series_errors",
                        "duration_ms", "series_results"}
    assert out["enabled"] and out["series_total"] == 4
    assert (out["series_synced"], out["series_lagging"], out["series_errors"]) == (3, 0, 1)
    rows = {r["series_id"]: r for r in out["series_results"]}
    assert set(rows) == {BTC, ETH, BTC5, BAD}
    for sid in (BTC, ETH, BTC5):
        r = rows[sid]
        tf = 60 if sid.endswith("1m") else 300
        assert r["target_time"] == expected_latest_closed_time(NOW, tf) == r["after_head_time"]
        assert r["before_head_time"] is None and r["covered_candles"] == 1500 and r["error"] is None
        assert set(r) >= {"series_id", "target_time", "before_head_time", "after_head_time",
                          "covered_candles", "error"}
    assert "DOGE/USDT" in rows[BAD]["error"]
    # 1m series: ceil(1500/1000) each; the 5m series is built by rollup only where 1m exists, rest by ccxt
    assert exchange.request_count("klines") <= 2 + 2 + 2
    assert rt.health()["startup_sync"] is out
    table = format_table(out)
    assert BAD in table and "synced 3 / lagging 0 / errors 1" in table


def test_second_sync_is_free_and_disabled_sync(make_runtime, exchange, clock):
    rt = make_runtime(series=[BTC], startup_sync_target_candles=100)
    rt.run_startup_sync()
    exchange.reset_counts()
    clock.advance(120)  # two more candles closed
    out = rt.run_startup_sync()
    assert out["series_synced"] == 1 and exchange.request_count("klines") == 1
    rt2 = make_runtime(series=[BTC], enable_startup_kline_sync=False, db_url=f"sqlite:///{rt.settings.user_data_dir}/x.db")
    assert run_startup_kline_sync(rt2)["enabled"] is False


def test_lagging_when_ccxt_is_off(make_runtime, exchange):
    rt = make_runtime(series=[BTC], enable_ccxt_backfill=False,
                      sources=lambda ctx: [s for s in default_sources(ctx) if s.name != "freqtrade"])
    out = rt.run_startup_sync()
    assert out["series_lagging"] == 1 and out["series_results"][0]["error"] is None


def test_runtime_start_runs_the_startup_sync_in_the_background(make_runtime, exchange):
    """Contract section 6: an embedder's `Runtime.start()` with the switch on syncs every series, and health
    carries the result; with the switch off nothing syncs."""
    rt = make_runtime(series=[BTC, ETH, BTC5], startup_sync_target_candles=300, startup_sync=None)
    out = rt.wait_startup_sync(60)
    assert out is not None and out["series_total"] == out["series_synced"] == 3, out
    assert rt.health()["startup_sync"] is out
    for sid in (BTC, ETH, BTC5):
        assert rt.health(sid)["status"] == "green"
    off = make_runtime(series=[BTC], enable_startup_kline_sync=False, startup_sync=None,
                       db_url=f"sqlite:///{rt.settings.user_data_dir}/off.db")
    assert off.wait_startup_sync(5) is None and off.health()["startup_sync"] is None
    assert off.store.head_time(off.series_ids[0]) is None


def test_a_sync_inside_the_late_candle_grace_targets_the_newest_final_candle(make_runtime, exchange, clock):
    """5 s after a 1m close the just-closed candle may still change (the late-candle grace, 15 s): the sync
    targets the candle before it and reports synced, instead of lagging by a candle it held back itself;
    the just-closed one is not stored until it is final."""
    clock.set(NOW - 30 + 5)  # 5 s after the close of the candle that opened at NOW - 90
    rt = make_runtime(series=[BTC], startup_sync_target_candles=100)
    out = rt.run_startup_sync()
    [row] = out["series_results"]
    assert row["status"] == "synced" and out["series_synced"] == 1, row
    assert row["target_time"] == row["after_head_time"] == NOW - 150
    assert rt.store.head_time(rt.series_ids[0]) == NOW - 150
    clock.advance(15)  # the grace has passed: the next sync takes it
    again = rt.run_startup_sync()["series_results"][0]
    assert again["status"] == "synced" and again["after_head_time"] == NOW - 90


def test_a_pair_listed_inside_the_window_is_synced_once_the_exchange_answered(make_runtime, exchange):
    """The 700 candles before a listing 300 minutes ago stay holes (an empty answer is no evidence of a
    void), but the series is up to its latest closed candle with nothing missing after its first: synced.
    The same holes with the exchange never asked leave a series lagging."""
    exchange.faults.listing("BTC/USDT", NOW - 300 * 60)
    rt = make_runtime(series=[BTC, ETH], startup_sync_target_candles=1000)
    out = rt.run_startup_sync()
    rows = {r["series_id"]: r for r in out["series_results"]}
    assert rows[BTC]["status"] == "synced" and rows[BTC]["error"] is None
    assert 0 < rows[BTC]["covered_candles"] < 1000  # only what exists since the listing
    assert rows[BTC]["after_head_time"] == rows[BTC]["target_time"]
    first = rt.store.first_time(rt.series_ids[0])
    assert first >= NOW - 300 * 60 - 60
    holes = rt.store.holes(rt.series_ids[0], rows[BTC]["target_time"] - 999 * 60, rows[BTC]["target_time"])
    assert holes and all(h.end < first and not h.void for h in holes)  # still holes, never voids
    assert (out["series_synced"], out["series_lagging"]) == (2, 0)


def test_recent_candles_alone_without_the_exchange_are_lagging(make_runtime, exchange, tmp_path):
    rt = make_runtime(series=[BTC], startup_sync_target_candles=1000, enable_ccxt_backfill=False,
                      sources=lambda ctx: [s for s in default_sources(ctx) if s.name != "freqtrade"])
    sid = rt.series_ids[0]
    last = expected_latest_closed_time(NOW, 60)
    rt.store.upsert_closed(sid, exchange.candles("BTC/USDT", "1m", last - 299 * 60, last))
    out = rt.run_startup_sync()
    row = out["series_results"][0]
    assert row["after_head_time"] == row["target_time"] and row["status"] == "lagging"
