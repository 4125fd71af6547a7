"""Level 3 of the backfill tree: fetch only the asked holes from an exchange through ccxt, page by page.

It must never raise out of `fetch`, request beyond a hole or past `now`, or return a still-forming candle.
"""
from __future__ import annotations

import copy
import email.utils
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import ccxt  # imported at start-up on purpose: it costs ~0.25 s (FACTS)

from ..domain import CandleBatch, Hole, SeriesId, list_holes
from .base import SourceResult, closed_hole_ranges, fetch_holes_in_order

log = logging.getLogger(__name__)

DEFAULT_CANDLE_LIMIT = 500  # when ccxt does not state the exchange's klines limit
MAX_TRIES = 4  # attempts per request (markets or one page)
BACKOFF_BASE_S = 0.2
BACKOFF_CAP_S = 4.0
RETRY_AFTER_CAP_S = 30.0  # a longer Retry-After is not waited for: the hole is left for a later repair
VOID_MIN_AGE_S = 120  # missing data younger than max(this, tf) may still be published: never a void
# ccxt's transient family (network errors, timeouts, ExchangeNotAvailable, DDoSProtection/RateLimitExceeded,
# BadResponse). Binance maps 503 {-1001} and 500 {-1000} straight to OperationFailed itself.
TRANSIENT = (ccxt.OperationFailed,)
FUTURES_OPTIONS = {"options": {"defaultType": "swap"}}


def deep_merge(base: Mapping, override: Mapping) -> dict:
    """A new dict: `override` merged into `base`; nested dicts are merged key by key, never replaced."""
    out = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


@dataclass
class _Entry:
    exchange: Any  # a sync ccxt.Exchange
    # Held around every single call on `exchange` (markets load, one klines page, close): a sync ccxt
    # object is not thread-safe (throttle state, HTTP session, last_response_* fields). Held per request,
    # never for a whole repair, so other series on the same exchange interleave between pages. Holding
    # it during ccxt's own throttle sleep is what makes the rate limit hold across threads.
    lock: threading.Lock


class ExchangePool:
    """One lazily created sync ccxt object per (exchange id, market), reused so markets load once."""

    def __init__(self, settings_ccxt_config: Mapping | None, timeout_ms: int):
        self._user_config = copy.deepcopy(dict(settings_ccxt_config or {}))
        self._timeout_ms = int(timeout_ms)
        self._lock = threading.Lock()  # protects _entries and _closed only, never held during I/O
        self._entries: dict[tuple[str, str], _Entry] = {}
        self._closed = False

    def options(self, market: str) -> dict:
        """The constructor options: the user's ccxt_config with ours merged in (ours win on a leaf)."""
        ours: dict[str, Any] = {
            "enableRateLimit": True,
            "timeout": self._timeout_ms,
            # read by CcxtSource after a request: Retry-After, and the raw body of an empty page
            "enableLastResponseHeaders": True,
            "enableLastHttpResponse": True,
        }
        if market == "futures":
            ours = deep_merge(ours, FUTURES_OPTIONS)
        return deep_merge(self._user_config, ours)

    def get(self, exchange_id: str, market: str) -> _Entry:
        with self._lock:
            if self._closed:
                raise RuntimeError("the ccxt exchange pool is closed")
            key = (exchange_id, market)
            entry = self._entries.get(key)
            if entry is None:
                if exchange_id not in ccxt.exchanges:
                    raise ValueError(f"{exchange_id!r} is not a ccxt exchange id")
                exchange = getattr(ccxt, exchange_id)(self.options(market))
                entry = self._entries[key] = _Entry(exchange, threading.Lock())
            return entry

    def close(self) -> None:
        """Close every HTTP session; idempotent. A request in flight finishes first."""
        with self._lock:
            self._closed = True
            entries, self._entries = list(self._entries.values()), {}
        for entry in entries:
            with entry.lock:
                entry.exchange.close()


def _load_markets(exchange) -> None:
    """ccxt caches a failed load as nothing (retried next time) but a garbled answer as zero markets."""
    exchange.load_markets()
    if not exchange.markets:
        exchange.markets = None  # so the next call loads again
        raise ccxt.BadResponse(f"{exchange.id}: load_markets returned no markets")


