"""The range walk's pure parts (page plan, answer classification, void evidence, Retry-After, retry policy)
and the walk itself over a scripted in-memory transport: no network, no sleeping, a manual clock."""
from __future__ import annotations

import email.utils
import math
import time

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from tradecanvas_ext.domain import expected_latest_closed_time
from tradecanvas_ext.domain.clock import ManualClock
from tradecanvas_ext.sources.base import SourceResult
from tradecanvas_ext.sources.range_walk import (
    VOID_MIN_AGE_S,
    Page,
    RangeWalk,
    RetryPolicy,
    TimeBound,
    TooOld,
    Transient,
    clean_rows,
    hold_back_unfinal,
    newest_void,
    parse_retry_after,
    plan_page,
    row_times,
    void_evidence,
)
from tradecanvas_ext.sources.reach import Reach

TF = 60
T0 = 1_700_000_000 // TF * TF
NOW = T0 + 100_000 * TF + 30  # mid-candle, far after every page below
CUTOFF = NOW - max(VOID_MIN_AGE_S, TF)


def times_of(ranges) -> set[int]:
    return {t for s, e in ranges for t in range(s, e + 1, TF)}


def rows(times) -> list[list]:
    return [[t * 1000, 1.0, 2.0, 0.5, 1.5, 10.0] for t in times]


# ---------------------------------------------------------------------------------------------- page plan


@given(n=st.integers(1, 5000), limit=st.integers(1, 1500), open_ended=st.booleans())
def test_pages_tile_the_hole_in_ceil_n_over_limit(n, limit, open_ended):
    start, end = T0, T0 + (n - 1) * TF
    pages, s = [], start
    while s <= end:
        page = plan_page(s, end, TF, limit, open_ended)
        pages.append(page)
        s = page.end + TF
    assert [p.start for p in pages] == [start] + [p.end + TF for p in pages[:-1]]  # contiguous, no overlap
    assert pages[-1].end == end
    assert len(pages) == math.ceil(n / limit)
    for p in pages:
        candles = (p.end - p.start) // TF + 1
        assert candles <= limit
        assert p.asked == (limit if open_ended else candles)  # open-ended: `limit` rows from the start


# ---------------------------------------------------------------------------------------------- voids


@given(now=st.floats(1e9, 2e9), tf=st.sampled_from([60, 300, 3600, 86400]))
def test_newest_void_is_the_newest_aligned_time_closed_before_the_cutoff(now, tf):
    nv = newest_void(now, tf)
    cutoff = now - max(VOID_MIN_AGE_S, tf)
    assert nv % tf == 0
    assert nv + tf <= cutoff < nv + 2 * tf


@settings(max_examples=300)
@given(present=st.sets(st.integers(0, 199), max_size=200), young=st.integers(0, 10),
       oldest=st.one_of(st.none(), st.integers(0, 200)), omits=st.booleans(), complete=st.booleans(),
       page=st.tuples(st.integers(0, 199), st.integers(0, 199)).map(sorted))
def test_void_evidence_is_exactly_section_5(present, young, oldest, omits, complete, page):
    """A time is a void only when this one answer holds rows on both sides of it, or the exchange omits
    no-trade candles and answered the whole page; never younger than the age limit, never out of reach."""
    now = T0 + (200 + young) * TF + 30
    ps, pe = T0 + page[0] * TF, T0 + page[1] * TF
    rows_ = np.array(sorted(T0 + i * TF for i in present if page[0] <= i), dtype=np.int64)
    old = None if oldest is None else T0 + oldest * TF
    got = times_of(void_evidence(ps, pe, rows_, TF, now, old, omits, complete))
    have = set(rows_.tolist())
    expected = set()
    for t in range(ps, T0 + 200 * TF, TF):
        if t in have or t > newest_void(now, TF) or (old is not None and t < old):
            continue
        if omits and complete:
            if t <= pe:
                expected.add(t)
        elif len(rows_) and rows_[0] < t < rows_[-1]:
            expected.add(t)
    assert got == expected


def test_an_empty_or_single_row_answer_proves_nothing_on_an_exchange_that_sends_every_candle():
    empty = np.empty(0, dtype=np.int64)
    assert void_evidence(T0, T0 + 99 * TF, empty, TF, NOW, None, False, True) == []
    assert void_evidence(T0, T0 + 99 * TF, np.array([T0 + 50 * TF]), TF, NOW, None, False, True) == []
    # an exchange that omits no-trade candles and answered the whole page: all of it
    assert void_evidence(T0, T0 + 99 * TF, empty, TF, NOW, None, True, True) == [(T0, T0 + 99 * TF)]
    # ... but not when the answer was cut (as many rows as asked): only between its rows
    assert void_evidence(T0, T0 + 99 * TF, empty, TF, NOW, None, True, False) == []


