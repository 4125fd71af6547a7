"""Issue 13 item 5 (bug B7): grids that are the exchange's. Binance's 3d candles open at t % 259200 == 86400
(1970-01-02 + k x 3d), not on the epoch's 3d grid: the grid functions with an offset (properties), the grid
per exchange (known, or refused naming the timeframe and the exchange), and end to end through real ccxt
against the emulator's Binance dialect: a 3d hole filled, holes and /gaps on the 3d grid, the store
accepting those rows (SQLite and PostgreSQL)."""
from __future__ import annotations

import datetime
import json
import pickle
import urllib.request

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tradecanvas_ext.domain import (
    CandleBatch,
    Grid,
    SeriesId,
    align_down,
    align_up,
    exchange_grid,
    expected_latest_closed_time,
    is_aligned,
    list_holes,
)
from tradecanvas_ext.domain.timeframe import unaligned

NOW = 1_700_006_400 + 30  # conftest's clock: a Wednesday, one day into a Binance 3d candle
D3 = 259_200
B3_OFFSET = 86_400  # written out here, not read from the package (FACTS: 1502668800 is a Binance 3d open time)
LATEST_3D = 1_699_660_800  # the newest closed Binance 3d candle at NOW: 2023-11-11 00:00 UTC
BIN3D = SeriesId.parse("binance:spot:BTC/USDT:3d")


def row(t: int) -> tuple:
    return (t, 1.0, 2.0, 0.5, 1.5, 3.0)