def _candle_limit(exchange, symbol: str) -> int:
    """The exchange's own klines page size, as ccxt's `features` states it for this market type."""
    try:
        market = exchange.market(symbol)
        feature = exchange.features.get(market["type"]) or {}
        if market["type"] in ("swap", "future"):
            feature = feature.get("linear" if market.get("linear") else "inverse") or {}
        limit = int((feature.get("fetchOHLCV") or {}).get("limit") or 0)
    except (AttributeError, KeyError, TypeError, ValueError):
        limit = 0
    return limit if limit > 0 else DEFAULT_CANDLE_LIMIT


def _retry_after(headers) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date), or None."""
    raw = headers.get("Retry-After") if headers else None
    if raw is None:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        return max(0.0, email.utils.parsedate_to_datetime(raw).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _num(x) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return math.nan  # the service's validation rejects the row


class _TimeBound(Exception):
    """The deadline does not leave room for another request or wait."""


class CcxtSource:
    """The ccxt candle source (contract section 5, level 3)."""

    name = "ccxt"

    def __init__(self, pool: ExchangePool, clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep):
        self._pool = pool
        self._clock = clock
        self._sleep = sleep
        self._stats_lock = threading.Lock()
        self.retries = 0  # transient failures retried, over the source's life (for metrics)

    # ------------------------------------------------------------------ public
    def fetch(self, series: SeriesId, holes: list[Hole], now: float | None = None,
              deadline: float | None = None) -> SourceResult:
        result = SourceResult()
        now = self._clock() if now is None else now
        try:
            self._fetch(series, holes, now, deadline, result)
        except _TimeBound as stop:  # pragma: no cover - handled where it happens
            result.errors.append(f"ccxt {series}: {stop}")
        except Exception as exc:  # never raise into the backfill service
            log.exception("ccxt %s: unexpected failure", series)
            result.errors.append(f"ccxt {series}: unexpected {type(exc).__name__}: {exc}")
        return result

    # ------------------------------------------------------------------ internals
    def _fetch(self, series: SeriesId, holes: list[Hole], now: float, deadline: float | None,
               result: SourceResult) -> None:
        tf = series.tf_seconds
        wanted = closed_hole_ranges(holes, tf, now)
        if not wanted:
            return
        try:
            entry = self._pool.get(series.exchange, series.market)
            self._request(entry, _load_markets, deadline)
            limit = _candle_limit(entry.exchange, series.symbol)
        except _TimeBound as stop:
            result.errors.append(f"ccxt {series}: loading markets: {stop}")
            return
        except Exception as exc:
            self._record(result, series, wanted[0][0], wanted[-1][1], exc)
            return
        fetch_holes_in_order(
            wanted, lambda start, end: self._fetch_hole(entry, series, start, end, limit, now, deadline, result),
            result, tf, f"ccxt {series}", "time bound reached")

    def _fetch_hole(self, entry: _Entry, series: SeriesId, start: int, end: int, limit: int, now: float,
                    deadline: float | None, result: SourceResult) -> tuple[CandleBatch, list, bool]:
        """Pages of at most `limit` candles over [start, end]: (candles, voids, False when time ran out).

        An error that retries did not cure abandons the rest of this hole only."""
        tf = series.tf_seconds
        cutoff = now - max(VOID_MIN_AGE_S, tf)  # a candle closing after this may still be published
        pages: list[CandleBatch] = []
        voids: list[tuple[int, int]] = []
        page_start, finished = start, True
        while page_start <= end:
            page_end = min(end, page_start + (limit - 1) * tf)
            asked = (page_end - page_start) // tf + 1

            def klines(ex, since=page_start, asked=asked, page_end=page_end):
                result.requests += 1
                # until = the close (ms) of the page's last candle: right whether the exchange treats
                # it as inclusive or exclusive, and whether it filters by open or close time.
                return _checked_page(ex, ex.fetch_ohlcv(series.symbol, series.timeframe, since=since * 1000,
                                                        limit=asked, params={"until": (page_end + tf) * 1000 - 1}))

            try:
                raw = self._request(entry, klines, deadline)
            except _TimeBound as stop:
                result.errors.append(f"ccxt {series} {page_start}..{end}: {stop}")
                finished = False
                break
            except Exception as exc:
                self._record(result, series, page_start, end, exc)
                break
            page = _clean(raw, page_start, page_end, tf, now)
            pages.append(page)
            if len(raw) < asked:
                if page_end + tf <= cutoff:
                    # Fewer rows than the limit we asked, for a fully past range: the exchange has
                    # nothing else in it, so every missing time of this page is confirmed empty.
                    voids.extend((h.start, h.end) for h in list_holes(page.times, page_start, page_end, tf))
                page_start = page_end + tf
            elif len(page) and page.times[-1] < page_end:
                # A full answer that stops short (duplicates or foreign rows used up the limit, or ccxt
                # trimmed them to it): ask again from the next time; nothing here is known to be empty.
                page_start = int(page.times[-1]) + tf
            elif len(page):
                page_start = page_end + tf
            else:
                self._record(result, series, page_start, end,
                             ccxt.BadResponse(f"{asked} rows answered, none inside {page_start}..{page_end}"))
                break
        batch = _concat(pages)
        voids.extend(_inner_gaps(batch, tf))
        newest_void = math.floor((cutoff - tf) / tf) * tf  # the newest candle time old enough to be a void
        voids = [(s, min(e, newest_void)) for s, e in voids if s <= min(e, newest_void)]
        return batch, voids, finished

    def _request(self, entry: _Entry, fn: Callable[[Any], Any], deadline: float | None):
        """fn(exchange) under the entry's lock; transient errors retried with backoff or Retry-After."""
        error: Exception | None = None
        for attempt in range(1, MAX_TRIES + 1):
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise _TimeBound("time bound reached" + (f" (last error: {error})" if attempt > 1 else ""))
            with entry.lock:
                ex = entry.exchange
                base_timeout = ex.timeout
                if remaining is not None:  # a request started before the deadline ends near it too
                    ex.timeout = max(1, min(base_timeout, int(remaining * 1000)))
                ex.last_response_headers = None  # not reset by ccxt on a timeout: a stale value misleads
                ex.last_http_response = None
                try:
                    return fn(ex)
                except TRANSIENT as exc:
                    error, wait = exc, _retry_after(ex.last_response_headers)
                finally:
                    ex.timeout = base_timeout
            if attempt == MAX_TRIES:
                raise error
            if wait is None:
                wait = min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2 ** (attempt - 1))
            elif wait > RETRY_AFTER_CAP_S:
                raise error
            if deadline is not None and time.monotonic() + wait >= deadline:
                raise _TimeBound(f"time bound reached (last error: {type(error).__name__}: {error})")
            with self._stats_lock:
                self.retries += 1
            log.info("ccxt %s: %s: %s; retry %d in %.2fs", ex.id, type(error).__name__, error, attempt, wait)
            self._sleep(wait)
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def _record(result: SourceResult, series: SeriesId, start: int, end: int, exc: Exception) -> None:
        kind = "gave up after retries" if isinstance(exc, TRANSIENT) else "error"
        message = f"ccxt {series} {start}..{end}: {kind}: {type(exc).__name__}: {exc}"
        log.warning("%s", message)
        result.errors.append(message)