# ---------------------------------------------------------------------------------------------- rows


def test_rows_are_parsed_once_each_and_garbage_is_skipped():
    raw = [*rows([T0 + TF, T0]), [T0 * 1000 + 1, 1, 1, 1, 1, 1], ["x"], [], [(T0 + 2 * TF) * 1000, 1, 2],
           [(T0 + TF) * 1000, 9.0, 9.0, 9.0, 9.0, 9.0]]
    assert row_times(raw, T0, TF).tolist() == [T0, T0 + TF]
    assert row_times(raw, T0 + TF, TF).tolist() == [T0 + TF]
    batch = clean_rows(raw, T0, T0 + TF, TF, NOW)
    assert batch.times.tolist() == [T0, T0 + TF] and float(batch.open[1]) == 9.0  # the last row wins


def _oracle_rows(raw, start, end, tf, now):
    """The row-by-row reading of an answer (the walk's rule before it was vectorised): the oracle."""
    out = {}
    for r in raw:
        try:
            t_ms = int(r[0])
        except (TypeError, ValueError, IndexError, KeyError, OverflowError):
            continue
        if len(r) < 6 or t_ms % 1000 or (t_ms // 1000) % tf:
            continue
        t = t_ms // 1000
        if start <= t <= end and t + tf <= now:
            vals = []
            for x in r[1:6]:
                try:
                    vals.append(float(x))
                except (TypeError, ValueError, OverflowError):
                    vals.append(math.nan)
            out[t] = vals  # the last row of a time wins
    return sorted(out.items())


_value = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10**6, 10**6), st.none(),
                   st.sampled_from(["1.5", "x", ""]))
_time = st.one_of(st.integers(-5, 40).map(lambda k: (T0 + k * TF) * 1000),  # aligned, some not closed
                  st.integers(-5, 40 * TF).map(lambda k: (T0 + k) * 1000),  # whole seconds, mostly off the grid
                  st.integers(-5, 40).map(lambda k: (T0 + k * TF) * 1000 + 1),  # on the grid but for 1 ms
                  st.integers(T0 * 1000, (T0 + 40 * TF) * 1000), st.floats(0, 2e12), st.just(10**30),
                  st.sampled_from([None, "x", str(T0 * 1000)]))
_row = st.one_of(st.lists(_value, min_size=5, max_size=7).flatmap(lambda v: _time.map(lambda t: [t, *v])),
                 st.lists(_time, min_size=0, max_size=3), st.just({"t": 1}), st.just("row"))


@settings(max_examples=300, deadline=None)
@given(st.lists(_row, max_size=30), st.booleans())
def test_rows_read_at_once_equal_the_row_by_row_reading(raw, regular):
    """The vectorised parse (one numpy conversion of a regular answer) equals the row-by-row rule on any
    answer, garbage included; `regular` keeps only well-formed numeric rows, the path ccxt's answers take."""
    if regular:
        raw = [r for r in raw if isinstance(r, list) and len(r) >= 6
               and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in r)]
    now = T0 + 30 * TF + 30
    got = clean_rows(raw, T0, T0 + 35 * TF, TF, now)
    want = _oracle_rows(raw, T0, T0 + 35 * TF, TF, now)
    assert got.times.tolist() == [t for t, _ in want]
    for i, (_, vals) in enumerate(want):
        row = [float(getattr(got, f)[i]) for f in ("open", "high", "low", "close", "volume")]
        assert all((math.isnan(a) and math.isnan(b)) or a == b for a, b in zip(row, vals, strict=True))


@pytest.mark.parametrize(("after_close", "newer_row", "kept"), [(5, False, False), (20, False, True),
                                                                   (5, True, True)])
def test_the_just_closed_candle_waits_for_the_grace_or_a_newer_row(after_close, newer_row, kept):
    last_closed = T0
    now = last_closed + TF + after_close
    assert expected_latest_closed_time(now, TF) == last_closed
    raw = rows([last_closed - TF, last_closed] + ([last_closed + TF] if newer_row else []))
    page = clean_rows(raw, last_closed - TF, last_closed, TF, now)
    out = hold_back_unfinal(page, row_times(raw, last_closed - TF, TF), TF, now, grace_s=15.0)
    assert (last_closed in out.times.tolist()) is kept and last_closed - TF in out.times.tolist()


