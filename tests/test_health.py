"""Contract section 3 health rules, for one series and for all, with `now_time` given."""
from __future__ import annotations

from tests.conftest import NOW
from tradecanvas_ext.backfill.health import health_status, series_health, worst
from tradecanvas_ext.domain import SeriesId, expected_latest_closed_time

TF = 60
EXP = expected_latest_closed_time(NOW, TF)
IDLE = {"state": "idle"}
SID = SeriesId.parse("binance:spot:BTC/USDT:1m")


def status(head, tracker=IDLE, runtime_now=NOW, recent=120):
    return health_status(TF, head, NOW, tracker, runtime_now, recent)


def test_no_head_is_red_missing_head():
    assert status(None) == ("red", "missing_head")


def test_head_ahead_of_closed_window_is_yellow():
    assert status(EXP + TF) == ("yellow", "head_ahead_of_closed_window")


def test_up_to_date_is_green():
    assert status(EXP) == ("green", "up_to_date")


def test_running_backfill_is_yellow():
    assert status(EXP - TF, {"state": "running"}) == ("yellow", "backfill_running")


def test_recent_backfill_is_yellow_only_if_a_level_ran():
    done = {"state": "succeeded", "finished_at": NOW - 100, "ran_levels": 1}
    assert status(EXP - TF, done) == ("yellow", "backfill_recent")
    assert status(EXP - TF, {**done, "ran_levels": 0}) == ("red", "lagging_no_recent_backfill")
    assert status(EXP - TF, {**done, "finished_at": NOW - 121}) == ("red", "lagging_no_recent_backfill")
    assert status(EXP - TF, {**done, "state": "failed"}) == ("yellow", "backfill_recent")


def test_recent_is_measured_on_the_runtime_clock_not_now_time():
    done = {"state": "succeeded", "finished_at": NOW - 100, "ran_levels": 2}
    # a replay asks about a far later now_time; the runtime clock says the repair just finished
    assert health_status(TF, EXP - TF, NOW + 10_000, done, NOW, 120)[1] == "backfill_recent"


def test_lagging_without_backfill_is_red():
    assert status(EXP - 5 * TF) == ("red", "lagging_no_recent_backfill")


def test_first_match_wins_order():
    # running, but up to date: green wins (rule order)
    assert status(EXP, {"state": "running"}) == ("green", "up_to_date")


def test_series_health_fields():
    h = series_health(SID, EXP - 3 * TF, NOW, IDLE, NOW, 120)
    assert h["series_id"] == str(SID) and h["timeframe_seconds"] == 60 and h["now_time"] == NOW
    assert h["expected_latest_closed_time"] == EXP and h["head_time"] == EXP - 3 * TF
    assert h["lag_seconds"] == NOW - (EXP - 3 * TF)
    assert h["missing_seconds"] == 3 * TF and h["missing_candles"] == 3
    assert h["status"] == "red" and h["backfill"]["state"] == "idle"
    empty = series_health(SID, None, NOW, IDLE, NOW, 120)
    assert empty["lag_seconds"] is None and empty["missing_seconds"] is None and empty["missing_candles"] is None


def test_worst_of_all():
    assert worst(["green", "yellow", "green"]) == "yellow"
    assert worst(["green", "red", "yellow"]) == "red"
    assert worst(["green"]) == "green"


def test_runtime_health_one_and_all(make_runtime, exchange, clock):
    rt = make_runtime(series=[SID, "binance:spot:ETH/USDT:1m"])
    assert rt.health(SID)["status_reason"] == "missing_head"
    res = rt.backfill.ensure_tail_coverage(SID, 10, to_time=EXP)
    assert res.complete
    assert rt.health(SID)["status"] == "green"
    # later, the series lags: the repair that just ran keeps it yellow for a while
    assert rt.health(SID, now_time=NOW + 300)["status_reason"] == "backfill_recent"
    clock.advance(121)
    assert rt.health(SID, now_time=NOW + 300)["status_reason"] == "lagging_no_recent_backfill"
    allh = rt.health()
    assert allh["status"] == "red" and [r["series_id"] for r in allh["series"]] == list(map(str, rt.settings.series))
    assert allh["startup_sync"] is None


def without_level_1(ctx):
    from tradecanvas_ext.core import default_sources

    return [s for s in default_sources(ctx) if s.name != "freqtrade"]


def test_a_repair_with_every_level_off_does_not_count(make_runtime, exchange, clock):
    rt = make_runtime(enable_ccxt_backfill=False)
    rt.store.upsert_closed(SID, exchange.candles("BTC/USDT", "1m", EXP - 20 * TF, EXP - 10 * TF))
    # issue 13: the freqtrade level has no provider and no history file, so it has nothing to offer: it is
    # skipped and the "repair" ran no level, so the lagging series stays red after reads
    for _ in range(3):
        rt.backfill.ensure_tail_coverage(SID, 30, to_time=EXP)
        rt.backfill.ensure_tail_coverage(SID, 30, read_path=True)
    tr = rt.tracker.get(SID)
    assert (tr["ran_levels"], tr["finished_at"]) == (0, NOW)
    assert rt.health(SID)["status"] == "red"
    assert rt.health(SID)["status_reason"] == "lagging_no_recent_backfill"
    # with no source at all, the same
    rt.stop()
    rt = make_runtime(enable_ccxt_backfill=False, sources=without_level_1)
    clock.advance(200)
    rt.backfill.ensure_tail_coverage(SID, 30, to_time=EXP)
    tr = rt.tracker.get(SID)
    assert (tr["ran_levels"], tr["finished_at"]) == (0, NOW + 200)
    assert rt.health(SID)["status_reason"] == "lagging_no_recent_backfill"


def test_a_level_that_has_something_to_offer_counts_as_a_repair(make_runtime, exchange, clock):
    rt = make_runtime()  # ccxt on: the exchange has the candles
    rt.store.upsert_closed(SID, exchange.candles("BTC/USDT", "1m", EXP - 20 * TF, EXP - 10 * TF))
    exchange.faults.http_error(400, n=None)  # refused: the series stays behind, but a level ran
    rt.backfill.ensure_tail_coverage(SID, 30, to_time=EXP)
    assert rt.tracker.get(SID)["ran_levels"] == 1
    assert rt.health(SID)["status_reason"] == "backfill_recent"
