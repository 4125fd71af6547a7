"""Contract section 1: series ids, timeframes, alignment, candles and hole arithmetic."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tradecanvas_ext.domain import (
    Candle,
    CandleBatch,
    Hole,
    InvalidCandle,
    SeriesId,
    align_down,
    align_up,
    count_covered,
    expected_latest_closed_time,
    is_aligned,
    list_holes,
    merge_ranges,
    split_by_voids,
    timeframe_to_seconds,
)

TFS = ["1m", "3m", "5m", "15m", "1h", "4h", "1d"]


def test_series_id_parse_simple_and_symbol_with_colon():
    s = SeriesId.parse("binance:spot:BTC/USDT:1m")
    assert (s.exchange, s.market, s.symbol, s.timeframe) == ("binance", "spot", "BTC/USDT", "1m")
    f = SeriesId.parse("binance:futures:BTC/USDT:USDT:5m")
    assert f.symbol == "BTC/USDT:USDT" and f.timeframe == "5m" and f.tf_seconds == 300
    assert str(f) == "binance:futures:BTC/USDT:USDT:5m"


@pytest.mark.parametrize(
    "text, part",
    [
        ("binance:spot:1m", "4 parts"),
        ("", "4 parts"),
        (":spot:BTC/USDT:1m", "exchange part is empty"),
        ("binance::BTC/USDT:1m", "market part is empty"),
        ("binance:spot::1m", "symbol part is empty"),
        ("binance:spot:BTC/USDT:", "timeframe part is empty"),
        ("binance:margin:BTC/USDT:1m", "market 'margin'"),
        ("binance:spot:BTC/USDT:1M", "months"),
        ("binance:spot:BTC/USDT:2w", "only 1w"),
        ("binance:spot:BTC/USDT:0m", "at least 1"),
        ("binance:spot:BTC/USDT:5x", "unknown unit"),
        ("binance:futures:BTC/USDT::5m", "empty part"),
        ("binance:spot:BTC/:1m", "unified symbol"),
        ("binance:spot:BTCUSDT:1m", "unified symbol"),
    ],
)
def test_series_id_errors_name_the_wrong_part(text, part):
    with pytest.raises(ValueError, match=part):
        SeriesId.parse(text)


def test_series_id_non_string():
    with pytest.raises(ValueError, match="must be a string"):
        SeriesId.parse(12)  # type: ignore[arg-type]


_sym_part = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", min_size=1, max_size=6)


@given(
    exchange=st.sampled_from(["binance", "kraken", "okx", "bybit"]),
    market=st.sampled_from(["spot", "futures"]),
    parts=st.lists(_sym_part, min_size=2, max_size=3),
    # up to a day (and 1w): longer grids are the exchange's (test_a_grid_of_several_days_...)
    timeframe=st.one_of(st.integers(1, 1440).map("{}m".format), st.integers(1, 24).map("{}h".format),
                        st.just("1d"), st.just("1w")),
)
def test_series_id_round_trip(exchange, market, parts, timeframe):
    symbol = "/".join(parts[:2]) + ("".join(":" + p for p in parts[2:]))
    text = f"{exchange}:{market}:{symbol}:{timeframe}"
    sid = SeriesId.parse(text)
    assert str(sid) == text
    assert SeriesId.parse(str(sid)) == sid


@pytest.mark.parametrize("tf, seconds", [("1m", 60), ("5m", 300), ("15m", 900), ("1h", 3600),
                                         ("4h", 14400), ("1d", 86400), ("3d", 259200),
                                         ("1w", 604800)])
def test_timeframe_to_seconds(tf, seconds):
    assert timeframe_to_seconds(tf) == seconds


@pytest.mark.parametrize("bad", ["2w", "1M", "0m", "5x", "m", "", "1.5m", "-1m", " 1m"])
def test_timeframe_rejected(bad):
    with pytest.raises(ValueError, match="timeframe"):
        timeframe_to_seconds(bad)


@given(t=st.integers(0, 10**11))
def test_weekly_candles_open_on_monday_and_every_alignment_steps_on_that_grid(t):
    import datetime

    week = timeframe_to_seconds("1w")
    d, u = align_down(t, week), align_up(t, week)
    assert is_aligned(d, week) and is_aligned(u, week) and d <= t <= u and u - d in (0, week)
    if d >= 0:
        day = datetime.datetime.fromtimestamp(d, datetime.timezone.utc)
        assert (day.weekday(), day.hour, day.minute, day.second) == (0, 0, 0, 0)  # Monday 00:00 UTC
    last = expected_latest_closed_time(t, week)
    assert last == max(0, d - week) and (last == 0 or last + week <= t < last + 2 * week)
    times = np.arange(d - 10 * week, d + week, week)
    holes = list_holes(np.delete(times, [3, 4, 8]), d - 10 * week, d, week)
    assert [(h.start, h.end, h.missing_candles) for h in holes] == [
        (int(times[3]), int(times[4]), 2), (int(times[8]), int(times[8]), 1)]


@given(t=st.integers(0, 10**11), tf=st.sampled_from([60, 300, 900, 3600, 86400, 604800]))
def test_alignment(t, tf):
    d, u = align_down(t, tf), align_up(t, tf)
    assert is_aligned(d, tf) and is_aligned(u, tf)
    assert d <= t <= u and u - d in (0, tf)
    assert (d == u) == is_aligned(t, tf)


@given(now=st.floats(0, 10**10, allow_nan=False), tf=st.sampled_from([60, 300, 3600, 86400]))
def test_expected_latest_closed_time(now, tf):
    e = expected_latest_closed_time(now, tf)
    assert e == max(0, math.floor(now / tf) * tf - tf)
    if e > 0:
        assert e + tf <= now < e + 2 * tf  # closed, and the next one is not


def test_expected_latest_closed_time_examples():
    assert expected_latest_closed_time(1_700_000_040, 60) == 1_699_999_980
    assert expected_latest_closed_time(30, 60) == 0


def test_candle_valid_and_dict_round_trip():
    c = Candle(1700000040, 1.0, 2.0, 0.5, 1.5, 10.0)
    assert Candle.from_dict(c.to_dict()) == c


@pytest.mark.parametrize(
    "args, reason",
    [
        ((60, float("nan"), 2, 0.5, 1, 1), "non_finite"),
        ((60, 1, float("inf"), 0.5, 1, 1), "non_finite"),
        ((60, -1, 2, 0.5, 1, 1), "non_positive_price"),
        ((60, 1, 2, 0, 1, 1), "non_positive_price"),
        ((60, 1, 2, 0.5, 1, -1), "negative_volume"),
        ((60, 1, 2, 1.2, 1.1, 1), "low_above_body"),
        ((60, 1, 1.5, 0.5, 1.6, 1), "high_below_body"),
        ((-60, 1, 2, 0.5, 1, 1), "bad_time"),
        ((60.5, 1, 2, 0.5, 1, 1), "bad_time"),
        ((True, 1, 2, 0.5, 1, 1), "bad_time"),
        ((60, "1", 2, 0.5, 1, 1), "bad_type"),
    ],
)
def test_candle_invalid(args, reason):
    with pytest.raises(InvalidCandle) as exc:
        Candle(*args)
    assert exc.value.reason == reason


def test_candle_unaligned():
    with pytest.raises(InvalidCandle, match="not aligned"):
        Candle(61, 1, 2, 0.5, 1, 1).check_aligned(60)


def test_candle_from_dict_missing_field():
    with pytest.raises(InvalidCandle, match="missing close"):
        Candle.from_dict({"candle_time": 60, "open": 1, "high": 1, "low": 1, "volume": 1})


def scalar_reason(row, tf: int, now: float) -> str:
    """What the scalar validation says of one row: Candle(), then the grid, then closedness."""
    try:
        c = Candle(*row)
        c.check_aligned(tf)
    except InvalidCandle as exc:
        return exc.reason
    return "not_closed" if row[0] + tf > now else ""


BAD_NUMBERS = [math.nan, math.inf, -math.inf, 0.0, -0.0, -1.0, -1e-300, 5e-324]


@st.composite
def candle_rows(draw, tf: int, now: int):
    """Valid candles (low/high exactly at the body included), then some broken one way or another;
    times on and off the grid, before, at and after the one that is still forming at `now`."""
    t = draw(st.one_of(st.integers(-3, 2 * 10**9 // tf).map(lambda i: i * tf),
                       st.integers(-3, 2).map(lambda i: (now // tf + i) * tf),
                       st.integers(-10**6, 2 * 10**9)))
    o, c = draw(st.floats(1e-8, 1e6)), draw(st.floats(1e-8, 1e6))
    lo = min(o, c) - draw(st.sampled_from([0.0, min(o, c) / 2, min(o, c) * 0.999]))
    hi = max(o, c) + draw(st.sampled_from([0.0, 1e-9, max(o, c)]))
    v = draw(st.sampled_from([0.0, 1.0, 1e9]))
    row = [t, o, hi, lo, c, v]
    kind = draw(st.sampled_from(["valid", "valid", "bad_number", "low_above", "high_below", "any_floats"]))
    if kind == "bad_number":
        for i in draw(st.sets(st.integers(1, 5), min_size=1, max_size=3)):
            row[i] = draw(st.sampled_from(BAD_NUMBERS))
    elif kind == "low_above":
        row[3] = min(o, c) * (1 + draw(st.sampled_from([1e-12, 1e-6, 0.5])))
    elif kind == "high_below":
        row[2] = max(o, c) * (1 - draw(st.sampled_from([1e-12, 1e-6, 0.5])))
    elif kind == "any_floats":
        row[1:] = [draw(st.floats(allow_nan=True, allow_infinity=True)) for _ in range(5)]
    return tuple(row)


@given(data=st.data(), tf=st.sampled_from([60, 300, 3600, 86400]),
       now=st.one_of(st.just(4 * 10**9), st.integers(0, 2 * 10**9 + 86400)))
def test_batch_problems_match_scalar_validation(data, tf, now):
    rows = data.draw(st.lists(candle_rows(tf, now), max_size=40))
    batch = CandleBatch.from_rows(rows)
    assert batch.problems(tf, now=now).tolist() == [scalar_reason(r, tf, now) for r in rows]
    valid, rejected = batch.split_valid(tf, now=now)
    assert valid.rows() == [r for r in rows if scalar_reason(r, tf, now) == ""]
    assert rejected == [(r[0], scalar_reason(r, tf, now)) for r in rows if scalar_reason(r, tf, now)]


def test_batch_problems_name_each_fault():
    rows = [(60, 1, 2, 0.5, 1.5, 1), (61, 1, 2, 0.5, 1.5, 1), (120, float("nan"), 2, 0.5, 1, 1),
            (180, 1, 2, 1.2, 1.1, 1), (240, 1, 2, 0.5, 1.5, 0), (300, 1, 2, 0.5, 1.5, 1)]
    batch = CandleBatch.from_rows(rows)
    reasons = batch.problems(60, now=300).tolist()
    assert reasons == ["", "unaligned", "non_finite", "low_above_body", "", "not_closed"]
    assert reasons == [scalar_reason(r, 60, 300) for r in rows]


def test_batch_dedupe_keeps_last_and_sorts():
    b = CandleBatch.from_rows([(120, 1, 1, 1, 1, 1), (60, 1, 1, 1, 1, 1), (120, 2, 2, 2, 2, 2)])
    d = b.dedupe_sorted()
    assert d.times.tolist() == [60, 120] and d.close.tolist() == [1, 2]


# ---- hole arithmetic vs a brute-force reference -----------------------------------------------------

def brute_holes(times, start, end, tf):
    present = set(times)
    s, e = align_up(start, tf), align_down(end, tf)
    out, run = [], []
    for t in range(s, e + 1, tf):
        if t in present:
            if run:
                out.append(Hole(run[0], run[-1], len(run)))
                run = []
        else:
            run.append(t)
    if run:
        out.append(Hole(run[0], run[-1], len(run)))
    return out


@given(
    idx=st.sets(st.integers(0, 200), max_size=150),
    a=st.integers(-20, 220),
    b=st.integers(-20, 220),
    tf=st.sampled_from([60, 300]),
    off=st.integers(0, 299),
)
def test_list_holes_equals_brute_force(idx, a, b, tf, off):
    times = sorted(i * tf for i in idx)
    start, end = a * tf + off % tf, b * tf + off % tf  # windows need not be aligned
    assert list_holes(times, start, end, tf) == brute_holes(times, start, end, tf)
    s, e = align_up(start, tf), align_down(end, tf)
    expected = len([t for t in times if s <= t <= e])
    assert count_covered(times, start, end, tf) == expected
    if e >= s:
        missing = sum(h.missing_candles for h in list_holes(times, start, end, tf))
        assert missing + expected == (e - s) // tf + 1


@given(ranges=st.lists(st.tuples(st.integers(0, 100), st.integers(0, 20)), max_size=20))
def test_merge_ranges_covers_same_times(ranges):
    tf = 60
    rs = [(a * tf, (a + n) * tf) for a, n in ranges]
    merged = merge_ranges(rs, tf)
    covered = {t for s, e in rs for t in range(s, e + 1, tf)}
    assert {t for s, e in merged for t in range(s, e + 1, tf)} == covered
    for (_s1, e1), (s2, _) in zip(merged, merged[1:], strict=False):
        assert s2 > e1 + tf  # disjoint and not touching


@given(idx=st.sets(st.integers(0, 100), max_size=60),
       voids=st.lists(st.tuples(st.integers(0, 100), st.integers(0, 10)), max_size=5))
def test_split_by_voids_partitions_holes(idx, voids):
    tf = 60
    times = sorted(i * tf for i in idx)
    holes = list_holes(times, 0, 100 * tf, tf)
    vs = [(a * tf, (a + n) * tf) for a, n in voids]
    void_times = {t for s, e in vs for t in range(s, e + 1, tf)}
    parts = split_by_voids(holes, vs, tf)
    missing = {t for h in holes for t in range(h.start, h.end + 1, tf)}
    assert {t for h in parts for t in range(h.start, h.end + 1, tf)} == missing
    for h in parts:
        ts = set(range(h.start, h.end + 1, tf))
        assert h.missing_candles == len(ts)
        assert ts <= void_times if h.void else not (ts & void_times)


def test_list_holes_numpy_input_and_empty_window():
    assert list_holes(np.array([], dtype=np.int64), 0, 120, 60) == [Hole(0, 120, 3)]
    assert list_holes([0, 60], 120, 60, 60) == []


def test_an_exchange_ccxt_does_not_know_is_refused_at_the_edge():
    from tradecanvas_ext.series_ids import parse_series_id

    SeriesId.parse("notanexchange:spot:BTC/USDT:1m")  # the pure domain checks the shape only
    with pytest.raises(ValueError, match="not a ccxt exchange id"):
        parse_series_id("notanexchange:spot:BTC/USDT:1m")
    assert parse_series_id("binance:spot:BTC/USDT:1m") == SeriesId("binance", "spot", "BTC/USDT", "1m")