# ---------------------------------------------------------------------------------------------- Retry-After


def test_retry_after_delta_seconds_and_garbage():
    clock = ManualClock(NOW)
    assert parse_retry_after("3", clock()) == 3.0
    assert parse_retry_after("1.5", clock()) == 1.5
    assert parse_retry_after("-4", clock()) == 0.0
    assert parse_retry_after(None, clock()) is None
    assert parse_retry_after("soon", clock()) is None


def test_retry_after_http_date_reads_the_injected_clock():
    clock = ManualClock(1_700_000_000)
    header = email.utils.formatdate(1_700_000_010, usegmt=True)
    assert parse_retry_after(header, clock()) == 10.0
    clock.advance(4)
    assert parse_retry_after(header, clock()) == 6.0
    clock.advance(100)
    assert parse_retry_after(header, clock()) == 0.0  # a date in the past: no wait


@given(now=st.integers(0, 4_000_000_000), delta=st.integers(0, 10**6))
def test_retry_after_http_date_is_the_delta_to_the_clock(now, delta):
    header = email.utils.formatdate(now + delta, usegmt=True)
    assert parse_retry_after(header, ManualClock(now)()) == float(delta)


# ---------------------------------------------------------------------------------------------- policy


def test_backoff_doubles_to_its_cap_and_gives_up_after_max_tries():
    policy = RetryPolicy(max_tries=6, backoff_base_s=0.2, backoff_cap_s=1.0)
    plain = Transient(OSError("reset"))
    assert [policy.wait_s(a, plain) for a in range(1, 7)] == [0.2, 0.4, 0.8, 1.0, 1.0, None]


def test_rate_limit_and_retry_after_waits():
    policy = RetryPolicy()
    limited = Transient(OSError("429"), rate_limited=True)
    assert [policy.wait_s(a, limited) for a in (1, 2, 3, 4)] == [2.0, 4.0, 8.0, None]
    assert policy.wait_s(1, Transient(OSError("429"), retry_after_s=7.0)) == 7.0
    assert policy.wait_s(1, Transient(OSError("429"), retry_after_s=31.0)) is None  # past the cap: give up


# ---------------------------------------------------------------------------------------------- the walk


class ScriptedTransport:
    """Answers pages from a set of existing candle times; `faults` are raised first, one per call. A small
    exchange model: `cap` rows per answer at most (the oldest, or the newest with `newest_first`),
    `latest`: it serves only its latest N times and answers an older `since` with them, `refuse_before`:
    a page starting before it is refused as too old (naming `named` candles), `omits`: it omits no-trade
    candles (so its answers prove voids)."""

    label = "fake X"
    grace_s = 0.0

    def __init__(self, times, limit: int, open_ended: bool = False, faults=(), answer=None, cap=None,
                 newest_first=False, latest=None, refuse_before=None, named=None, omits=False):
        self.times = sorted(times)
        self.limit = limit
        self.open_ended = open_ended
        self.faults = list(faults)
        self.answer = answer
        self.cap = cap
        self.newest_first = newest_first
        self.latest = latest
        self.refuse_before = refuse_before
        self.named = named
        self.omits_empty = omits
        self.pages: list[Page] = []

    def page_limit(self, since: int) -> int:
        return self.limit

    def fetch_page(self, page: Page, remaining_s):
        if self.faults:
            fault = self.faults.pop(0)
            if not isinstance(fault, TimeBound):
                self.pages.append(page)
            raise fault
        self.pages.append(page)
        if self.answer is not None:
            return self.answer(page)
        if self.refuse_before is not None and page.start < self.refuse_before:
            raise TooOld(ValueError("Candlestick too long ago"), self.named)
        avail = self.times if self.latest is None else self.times[-self.latest:]
        n = page.asked if self.cap is None else min(page.asked, self.cap)
        if self.latest is not None and avail and page.start < avail[0]:
            return rows(avail[:n])  # `since` ignored: the latest rows, as many as asked
        top = math.inf if self.open_ended else page.end
        sel = [t for t in avail if page.start <= t <= top]
        return rows(sel[-n:] if self.newest_first else sel[:n])


def run(transport, start, end, now=NOW, deadline=None, sleep=None):
    waits = []
    walk = RangeWalk(RetryPolicy(), sleep or waits.append)
    result = SourceResult()
    walk.walk(transport, [(start, end)], TF, now, deadline, result)
    return result, waits


