"""The one paged fetch of holes every range source uses: page planning, reading answers (a short or empty
page is an answer, never evidence; a cut page is asked again), void evidence, history reach (known, or
learned from an answer or a refusal), retry policy (backoff, Retry-After, deadline) and result bookkeeping,
over a `Transport` that makes the calls.

It must never talk to an exchange itself, raise out of `walk`, ask beyond a hole's neighbour candles or
older than the reach, or call a missing candle a void without one answer's evidence. It holds no lock: a transport serialises its own calls.
"""
from __future__ import annotations

import email.utils
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

import numpy as np

from ..domain import (
    MAX_TIME,
    CandleBatch,
    align_down,
    expected_latest_closed_time,
    list_holes,
    merge_ranges,
    unaligned,
)
from .base import SourceResult, fetch_holes_in_order
from .reach import Reach, reach_from_oldest

log = logging.getLogger(__name__)

VOID_MIN_AGE_S = 120  # missing data younger than max(this, tf) may still be published: never a void
T = TypeVar("T")


# ---------------------------------------------------------------------------------------------- failures
class TimeBound(Exception):
    """No room for another request or wait (deadline, a busy or detached exchange): no request was made."""


class TooOld(Exception):
    """The exchange refused a page as older than it serves (Gate's "too long ago"); `candles`: the reach it
    named (its latest N candles), when it named one."""

    def __init__(self, cause: Exception, candles: int | None = None):
        super().__init__(f"{type(cause).__name__}: {cause}")
        self.cause = cause
        self.candles = candles


class Transient(Exception):
    """A transport's word that its call failed in a way a retry may cure; `cause` is the original error."""

    def __init__(self, cause: Exception, retry_after_s: float | None = None, rate_limited: bool = False):
        super().__init__(f"{type(cause).__name__}: {cause}")
        self.cause = cause
        self.retry_after_s = retry_after_s
        self.rate_limited = rate_limited