def _checked_page(exchange, rows):
    """ccxt turns an unparsable body into an empty list silently; that must not read as 'no data'."""
    if not rows:
        body = (exchange.last_http_response or "").strip()
        if not (body.startswith("[") and body.endswith("]")):
            raise ccxt.BadResponse(f"{exchange.id}: klines answer is not a JSON list: {body[:80]!r}")
    return rows


def _clean(raw, start: int, end: int, tf: int, now: float) -> CandleBatch:
    """Rows inside [start, end], aligned and closed, one per time (the last wins), ascending."""
    rows = []
    tf_ms = tf * 1000
    for r in raw or ():
        try:
            t_ms = int(r[0])
        except (TypeError, ValueError, IndexError):
            continue
        t = t_ms // 1000
        if t_ms % tf_ms or not start <= t <= end or t + tf > now or len(r) < 6:
            continue
        rows.append((t, *(_num(x) for x in r[1:6])))
    return CandleBatch.from_rows(rows).dedupe_sorted()


def _inner_gaps(batch: CandleBatch, tf: int) -> list[tuple[int, int]]:
    """Times the exchange skipped with candles on both sides of them."""
    if len(batch) < 2:
        return []
    times = batch.times
    return [(h.start, h.end) for h in list_holes(times, int(times[0]), int(times[-1]), tf)]


def _concat(batches: list[CandleBatch]) -> CandleBatch:
    return CandleBatch.concat(batches)