@pytest.mark.parametrize("open_ended", [False, True])
@pytest.mark.parametrize("n", [1, 999, 1000, 1001, 2500])
def test_request_economy_and_exact_candles(n, open_ended):
    start, end = T0, T0 + (n - 1) * TF
    t = ScriptedTransport(range(T0 - 10 * TF, end + 10 * TF, TF), 1000, open_ended)
    res, waits = run(t, start, end)
    assert res.errors == [] and res.voids == [] and waits == []
    assert res.candles.times.tolist() == list(range(start, end + 1, TF))
    assert res.requests == len(t.pages) == math.ceil(n / 1000)


@pytest.mark.parametrize("open_ended", [False, True])
def test_an_old_outage_across_a_page_boundary_is_one_exact_void(open_ended):
    start, end = T0, T0 + 2499 * TF
    gap = set(range(T0 + 990 * TF, T0 + 1020 * TF, TF))
    t = ScriptedTransport([x for x in range(start, end + 1, TF) if x not in gap], 1000, open_ended)
    res, _ = run(t, start, end)
    assert res.voids == [(T0 + 990 * TF, T0 + 1019 * TF)] and len(res.candles) == 2500 - 30


def test_the_bot_answer_with_every_row_past_the_page_does_not_crash():
    # the bot source used to crash here (IndexError on an empty `known`); the rows past the page are kept
    t = ScriptedTransport(range(T0 + 1000 * TF, T0 + 3000 * TF, TF), 1000, open_ended=True)
    res, _ = run(t, T0, T0 + 1500 * TF)
    assert res.errors == [] and res.requests == 1
    assert res.candles.times.tolist() == list(range(T0 + 1000 * TF, T0 + 1501 * TF, TF))
    assert res.voids == [] and res.unavailable == []  # nothing before the first row is known empty


def test_transient_faults_are_retried_with_backoff_then_succeed():
    t = ScriptedTransport(range(T0, T0 + 10 * TF, TF), 1000,
                          faults=[Transient(OSError("503")), Transient(OSError("503"), rate_limited=True)])
    res, waits = run(t, T0, T0 + 9 * TF)
    assert res.errors == [] and len(res.candles) == 10
    assert (res.requests, res.retries, waits) == (3, 2, [0.2, 4.0])


def test_an_http_date_retry_after_is_waited_against_the_manual_clock():
    clock = ManualClock(1_700_000_000)
    retry_after = parse_retry_after(email.utils.formatdate(1_700_000_003, usegmt=True), clock())
    t = ScriptedTransport(range(T0, T0 + 10 * TF, TF), 1000, faults=[Transient(OSError("429"), retry_after)])
    res, waits = run(t, T0, T0 + 9 * TF)
    assert waits == [3.0] and res.retries == 1 and len(res.candles) == 10


def test_faults_that_last_give_the_hole_up_with_an_error():
    t = ScriptedTransport(range(T0, T0 + 10 * TF, TF), 1000, faults=[Transient(OSError("503"))] * 4)
    res, waits = run(t, T0, T0 + 9 * TF)
    assert len(res.candles) == 0 and res.voids == [] and res.requests == 4 and len(waits) == 3
    assert res.errors == [f"fake X {T0}..{T0 + 9 * TF}: gave up after retries: OSError: 503"]


def test_a_permanent_error_is_not_retried():
    t = ScriptedTransport(range(T0, T0 + 10 * TF, TF), 1000, faults=[ValueError("bad symbol")])
    res, waits = run(t, T0, T0 + 9 * TF)
    assert waits == [] and res.requests == 1
    assert res.errors == [f"fake X {T0}..{T0 + 9 * TF}: error: ValueError: bad symbol"]


def test_a_time_bound_from_the_transport_counts_no_request_and_stops():
    t = ScriptedTransport(range(T0, T0 + 10 * TF, TF), 1000, faults=[TimeBound("exchange detached")])
    res, _ = run(t, T0, T0 + 9 * TF)
    assert res.requests == 0 and res.errors == [f"fake X {T0}..{T0 + 9 * TF}: exchange detached"]


def test_an_expired_deadline_starts_no_request():
    t = ScriptedTransport(range(T0, T0 + 10 * TF, TF), 1000)
    res, _ = run(t, T0, T0 + 9 * TF, deadline=time.monotonic() - 1)
    assert t.pages == [] and res.requests == 0 and "time bound reached" in res.errors[0]


