"""The range walk's pure parts (page plan, answer classification, void evidence, Retry-After, retry policy)
and the walk itself over a scripted in-memory transport: no network, no sleeping, a manual clock."""
from __future__ import annotations

import email.utils
import math
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tradecanvas_ext.domain import expected_latest_closed_time
from tradecanvas_ext.domain.clock import ManualClock
from tradecanvas_ext.sources.base import SourceResult
from tradecanvas_ext.sources.range_walk import (
    VOID_MIN_AGE_S,
    Answer,
    Page,
    RangeWalk,
    RetryPolicy,
    TimeBound,
    Transient,
    classify,
    clean_rows,
    hold_back_unfinal,
    newest_void,
    parse_retry_after,
    plan_page,
    row_times,
    void_evidence,
)

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
def test_pages_tile_the_hole_in_ceil_n_over_span(n, limit, open_ended):
    start, end = T0, T0 + (n - 1) * TF
    pages, s = [], start
    while s <= end:
        page = plan_page(s, end, TF, limit, open_ended)
        pages.append(page)
        s = page.end + TF
    assert [p.start for p in pages] == [start] + [p.end + TF for p in pages[:-1]]  # contiguous, no overlap
    assert pages[-1].end == end
    span = max(1, limit - 1) if open_ended else limit
    assert len(pages) == math.ceil(n / span)
    for p in pages:
        candles = (p.end - p.start) // TF + 1
        assert candles <= span
        assert p.asked == (limit if open_ended else candles)  # open-ended: one row past the page


# ---------------------------------------------------------------------------------------------- classify

PAGE = Page(T0, T0 + 99 * TF, 100)


@given(present=st.sets(st.integers(0, 99), max_size=99))
def test_a_short_past_page_confirms_exactly_its_missing_times(present):
    seen = np.array(sorted(T0 + i * TF for i in present), dtype=np.int64)
    v = classify(PAGE, len(seen), seen, TF, CUTOFF)
    assert v.answer is Answer.SHORT and v.next_start == PAGE.end + TF
    assert times_of(v.empty) == set(range(PAGE.start, PAGE.end + 1, TF)) - set(seen.tolist())


