"""The one paged fetch of holes every range source uses: page planning, answer classification, void evidence,
retry policy (backoff, Retry-After, deadline) and result bookkeeping, over a `Transport` that makes the calls.

It must never talk to an exchange itself, raise out of `walk`, ask past a hole, or call a missing candle a
void without the exchange's evidence. It holds no lock: a transport serialises its own calls.
"""
from __future__ import annotations

import email.utils
import enum
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

import numpy as np

from ..domain import CandleBatch, expected_latest_closed_time, list_holes
from .base import SourceResult, fetch_holes_in_order

log = logging.getLogger(__name__)

VOID_MIN_AGE_S = 120  # missing data younger than max(this, tf) may still be published: never a void
T = TypeVar("T")


# ---------------------------------------------------------------------------------------------- failures
class TimeBound(Exception):
    """No room for another request or wait (deadline, a busy or detached exchange): no request was made."""


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
    """One request: candles [start, end] wanted, `asked` rows requested (a shorter answer is the whole truth)."""

    start: int
    end: int
    asked: int


def plan_page(start: int, hole_end: int, tf: int, limit: int, open_ended: bool) -> Page:
    """The next page of a hole. A bounded transport asks exactly the page's candles (at most `limit`); an
    open-ended one asks `limit` rows from `start` and keeps `limit - 1`, so a row past the page shows the
    exchange went on."""
    span = max(1, limit - 1) if open_ended else max(1, limit)
    end = min(hole_end, start + (span - 1) * tf)
    return Page(start, end, limit if open_ended else (end - start) // tf + 1)


class Answer(enum.Enum):
    SHORT = "fewer rows than asked: everything the exchange has in the page came"
    STOPS_SHORT = "a full answer ending inside the page (duplicates or foreign rows used up the limit)"
    FULL = "a full answer reaching the page end"
    NONE_INSIDE = "rows, but none at or after the page start"


@dataclass(frozen=True)
class Verdict:
    answer: Answer
    next_start: int | None  # None: the rest of the hole is given up
    empty: tuple[tuple[int, int], ...]  # missing times of the page the answer confirms empty (not yet aged)


def classify(page: Page, n_rows: int, seen: np.ndarray, tf: int, cutoff: float) -> Verdict:
    """What one answer says. `seen`: the sorted unique aligned row times at or after page.start (rows past
    the page included); `cutoff`: a candle closing after it may still be published."""
    if n_rows < page.asked:
        empty: tuple[tuple[int, int], ...] = ()
        if page.end + tf <= cutoff:  # a fully past page: the exchange has nothing else in it
            empty = tuple((h.start, h.end) for h in list_holes(seen, page.start, page.end, tf))
        return Verdict(Answer.SHORT, page.end + tf, empty)
    if not len(seen):
        return Verdict(Answer.NONE_INSIDE, None, ())
    last = int(seen[-1])
    if last < page.end:  # ask again after the last row; nothing here is known to be empty
        return Verdict(Answer.STOPS_SHORT, last + tf, ())
    return Verdict(Answer.FULL, page.end + tf, ())


def void_cutoff(now: float, tf: int) -> float:
    """A candle closing after this may still be published: its absence proves nothing yet."""
    return now - max(VOID_MIN_AGE_S, tf)


def newest_void(now: float, tf: int) -> int:
    """The newest candle time old enough to be called a void at `now`."""
    return math.floor((void_cutoff(now, tf) - tf) / tf) * tf


def void_evidence(start: int, end: int, seen: np.ndarray, empty: Sequence[tuple[int, int]], tf: int,
                  now: float) -> list[tuple[int, int]]:
    """The voids of hole [start, end]: what short past pages confirmed empty, and every time the exchange
    skipped with rows on both sides of it (`seen`: all row times it sent for the hole), none younger
    than `newest_void`."""
    voids = list(empty)
    times = np.unique(np.asarray(seen, dtype=np.int64))
    if len(times) >= 2:
        voids.extend((max(h.start, start), min(h.end, end)) for h in list_holes(times, int(times[0]),
                                                                                  int(times[-1]), tf))
    last = min(end, newest_void(now, tf))
    clipped = [(max(s, start), min(e, last)) for s, e in voids]
    return [(s, e) for s, e in clipped if s <= e]


def _rows(raw, tf: int):
    """(time, row) of the well-formed aligned rows, as sent."""
    tf_ms = tf * 1000
    for r in raw or ():
        try:
            t_ms = int(r[0])
        except (TypeError, ValueError, IndexError):
            continue
        if len(r) >= 6 and not t_ms % tf_ms:
            yield t_ms // 1000, r


def row_times(raw, since: int, tf: int) -> np.ndarray:
    """Sorted unique times of the well-formed aligned rows at or after `since`: what the exchange says it has."""
    return np.unique(np.asarray([t for t, _ in _rows(raw, tf) if t >= since], dtype=np.int64))


def clean_rows(raw, start: int, end: int, tf: int, now: float) -> CandleBatch:
    """Rows inside [start, end], aligned and closed, one per time (the last wins), ascending."""
    rows = [(t, *(_num(x) for x in r[1:6])) for t, r in _rows(raw, tf) if start <= t <= end and t + tf <= now]
    return CandleBatch.from_rows(rows).dedupe_sorted()


def _num(x) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
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
    `TimeBound` when it made no request, anything else for a permanent failure."""

    label: str  # "ccxt binance:spot:BTC/USDT:1m": the start of every error message
    open_ended: bool  # a page asks `limit` rows from its start, without an end bound
    grace_s: float  # the late-candle grace for the just-closed candle (0: none)

    def page_limit(self, since: int) -> int:
        """Rows one request returns at most, from `since` on."""
        ...

    def fetch_page(self, page: Page, remaining_s: float | None) -> list:
        """The raw rows of one page; `remaining_s` until the deadline (None: no deadline)."""
        ...


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
             deadline: float | None, result: SourceResult, stop_reason: str = "time bound reached") -> None:
        """Fetch the (start, end) ranges oldest first into `result` (candles, voids, errors, requests)."""
        fetch_holes_in_order(
            wanted, lambda start, end: self._hole(transport, start, end, tf, now, deadline, result),
            result, tf, transport.label, stop_reason)

    def _hole(self, transport: Transport, start: int, end: int, tf: int, now: float, deadline: float | None,
              result: SourceResult) -> tuple[CandleBatch, list[tuple[int, int]], bool]:
        """(candles, voids, False when time ran out). An error retries did not cure abandons this hole only."""
        cutoff = void_cutoff(now, tf)
        pages: list[CandleBatch] = []
        seen: list[np.ndarray] = []
        empty: list[tuple[int, int]] = []
        page_start, finished = start, True
        while page_start <= end:
            page = plan_page(page_start, end, tf, transport.page_limit(page_start), transport.open_ended)

            def one(remaining: float | None, page: Page = page) -> list:
                made = True  # a TimeBound means no request left this process
                try:
                    return transport.fetch_page(page, remaining)
                except TimeBound:
                    made = False
                    raise
                finally:
                    if made:
                        result.requests += 1

            try:
                raw = self.retrying(one, deadline, result, transport.label)
            except TimeBound as stop:
                result.errors.append(f"{transport.label} {page_start}..{end}: {stop}")
                finished = False
                break
            except Exception as exc:
                record_error(result, transport.label, page_start, end, exc)
                break
            page_seen = row_times(raw, page.start, tf)
            pages.append(hold_back_unfinal(clean_rows(raw, page.start, page.end, tf, now), page_seen, tf, now,
                                           transport.grace_s))
            seen.append(page_seen)
            verdict = classify(page, len(raw), page_seen, tf, cutoff)
            empty.extend(verdict.empty)
            if verdict.next_start is None:
                result.errors.append(f"{transport.label} {page.start}..{end}: {len(raw)} rows answered, none "
                                     f"from {page.start} on")
                break
            page_start = verdict.next_start
        all_seen = np.concatenate(seen) if seen else np.empty(0, dtype=np.int64)
        return CandleBatch.concat(pages), void_evidence(start, end, all_seen, empty, tf, now), finished


def record_error(result: SourceResult, label: str, start: int, end: int, exc: Exception) -> None:
    """One error line for a range: what failed, and whether retries were spent on it first."""
    if isinstance(exc, Transient):
        message = f"{label} {start}..{end}: gave up after retries: {exc}"
    else:
        message = f"{label} {start}..{end}: error: {type(exc).__name__}: {exc}"
    log.warning("%s", message)
    result.errors.append(message)