# ---------------------------------------------------------------------------------------------- exchanges
# The issue-13 cases on the scripted exchange model: a short or empty page is never evidence, a cut page is
# asked again, a reach is learned from an answer or a refusal, rows outside a page are no error.

LATEST = expected_latest_closed_time(NOW, TF)


def every(start, end):
    return list(range(start, end + 1, TF))


@pytest.mark.parametrize("newest_first", [False, True])
def test_a_page_cut_below_the_stated_limit_is_asked_again_and_the_cap_learned(newest_first):
    # OKX history-candles: 300 asked, 100 served (the newest of the range); Binance-like: the oldest
    start, end = T0, T0 + 2999 * TF
    t = ScriptedTransport(every(T0 - 10 * TF, end + 10 * TF), 300, cap=100, newest_first=newest_first)
    res, _ = run(t, start, end)
    assert res.errors == [] and res.voids == [] and res.unavailable == []
    assert res.candles.times.tolist() == every(start, end)
    assert res.requests <= math.ceil(3000 / 100) + 3  # once the cap is learned, pages ask 100


def test_a_short_page_is_no_void():
    # the exchange serves everything, but the newest 30 candles of the hole are not published yet: a
    # short last page must not record them void (they are young); nor an empty page older than that
    start, end = LATEST - 499 * TF, LATEST
    t = ScriptedTransport(every(T0, LATEST - 30 * TF), 1000)
    res, _ = run(t, start, end)
    assert res.errors == [] and res.voids == []
    assert res.candles.times.tolist() == every(start, LATEST - 30 * TF)


def test_a_pre_listing_hole_is_no_error_no_void_and_no_unavailable():
    listing = T0 + 700 * TF
    t = ScriptedTransport(every(listing, T0 + 5000 * TF), 1000)
    res, _ = run(t, T0, T0 + 1999 * TF)
    assert res.errors == [] and res.voids == [] and res.unavailable == []
    assert res.candles.times.tolist() == every(listing, T0 + 1999 * TF)


@pytest.mark.parametrize("open_ended", [False, True])
def test_an_outage_at_the_start_of_a_hole_is_seen_from_both_sides_by_one_answer(open_ended):
    # the candle before the hole exists (it is the stored neighbour): the re-ask includes it
    start, end = T0 + 100 * TF, T0 + 1500 * TF
    t = ScriptedTransport([x for x in every(T0, end + 10 * TF) if not start <= x < start + 40 * TF], 1000,
                          open_ended)
    res, _ = run(t, start, end)
    assert res.errors == [] and res.voids == [(start, start + 39 * TF)]
    assert res.candles.times.tolist() == every(start + 40 * TF, end)


def test_latest_n_only_learns_the_reach_and_reports_the_rest_unavailable_not_void():
    # Kraken: the latest 720 (forming included), whatever `since` says; "rows, none inside" is no error
    forming = LATEST + TF
    t = ScriptedTransport(every(T0, forming), 720, open_ended=True, latest=720)
    res, _ = run(t, LATEST - 1999 * TF, LATEST)
    oldest = forming - 719 * TF
    assert res.errors == [] and res.voids == []
    assert res.candles.times.tolist() == every(oldest, LATEST)
    assert res.unavailable == [(LATEST - 1999 * TF, oldest - TF)]
    assert res.reach is not None and res.reach.candles == 720 and res.reach.oldest(NOW, TF) == oldest


def test_a_known_reach_is_never_asked_beyond():
    forming = LATEST + TF
    t = ScriptedTransport(every(T0, forming), 5000, latest=5000)
    walk = RangeWalk(RetryPolicy(), lambda s: None)
    result = SourceResult()
    walk.walk(t, [(LATEST - 9999 * TF, LATEST)], TF, NOW, None, result, reach=Reach(5000, 0.0, "known"))
    oldest = forming - 4999 * TF
    assert all(p.start >= oldest for p in t.pages) and len(t.pages) == 1
    assert result.unavailable == [(LATEST - 9999 * TF, oldest - TF)] and result.reach is None
    assert result.candles.times.tolist() == every(oldest, LATEST) and result.voids == []


@pytest.mark.parametrize("named", [10_000, None])
def test_a_range_refused_as_too_old_is_unavailable_and_the_recent_part_filled(named):
    # Gate: a 400 "too long ago" for `from` older than its latest 10000 points
    forming = LATEST + TF
    oldest = forming - 9999 * TF
    t = ScriptedTransport(every(T0, forming), 1000, refuse_before=oldest, named=named)
    start = LATEST - 12_499 * TF
    res, _ = run(t, start, LATEST)
    assert res.errors == [] and res.voids == [] and len(res.unavailable) == 1
    first = res.unavailable[0][1] + TF  # named: exactly the reach; not named: past each refused page
    assert res.unavailable[0][0] == start and (first == oldest if named else oldest <= first < oldest + 1000 * TF)
    assert res.candles.times.tolist() == every(first, LATEST)