def test_a_short_page_reaching_young_candles_confirms_nothing_by_itself():
    young_end = (int(CUTOFF) // TF) * TF  # closes after the cutoff
    page = Page(young_end - 9 * TF, young_end, 10)
    v = classify(page, 3, np.array([page.start, page.start + TF, page.start + 2 * TF]), TF, CUTOFF)
    assert v.answer is Answer.SHORT and v.empty == ()


def test_a_full_answer_that_stops_short_asks_again_after_its_last_row():
    seen = np.arange(T0, T0 + 60 * TF, TF)  # 100 rows (duplicates), 60 distinct times
    v = classify(PAGE, 100, seen, TF, CUTOFF)
    assert (v.answer, v.next_start, v.empty) == (Answer.STOPS_SHORT, T0 + 60 * TF, ())


def test_a_full_answer_with_every_row_past_the_page_end_moves_on():
    # the bot source used to crash here (IndexError on an empty `known`)
    seen = np.arange(PAGE.end + TF, PAGE.end + 101 * TF, TF)
    v = classify(PAGE, 100, seen, TF, CUTOFF)
    assert (v.answer, v.next_start, v.empty) == (Answer.FULL, PAGE.end + TF, ())


def test_a_full_answer_with_no_row_from_the_page_start_gives_the_hole_up():
    v = classify(PAGE, 100, np.empty(0, dtype=np.int64), TF, CUTOFF)
    assert (v.answer, v.next_start) == (Answer.NONE_INSIDE, None)


@given(n_rows=st.integers(0, 300), offsets=st.sets(st.integers(-50, 250), max_size=120))
def test_every_verdict_moves_forward_or_stops(n_rows, offsets):
    seen = np.array(sorted(T0 + i * TF for i in offsets if i >= 0), dtype=np.int64)
    v = classify(PAGE, n_rows, seen, TF, CUTOFF)
    assert v.next_start is None or v.next_start > PAGE.start
    assert times_of(v.empty) <= set(range(PAGE.start, PAGE.end + 1, TF)) - set(seen.tolist())


# ---------------------------------------------------------------------------------------------- voids


@given(now=st.floats(1e9, 2e9), tf=st.sampled_from([60, 300, 3600, 86400]))
def test_newest_void_is_the_newest_aligned_time_closed_before_the_cutoff(now, tf):
    nv = newest_void(now, tf)
    cutoff = now - max(VOID_MIN_AGE_S, tf)
    assert nv % tf == 0
    assert nv + tf <= cutoff < nv + 2 * tf


@settings(max_examples=200)
@given(present=st.sets(st.integers(0, 199), max_size=200), young=st.integers(0, 10))
def test_voids_are_the_old_missing_times_with_rows_on_both_sides(present, young):
    now = T0 + (200 + young) * TF + 30  # the newest `young`-ish candles are too young to be voids
    start, end = T0, T0 + 199 * TF
    seen = np.array(sorted(T0 + i * TF for i in present), dtype=np.int64)
    voids = void_evidence(start, end, seen, [], TF, now)
    got = times_of(voids)
    have = set(seen.tolist())
    expected = {t for t in range(start, end + 1, TF)
                if t not in have and len(seen) and seen[0] < t < seen[-1] and t <= newest_void(now, TF)}
    assert got == expected
    assert all(s <= e for s, e in voids)


def test_confirmed_empty_ranges_are_clipped_to_the_hole_and_the_age():
    now = T0 + 50 * TF + 30
    voids = void_evidence(T0, T0 + 49 * TF, np.empty(0, dtype=np.int64), [(T0 - 5 * TF, T0 + 49 * TF)], TF, now)
    assert voids == [(T0, newest_void(now, TF))]


def test_rows_past_the_hole_give_evidence_but_never_a_void_outside_it():
    seen = np.array([T0, T0 + 10 * TF, T0 + 30 * TF])
    assert void_evidence(T0, T0 + 5 * TF, seen, [], TF, NOW) == [(T0 + TF, T0 + 5 * TF)]


# ---------------------------------------------------------------------------------------------- rows


def test_rows_are_parsed_once_each_and_garbage_is_skipped():
    raw = [*rows([T0 + TF, T0]), [T0 * 1000 + 1, 1, 1, 1, 1, 1], ["x"], [], [(T0 + 2 * TF) * 1000, 1, 2],
           [(T0 + TF) * 1000, 9.0, 9.0, 9.0, 9.0, 9.0]]
    assert row_times(raw, T0, TF).tolist() == [T0, T0 + TF]
    assert row_times(raw, T0 + TF, TF).tolist() == [T0 + TF]
    batch = clean_rows(raw, T0, T0 + TF, TF, NOW)
    assert batch.times.tolist() == [T0, T0 + TF] and float(batch.open[1]) == 9.0  # the last row wins


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
    """Answers pages from a set of existing candle times; `faults` are raised first, one per call."""

    label = "fake X"
    grace_s = 0.0

    def __init__(self, times, limit: int, open_ended: bool = False, faults=(), answer=None):
        self.times = sorted(times)
        self.limit = limit
        self.open_ended = open_ended
        self.faults = list(faults)
        self.answer = answer
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
        top = math.inf if self.open_ended else page.end
        return rows([t for t in self.times if page.start <= t <= top][:page.asked])


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
    assert res.requests == len(t.pages) == math.ceil(n / (999 if open_ended else 1000))


@pytest.mark.parametrize("open_ended", [False, True])
def test_an_old_outage_across_a_page_boundary_is_one_exact_void(open_ended):
    start, end = T0, T0 + 2499 * TF
    gap = set(range(T0 + 990 * TF, T0 + 1020 * TF, TF))
    t = ScriptedTransport([x for x in range(start, end + 1, TF) if x not in gap], 1000, open_ended)
    res, _ = run(t, start, end)
    assert res.voids == [(T0 + 990 * TF, T0 + 1019 * TF)] and len(res.candles) == 2500 - 30


def test_the_bot_answer_with_every_row_past_the_page_does_not_crash():
    page_rows = 999

    def answer(page):  # the exchange skips the first page entirely: 1000 rows, all after it
        first = page.start + page_rows * TF if page.start == T0 else page.start
        return rows(range(first, first + 1000 * TF, TF))

    t = ScriptedTransport([], 1000, open_ended=True, answer=answer)
    res, _ = run(t, T0, T0 + 1500 * TF)
    assert res.errors == []
    assert res.candles.times.tolist() == list(range(T0 + page_rows * TF, T0 + 1501 * TF, TF))
    assert res.voids == []  # nothing before the first row is known empty


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