def parse_retry_after(raw: str | None, now: float) -> float | None:
    """Seconds to wait from a Retry-After value (delta-seconds or an HTTP date, read against `now`), or None."""
    if raw is None:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        return max(0.0, email.utils.parsedate_to_datetime(raw).timestamp() - now)
    except (TypeError, ValueError, OverflowError):
        return None


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long a transient failure is retried."""

    max_tries: int = 4  # attempts per call (markets or one page)
    backoff_base_s: float = 0.2
    backoff_cap_s: float = 4.0
    rate_limit_base_s: float = 2.0  # first wait after a rate-limit answer without a Retry-After
    rate_limit_cap_s: float = 16.0
    retry_after_cap_s: float = 30.0  # a longer Retry-After is not waited for: the hole is left for later

    def wait_s(self, attempt: int, failure: Transient) -> float | None:
        """The wait before attempt `attempt + 1`, or None to give up now."""
        if attempt >= self.max_tries:
            return None
        if failure.retry_after_s is not None:
            return None if failure.retry_after_s > self.retry_after_cap_s else failure.retry_after_s
        if failure.rate_limited:
            return min(self.rate_limit_cap_s, self.rate_limit_base_s * 2 ** (attempt - 1))
        return min(self.backoff_cap_s, self.backoff_base_s * 2 ** (attempt - 1))


# ---------------------------------------------------------------------------------------------- pages
@dataclass(frozen=True)
class Page:
    """One request: candles [start, end] wanted, `asked` rows requested."""

    start: int
    end: int
    asked: int


def plan_page(start: int, hole_end: int, tf: int, limit: int, open_ended: bool) -> Page:
    """The next page of a hole: at most `limit` candles from `start`. A bounded transport asks exactly the
    page's candles; an open-ended one (no end bound) asks `limit` rows from `start`."""
    end = min(hole_end, start + (max(1, limit) - 1) * tf)
    return Page(start, end, limit if open_ended else (end - start) // tf + 1)


def void_evidence(page_start: int, page_end: int, rows: np.ndarray, tf: int, now: float, oldest: int | None,
                  omits_empty: bool, complete: bool) -> list[tuple[int, int]]:
    """The times ONE answer to the page [page_start, page_end] proves empty (contract section 5): those with
    rows of this answer on both sides, or — from an exchange known to omit candles without trades, when
    the answer was `complete` (fewer rows than asked: nothing was cut) — every time of the page it did not
    send; never a time younger than `newest_void(now)` nor older than `oldest` (the reach). `rows`: the
    answer's sorted unique aligned times. A short page, an empty page or an error proves nothing else."""
    rows = np.asarray(rows, dtype=np.int64)
    if omits_empty and complete:
        lo, hi = page_start, page_end
        rows = rows[(rows >= lo) & (rows <= hi)]
        found = [(h.start, h.end) for h in list_holes(rows, lo, hi, tf)]
    elif len(rows) >= 2:
        found = [(h.start, h.end) for h in list_holes(rows, int(rows[0]), int(rows[-1]), tf)]
    else:
        return []
    lo = page_start if oldest is None else max(page_start, oldest)
    hi = newest_void(now, tf)
    clipped = [(max(s, lo), min(e, hi)) for s, e in found]
    return [(s, e) for s, e in clipped if s <= e]


def void_cutoff(now: float, tf: int) -> float:
    """A candle closing after this may still be published: its absence proves nothing yet."""
    return now - max(VOID_MIN_AGE_S, tf)


def newest_void(now: float, tf: int) -> int:
    """The newest candle time old enough to be called a void at `now`."""
    return align_down(void_cutoff(now, tf) - tf, tf)


class PageRows:
    """One answer's well-formed aligned rows, parsed once: times (s) and the five values as sent, in the
    answer's order. Well-formed: at least 6 fields, the time a whole number of seconds in ms on the grid; a
    value that is no number becomes NaN (the service's validation rejects that row)."""

    __slots__ = ("times", "values")

    def __init__(self, raw, tf: int):
        times, values = _parsed(raw)
        keep = ~unaligned(times, tf)
        self.times, self.values = times[keep], values[keep]

    def times_from(self, since: int) -> np.ndarray:
        """Sorted unique times at or after `since`: what the exchange says it has."""
        return np.unique(self.times[self.times >= since])

    def clean(self, start: int, end: int, tf: int, now: float) -> CandleBatch:
        """Rows inside [start, end] and closed, one per time (the last wins), ascending."""
        t = self.times
        keep = (t >= start) & (t <= end) & (t + tf <= now)
        v = self.values[keep]
        return CandleBatch(t[keep], v[:, 0], v[:, 1], v[:, 2], v[:, 3], v[:, 4]).dedupe_sorted()


_EXACT = 2.0**53  # times in ms beyond this are not exact in a float: the row-by-row parse decides


def _parsed(raw) -> tuple[np.ndarray, np.ndarray]:
    """(times in s, (n, 5) values) of the rows whose time is whole seconds in ms. One numpy conversion for
    a regular answer (what ccxt parses); row by row only when a row is not a plain sequence of numbers."""
    raw = raw or ()
    try:
        a = np.array([r[:6] for r in raw], dtype=np.float64)
    except (TypeError, ValueError, IndexError, KeyError, OverflowError):
        a = None
    if a is not None and a.ndim == 2 and a.shape[1] == 6 and bool(np.all(np.abs(a[:, 0]) < _EXACT)):
        t_ms = a[:, 0]
        whole = np.isfinite(t_ms) & (np.trunc(t_ms) % 1000 == 0)
        return (np.trunc(t_ms[whole]).astype(np.int64) // 1000), a[whole, 1:6]
    times, values = [], []
    for r in raw:
        try:
            t_ms = int(r[0])
        except (TypeError, ValueError, IndexError, KeyError, OverflowError):
            continue
        if len(r) >= 6 and not t_ms % 1000 and abs(t_ms // 1000) <= MAX_TIME:  # past it: no candle time
            times.append(t_ms // 1000)
            values.append([_num(x) for x in r[1:6]])
    return np.asarray(times, dtype=np.int64), np.asarray(values, dtype=np.float64).reshape(-1, 5)


def row_times(raw, since: int, tf: int) -> np.ndarray:
    """Sorted unique times of the well-formed aligned rows at or after `since`: what the exchange says it has."""
    return PageRows(raw, tf).times_from(since)


def clean_rows(raw, start: int, end: int, tf: int, now: float) -> CandleBatch:
    """Rows inside [start, end], aligned and closed, one per time (the last wins), ascending."""
    return PageRows(raw, tf).clean(start, end, tf, now)


def _num(x) -> float:
    try:
        return float(x)
    except (TypeError, ValueError, OverflowError):
        return math.nan  # the service's validation rejects the row


def hold_back_unfinal(page: CandleBatch, seen: np.ndarray, tf: int, now: float, grace_s: float) -> CandleBatch:
    """The just-closed candle may still change until a newer row came or the late-candle grace passed: it
    is left for a later fetch, never stored provisional."""
    last_closed = expected_latest_closed_time(now, tf)
    if (len(page) and len(seen) and int(seen[-1]) == last_closed and int(page.times[-1]) == last_closed
            and now < last_closed + tf + grace_s):
        return page.take(page.times < last_closed)
    return page


# ---------------------------------------------------------------------------------------------- transport
class Transport(Protocol):
    """One series on one exchange connection. Its calls raise `Transient` for what a retry may cure,
    `TimeBound` when it made no request, `TooOld` for a range refused as too old, anything else for a
    permanent failure."""

    label: str  # "ccxt binance:spot:BTC/USDT:1m": the start of every error message
    open_ended: bool  # a page asks `limit` rows from its start, without an end bound
    grace_s: float  # the late-candle grace for the just-closed candle (0: none)
    omits_empty: bool  # the exchange sends no candle for a time without trades (its answers prove voids)

    def page_limit(self, since: int) -> int:
        """Rows one request returns at most, from `since` on."""
        ...

    def fetch_page(self, page: Page, remaining_s: float | None) -> list:
        """The raw rows of one page; `remaining_s` until the deadline (None: no deadline)."""
        ...


@dataclass
class _Ask:
    """Times [lo, hi] of a hole still unknown. `left`: a row time just before lo the page starts from (so
    one answer can hold rows on both sides of what is missing); `right`: a known row just after hi;
    `proof`: a time whose row in this answer proves the answer before it was cut at its `parent_rows`."""

    lo: int
    hi: int
    left: int | None = None
    right: int | None = None
    proof: int | None = None
    parent_rows: int | None = None
    newest_kept: bool = False  # the answer before this one ended exactly at its page end: maybe cut newest-first


@dataclass
class WalkState:
    """What one walk learns and uses across its holes: the reach, and a page cap below the stated limit."""

    reach: Reach | None
    learned: Reach | None = None
    cap: int | None = None

    def oldest(self, now: float, tf: int) -> int | None:
        return None if self.reach is None else self.reach.oldest(now, tf)

    def learn(self, reach: Reach) -> None:
        self.reach = self.learned = reach


@dataclass
class _Found:
    batches: list[CandleBatch]
    voids: list[tuple[int, int]]
    unavailable: list[tuple[int, int]]
    quiet_young: list[tuple[int, int]] = field(default_factory=list)


class RangeWalk:
    """Fetches holes page by page through a transport, retrying per `policy`; `sleep` is injectable."""

    def __init__(self, policy: RetryPolicy = RetryPolicy(), sleep: Callable[[float], None] = time.sleep):
        self.policy = policy
        self._sleep = sleep

    def retrying(self, call: Callable[[float | None], T], deadline: float | None, result: SourceResult,
                 label: str) -> T:
        """call(remaining_s), retried on `Transient`; raises TimeBound, the last `Transient` when retries did
        not cure it, or a permanent error as it came. Counts result.retries."""
        failure: Transient | None = None
        for attempt in range(1, self.policy.max_tries + 1):
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise TimeBound("time bound reached" + (f" (last error: {failure})" if failure else ""))
            try:
                return call(remaining)
            except Transient as exc:
                failure = exc
            wait = self.policy.wait_s(attempt, failure)
            if wait is None:
                raise failure
            if deadline is not None and time.monotonic() + wait >= deadline:
                raise TimeBound(f"time bound reached (last error: {failure})")
            result.retries += 1
            log.info("%s: %s; retry %d in %.2fs", label, failure, attempt, wait)
            self._sleep(wait)
        raise AssertionError("unreachable")  # pragma: no cover

    def walk(self, transport: Transport, wanted: list[tuple[int, int]], tf: int, now: float,
             deadline: float | None, result: SourceResult, stop_reason: str = "time bound reached",
             reach: Reach | None = None) -> None:
        """Fetch the (start, end) ranges oldest first into `result` (candles, voids, unavailable ranges,
        a learned reach, errors, requests). Times older than the reach (given, or learned on the way) are
        not asked: they are reported unavailable."""
        state = WalkState(reach)
        unavailable: list[tuple[int, int]] = []
        quiet: list[tuple[int, int]] = []

        def one_hole(start: int, end: int) -> tuple[CandleBatch, list[tuple[int, int]], bool]:
            found = _Found([], [], [])
            finished = self._hole(transport, start, end, tf, now, deadline, result, state, found)
            unavailable.extend(found.unavailable)
            quiet.extend(found.quiet_young)
            return CandleBatch.concat(found.batches), found.voids, finished

        fetch_holes_in_order(wanted, one_hole, result, tf, transport.label, stop_reason)
        result.unavailable = merge_ranges(unavailable, tf)
        result.reach = state.learned
        result.quiet_young = merge_ranges(quiet, tf)
        if result.unavailable:  # a void never lies in what the exchange does not serve
            result.voids = [(s, e) for s, e in result.voids
                            if not any(us <= s and e <= ue for us, ue in result.unavailable)]

    def _fetch(self, transport: Transport, page: Page, deadline: float | None, result: SourceResult) -> list:
        def one(remaining: float | None) -> list:
            made = True  # a TimeBound means no request left this process
            try:
                return transport.fetch_page(page, remaining)
            except TimeBound:
                made = False
                raise
            finally:
                if made:
                    result.requests += 1

        return self.retrying(one, deadline, result, transport.label)

    def _hole(self, transport: Transport, start: int, end: int, tf: int, now: float, deadline: float | None,
              result: SourceResult, state: WalkState, found: _Found) -> bool:
        """Walk one hole into `found`; False when time ran out. An error retries did not cure ends this hole
        only. Every ask either gets rows (and shrinks) or ends; a missing stretch is re-asked with the known
        row before it, so an outage across a page boundary is still seen from both sides in one answer."""
        latest = expected_latest_closed_time(now, tf)
        stack = [self._first_ask(transport, start, end, tf, latest, state.oldest(now, tf))]
        while stack:
            ask = stack.pop()
            oldest = state.oldest(now, tf)
            if oldest is not None and ask.lo < oldest:  # older than the exchange serves
                found.unavailable.append((ask.lo, min(ask.hi, oldest - tf)))
                ask = _Ask(max(ask.lo, oldest), ask.hi, None, ask.right)
                if ask.lo > ask.hi:
                    continue
            use_left = ask.left is not None and (oldest is None or ask.left >= oldest)
            ask_lo = ask.left if use_left else ask.lo
            limit = transport.page_limit(ask_lo)
            if state.cap is not None:
                limit = min(limit, state.cap)
            page = plan_page(ask_lo, ask.hi, tf, limit, transport.open_ended)
            if (ask.right is not None and not transport.open_ended and page.end == ask.hi
                    and page.asked < limit):  # one more row: the known one after the stretch
                page = Page(page.start, ask.right, page.asked + 1)
            try:
                raw = self._fetch(transport, page, deadline, result)
            except TimeBound as stop:
                result.errors.append(f"{transport.label} {ask.lo}..{end}: {stop}")
                return False
            except TooOld as refused:
                new = (Reach(refused.candles, now) if refused.candles
                       else reach_from_oldest(page.end + tf, now, tf, now))
                if oldest is not None and new.oldest(now, tf) <= oldest or new.oldest(now, tf) <= ask.lo:
                    new = reach_from_oldest(page.end + tf, now, tf, now)  # always past what was refused
                state.learn(new)
                log.info("%s: %s..%s refused as too old: reach %d candles", transport.label, page.start,
                         page.end, new.candles)
                stack.append(ask)
                continue
            except Exception as exc:
                record_error(result, transport.label, ask.lo, end, exc)
                return True
            rows = PageRows(raw, tf)
            seen = rows.times_from(page.start)
            complete = len(raw) < page.asked
            found.batches.append(hold_back_unfinal(rows.clean(max(start, ask.lo), end, tf, now), seen, tf,
                                                   now, transport.grace_s))
            found.voids.extend((max(s, start), min(e, end)) for s, e in void_evidence(
                page.start, page.end, seen, tf, now, oldest, transport.omits_empty, complete)
                if s <= end and e >= start)
            if transport.omits_empty and complete:  # answered without: not a void yet (too young)
                young = max(newest_void(now, tf) + tf, start, page.start)
                found.quiet_young.extend((h.start, h.end) for h in list_holes(seen, young, min(end, page.end), tf))
            covered = min(ask.hi, page.end)
            inside = seen[(seen >= ask.lo) & (seen <= end)]
            if (not complete and len(seen) and int(seen[0]) > covered and int(seen[-1]) >= latest
                    and (oldest is None or int(seen[0]) > oldest)):
                # a full answer of only its latest rows, whatever `since` said: that is all it serves
                state.learn(reach_from_oldest(int(seen[0]), now, tf, now))
                log.info("%s: serves only its latest %d candles", transport.label, state.reach.candles)
                if int(seen[0]) > ask.lo:
                    found.unavailable.append((ask.lo, min(ask.hi, int(seen[0]) - tf)))
                    ask = _Ask(int(seen[0]), ask.hi, None, ask.right)
                    if ask.lo > ask.hi:
                        continue
            if ask.proof is not None and ask.parent_rows and ask.proof in seen.tolist():
                # the answer before this one was cut at its row count: ask no more per page from now on
                state.cap = min(ask.parent_rows, state.cap or ask.parent_rows)
            elif (transport.open_ended and ask.newest_kept and ask.parent_rows and ask.parent_rows < limit
                  and ask.left not in seen.tolist() and not len(seen[(seen >= ask.lo) & (seen <= ask.hi)])):
                # open-ended (the window is `limit` rows from `since`, we cannot bound it): the stretch before
                # a cut answer came back as the same newest rows, so ask it again in pages of the cut
                state.cap = ask.parent_rows
                stack.append(ask)
                continue
            stack.extend(reversed(self._next_asks(ask, page, seen, inside, covered, len(raw), tf, state, now)))
        return True

    @staticmethod
    def _first_ask(transport: Transport, start: int, end: int, tf: int, latest: int, oldest: int | None) -> _Ask:
        """The whole hole, with its neighbour candles when they fit in the pages it needs anyway: then one
        answer can see an outage at either edge from both sides, at no extra request."""
        n = (end - start) // tf + 1
        limit = max(1, transport.page_limit(start))
        if n + 1 > limit * math.ceil(n / limit) or (oldest is not None and start - tf < oldest) or start - tf < 0:
            return _Ask(start, end)
        return _Ask(start, end, start - tf, end + tf if end + tf <= latest else None)

    @staticmethod
    def _next_asks(ask: _Ask, page: Page, seen: np.ndarray, inside: np.ndarray, covered: int, n_raw: int,
                   tf: int, state: WalkState, now: float) -> list[_Ask]:
        """What is still unknown of `ask` after one answer, oldest first."""
        if not len(inside) or int(inside[0]) > covered:
            if ask.left is not None and ask.left in seen.tolist() and n_raw >= page.asked:  # the known
                # row(s) used the page up: again without
                return [_Ask(ask.lo, ask.hi, None, ask.right)]
            if len(inside):  # rows only past the page: go on after them
                last = int(inside[-1])
                return [_Ask(last + tf, ask.hi, last, ask.right)] if last < ask.hi else []
            return [_Ask(covered + tf, ask.hi, None, ask.right)] if covered < ask.hi else []
        first, last = int(inside[0]), int(inside[-1])
        out = []
        anchored = ask.left is not None and ask.left in seen.tolist()
        if first > ask.lo and not anchored:  # nothing seen of the stretch before `first`: ask it again
            left = ask.lo - tf
            oldest = state.oldest(now, tf)
            out.append(_Ask(ask.lo, first - tf, left if oldest is None or left >= oldest else None, first,
                            first - tf, n_raw, int(seen[-1]) == page.end))
        if last >= ask.hi:
            return out
        if last >= covered:  # the answer reached its page end
            out.append(_Ask(last + tf, ask.hi, None, ask.right))
        else:  # it stopped inside its page: go on from its last row
            out.append(_Ask(last + tf, ask.hi, last, ask.right, last + tf, n_raw))
        return out


def record_error(result: SourceResult, label: str, start: int, end: int, exc: Exception) -> None:
    """One error line for a range: what failed, and whether retries were spent on it first."""
    if isinstance(exc, Transient):
        message = f"{label} {start}..{end}: gave up after retries: {exc}"
    else:
        message = f"{label} {start}..{end}: error: {type(exc).__name__}: {exc}"
    log.warning("%s", message)
    result.errors.append(message)