# ---- the grid functions with an offset ----------------------------------------------------------------------
@given(t=st.integers(-10**11, 10**11), tf=st.sampled_from([120, 3600, 86_400, D3, 604_800]), data=st.data())
def test_alignment_steps_on_a_grid_with_any_offset(t, tf, data):
    off = data.draw(st.integers(0, tf - 1))
    g = Grid(tf, off)
    d, u = align_down(t, g), align_up(t, g)
    assert (d - off) % tf == 0 and (u - off) % tf == 0  # on the offset grid, by plain arithmetic
    assert is_aligned(d, g) and is_aligned(u, g) and d <= t <= u and u - d in (0, tf)
    assert (d == u) == is_aligned(t, g) == ((t - off) % tf == 0)
    assert align_down(d + tf - 1, g) == d and align_up(d + 1, g) == d + tf
    times = np.array([d - tf, d, d + 1, u, u + tf // 2], dtype=np.int64)
    assert unaligned(times, g).tolist() == [not is_aligned(int(x), g) for x in times]
    if t >= 2 * tf:
        last = expected_latest_closed_time(t, g)
        assert (last - off) % tf == 0 and last + tf <= t < last + 2 * tf


@given(tf=st.sampled_from([3600, D3]), data=st.data(), n=st.integers(3, 40))
def test_holes_step_on_the_offset_grid(tf, data, n):
    off = data.draw(st.integers(1, tf - 1))
    g = Grid(tf, off)
    base = 1_600_000_000 // tf * tf + off
    grid = [base + k * tf for k in range(n)]
    missing = set(data.draw(st.lists(st.sampled_from(grid), max_size=n - 1, unique=True)))
    present = np.array([t for t in grid if t not in missing], dtype=np.int64)
    # a window with unaligned edges: cut to the grid times inside it
    holes = list_holes(present, base - tf + 1, base + (n - 1) * tf + tf - 1, g)
    got = sorted(t for h in holes for t in range(h.start, h.end + 1, tf))
    assert got == sorted(missing)
    assert all((h.start - off) % tf == 0 and (h.end - off) % tf == 0 for h in holes)
    assert sum(h.missing_candles for h in holes) == len(missing)


@given(tf=st.sampled_from([60, D3]), off=st.integers(0, 10**6), k=st.integers(-5, 5))
def test_a_grid_is_its_length_in_every_computation_and_survives_pickling(tf, off, k):
    g = Grid(tf, off)
    assert g == tf and g.offset == off % tf and hash(g) == hash(tf)
    assert type(g + k) is int and type(g * 2) is int and (g * 2) // g == 2  # arithmetic: plain ints
    back = pickle.loads(pickle.dumps(g))
    assert back == tf and back.offset == g.offset and isinstance(back, Grid)
    assert json.dumps({"tf": g}) == json.dumps({"tf": tf})


# ---- the grid per exchange ------------------------------------------------------------------------------------
def test_binances_3d_grid_is_one_day_off_the_epochs():
    g = exchange_grid("binance", "3d")
    assert g == D3 and g.offset == B3_OFFSET and exchange_grid("binanceusdm", "3d").offset == B3_OFFSET
    known = int(datetime.datetime(2017, 8, 14, tzinfo=datetime.timezone.utc).timestamp())
    assert known == 1_502_668_800 and is_aligned(known, g) and not is_aligned(known, D3)
    assert BIN3D.tf_seconds.offset == B3_OFFSET and is_aligned(LATEST_3D, BIN3D.tf_seconds)
    assert expected_latest_closed_time(NOW, BIN3D.tf_seconds) == LATEST_3D


@pytest.mark.parametrize("exchange", ["binance", "kraken", "okx", "bybit"])
def test_epoch_and_monday_grids_need_no_exchange(exchange):
    assert type(exchange_grid(exchange, "1d")) is int and exchange_grid(exchange, "4h") == 14_400
    week = exchange_grid(exchange, "1w")
    monday = align_down(NOW, week)
    assert datetime.datetime.fromtimestamp(monday, datetime.timezone.utc).weekday() == 0


@pytest.mark.parametrize("text", ["kraken:spot:BTC/USD:3d", "okx:spot:BTC/USDT:3d", "binance:spot:BTC/USDT:2d",
                                  "bybit:spot:BTC/USDT:48h", "gate:spot:BTC/USDT:3d"])
def test_a_grid_not_known_for_the_exchange_is_refused_naming_both(text):
    exchange, timeframe = text.split(":")[0], text.split(":")[-1]
    with pytest.raises(ValueError) as err:
        SeriesId.parse(text)
    assert f"'{timeframe}'" in str(err.value) and f"'{exchange}'" in str(err.value)
    assert "not known" in str(err.value)


# ---- the store on the exchange's grid (SQLite and PostgreSQL) ----------------------------------------------
def test_the_store_accepts_binances_3d_rows_and_computes_holes_on_that_grid(store):
    times = [LATEST_3D - k * D3 for k in range(19, -1, -1)]
    kept = [t for i, t in enumerate(times) if i not in (4, 5, 11)]
    epoch_grid = LATEST_3D - B3_OFFSET  # where the epoch's 3d grid has a candle: a day before Binance's
    up = store.upsert_closed(BIN3D, [row(t) for t in kept] + [row(epoch_grid)], now=NOW)
    assert up.accepted == len(kept) and up.rejected == [(epoch_grid, "unaligned")]
    holes = [(h.start, h.end, h.missing_candles) for h in store.holes(BIN3D, times[0] - 1000, LATEST_3D + 1000)]
    assert holes == [(times[4], times[5], 2), (times[11], times[11], 1)]
    assert store.read_between(BIN3D, times[0], LATEST_3D).times.tolist() == kept


def test_a_batch_on_the_epochs_3d_grid_is_all_unaligned_for_binance():
    epoch = [LATEST_3D - B3_OFFSET - k * D3 for k in range(5)]
    good, rejected = CandleBatch.coerce([row(t) for t in sorted(epoch)]).split_valid(BIN3D.tf_seconds, NOW)
    assert len(good) == 0 and {r for _, r in rejected} == {"unaligned"}


# ---- end to end: real ccxt against the emulator's Binance dialect --------------------------------------------
@pytest.mark.parametrize("timeframe, tf, off", [("3d", D3, B3_OFFSET), ("1w", 604_800, 345_600)])
def test_a_binance_3d_or_1w_hole_is_filled_through_ccxt_and_gaps_step_on_the_grid(make_runtime, exchange,
                                                                                   timeframe, tf, off):
    sid = SeriesId.parse(f"binance:spot:BTC/USDT:{timeframe}")
    latest = (NOW - off) // tf * tf + off - tf  # the newest closed candle on Binance's grid, written out
    rt = make_runtime(series=[str(sid)], serve=True)
    start = latest - 29 * tf
    truth = exchange.candles(sid.symbol, timeframe, start, latest)
    assert len(truth) == 30 and all((c[0] - off) % tf == 0 for c in truth)  # the emulator's own grid
    gone = {truth[3][0], truth[4][0], truth[5][0], truth[20][0]}
    up = rt.store.upsert_closed(sid, [c for c in truth if c[0] not in gone], now=NOW)
    assert up.accepted == 26 and up.rejected == []
    expect = [(truth[3][0], truth[5][0], 3), (truth[20][0], truth[20][0], 1)]
    assert [(h.start, h.end, h.missing_candles) for h in rt.store.holes(sid, start - 5, latest + 5)] == expect
    with urllib.request.urlopen(f"{rt.url}/api/market/gaps?series_id={sid}&start={start - 5}"
                                f"&end={latest + 5}", timeout=10) as resp:
        doc = json.loads(resp.read())
    assert [(h["start"], h["end"], h["missing_candles"]) for h in doc["holes"]] == expect
    exchange.reset_counts()
    res = rt.backfill.ensure_tail_coverage(sid, 30, to_time=latest)
    assert res.errors == [] and res.complete
    assert rt.store.read_between(sid, start, latest).rows() == truth  # every field, from Binance's klines
    assert rt.store.holes(sid, start, latest) == [] and rt.store.voids(sid) == []
    assert 1 <= exchange.request_count("klines") <= 2  # one page per hole at most


def test_a_rollup_builds_buckets_on_the_exchanges_grid():
    from tradecanvas_ext.sources.rollup import rollup_batch

    minutes = np.arange(LATEST_3D - D3, LATEST_3D + D3, 60, dtype=np.int64)  # two whole Binance 3d candles
    one = CandleBatch(minutes, np.full(len(minutes), 1.0), np.full(len(minutes), 2.0), np.full(len(minutes), 0.5),
                      np.full(len(minutes), 1.5), np.full(len(minutes), 1.0))
    built = rollup_batch(one, BIN3D.tf_seconds)
    assert built.times.tolist() == [LATEST_3D - D3, LATEST_3D]
    assert built.volume.tolist() == [D3 // 60] * 2


@pytest.mark.parametrize("timeframe, tf, off", [("3d", D3, B3_OFFSET), ("1w", 604_800, 345_600)])
def test_the_binance_dialect_serves_3d_and_1w_on_binances_grid(exchange, timeframe, tf, off):
    from tradecanvas_ext.testing.emulator.faults import FaultDecision

    def klines(**params) -> list[int]:
        rows = exchange.routes.klines({"symbol": "BTCUSDT", "interval": timeframe, **params}, NOW, FaultDecision())
        return [r[0] // 1000 for r in rows]

    g = (NOW - off) // tf * tf + off - 4 * tf  # a grid time, written out: t % tf == off
    assert klines(startTime=str(g * 1000), limit="2") == [g, g + tf]  # startTime inclusive, on the grid
    assert klines(startTime=str((g + 1) * 1000), limit="1") == [g + tf]
    assert klines(endTime=str(g * 1000), limit="2") == [g - tf, g]  # endTime inclusive of an open time
    assert klines(limit="1") == [(NOW - off) // tf * tf + off]  # the forming candle
    rows = exchange.routes.klines({"symbol": "BTCUSDT", "interval": timeframe, "startTime": str(g * 1000),
                                   "limit": "1"}, NOW, FaultDecision())
    assert rows[0][6] == (g + tf) * 1000 - 1  # close time
    assert [c[0] for c in exchange.candles("BTC/USDT", timeframe, g, g + tf)] == [g, g + tf]