def test_an_exchange_that_omits_no_trade_candles_proves_a_quiet_stretch_void():
    start, end = T0, T0 + 999 * TF
    quiet = set(every(T0 + 900 * TF, T0 + 999 * TF))  # no trade at the end of the hole: no row either side
    t = ScriptedTransport([x for x in every(T0, end) if x not in quiet], 1000, omits=True)
    res, _ = run(t, start, end)
    assert res.voids == [(T0 + 900 * TF, end)]
    t = ScriptedTransport([x for x in every(T0, end) if x not in quiet], 1000, omits=False)
    assert run(t, start, end)[0].voids == []  # the same answer from an exchange that sends every candle


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_property_every_stored_candle_is_true_every_void_empty_every_unavailable_out_of_reach(data):
    forming = LATEST + TF
    span = 3000
    base = LATEST - span * TF
    listing = data.draw(st.integers(0, span // 2), label="listing") * TF + base
    outages = data.draw(st.lists(st.tuples(st.integers(0, span), st.integers(1, 400)), max_size=4), label="out")
    truth = {t for t in every(listing, forming)
             if not any(base + a * TF <= t < base + (a + n) * TF for a, n in outages)}
    limit = data.draw(st.sampled_from([50, 100, 300, 1000]), label="limit")
    cap = data.draw(st.one_of(st.none(), st.sampled_from([30, 100])), label="cap")
    latest = data.draw(st.one_of(st.none(), st.integers(200, 2000)), label="latest")
    open_ended = data.draw(st.booleans(), label="open_ended") or latest is not None
    t = ScriptedTransport(sorted(truth) if latest is None else [x for x in truth if x >= forming - (latest - 1) * TF],
                          limit, open_ended, cap=cap, latest=latest,
                          # newest-first from an open `since` is what "latest N only" looks like: bounded only
                          newest_first=not open_ended and data.draw(st.booleans(), label="newest_first"))
    served = sorted(t.times)
    # the one world the answers cannot tell from "serves only its latest N": a full page of rows running
    # from right after an outage to now is what a latest-N exchange sends too (documented ambiguity)
    assume(latest is not None or not any(len([x for x in served if x >= base + (a + n) * TF]) in (limit, cap)
                                         for a, n in outages))
    holes = sorted(data.draw(st.lists(st.tuples(st.integers(0, span - 1), st.integers(0, 600)), min_size=1,
                                      max_size=3), label="holes"))
    wanted, cursor = [], base
    for a, n in holes:  # disjoint, ascending
        s = max(cursor, base + a * TF)
        e = min(LATEST, s + n * TF)
        if s <= e:
            wanted.append((s, e))
            cursor = e + 2 * TF
    walk = RangeWalk(RetryPolicy(), lambda s: None)
    res = SourceResult()
    walk.walk(t, wanted, TF, NOW, None, res)
    got = set(res.candles.times.tolist())
    assert got <= truth
    void_times = times_of(res.voids)
    assert not void_times & truth
    assert void_times <= {x for s, e in wanted for x in every(s, e)}
    reach_oldest = None if latest is None else forming - (latest - 1) * TF
    for _s, e in res.unavailable:
        assert reach_oldest is not None and e < reach_oldest
    servable = {x for s, e in wanted for x in every(s, e)
                if x in truth and (reach_oldest is None or x >= reach_oldest)}
    assert servable <= got
    assert res.errors == []


def test_weekly_pages_step_on_the_monday_grid():
    week = 604_800
    monday = 1_699_833_600  # 2023-11-13, a Monday
    now = monday + 3 * 86400
    times = list(range(monday - 300 * week, monday, week))
    t = ScriptedTransport([], 1000, answer=lambda page: [[x * 1000, 1.0, 2.0, 0.5, 1.5, 1.0] for x in times
                                                         if page.start <= x <= page.end])
    walk = RangeWalk(RetryPolicy(), lambda s: None)
    res = SourceResult()
    walk.walk(t, [(monday - 200 * week, monday - week)], week, now, None, res)
    assert res.errors == [] and res.candles.times.tolist() == times[100:]
    assert all((p.start - 4 * 86400) % week == 0 for p in t.pages)
