"""Level 3 of the backfill tree: the ccxt transport of the range walk (a pooled sync ccxt object per
exchange and market) and the source that walks holes through it.

It must never raise out of `fetch`, request beyond a hole or past `now`, or return a still-forming candle.
Locks: `ExchangePool._lock` guards the pool's dict only (never held during I/O); each `_Entry.lock` is
held around one call on its exchange object. They are never nested.
"""
from __future__ import annotations

import copy
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import ccxt  # imported at start-up on purpose: it costs ~0.25 s (FACTS)

from ..domain import Hole, SeriesId
from ..domain.clock import SYSTEM_CLOCK, Clock
from .base import PageLimit, SourceResult, closed_hole_ranges
from .exchange_facts import ExchangeFacts, known_reach, late_candle_grace_s, too_old
from .range_walk import Page, RangeWalk, RetryPolicy, TimeBound, Transient, parse_retry_after, record_error

log = logging.getLogger(__name__)

MAX_TRIES = RetryPolicy().max_tries  # attempts per request (markets or one page)
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

    @property
    def open_count(self) -> int:
        """How many ccxt exchange objects this pool has created and not closed."""
        with self._lock:
            return len(self._entries)

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


def _checked_page(exchange, rows):
    """An empty answer is an answer when the exchange sent JSON (`[]` or an object such as Bybit's
    `{"result": {"list": []}}`: ccxt parses both to []); only a body that is not JSON at all (ccxt turns
    that into [] silently) is a bad response."""
    if not rows:
        body = (exchange.last_http_response or "").strip()
        try:
            json.loads(body)
        except ValueError:
            raise ccxt.BadResponse(f"{exchange.id}: klines answer is not JSON: {body[:80]!r}") from None
    return rows


def _call(entry: _Entry, fn: Callable[[Any], Any], remaining_s: float | None, clock: Clock):
    """fn(exchange) under the entry's lock, its timeout cut to the deadline; a transient ccxt error comes
    out as `Transient` with the Retry-After the exchange sent with it (read inside the lock)."""
    with entry.lock:
        ex = entry.exchange
        base_timeout = ex.timeout
        if remaining_s is not None:  # a request started before the deadline ends near it too
            ex.timeout = max(1, min(base_timeout, int(remaining_s * 1000)))
        ex.last_response_headers = None  # not reset by ccxt on a timeout: a stale value misleads
        ex.last_http_response = None
        try:
            return fn(ex)
        except TRANSIENT as exc:
            headers = ex.last_response_headers
            raise Transient(exc, parse_retry_after(headers.get("Retry-After") if headers else None,
                                                   clock())) from exc
        finally:
            ex.timeout = base_timeout


class CcxtTransport:
    """Pages of one series through a pooled sync ccxt object, with only the parameters its class reads:
    exactly the page's candles (`until`-bound) where it knows `until`, `limit` rows from `since` where not."""

    def __init__(self, entry: _Entry, series: SeriesId, facts: ExchangeFacts, clock: Clock):
        self.label = f"ccxt {series}"
        self._entry = entry
        self._series = series
        self._facts = facts
        self._clock = clock
        self.open_ended = not facts.knows_until
        self.omits_empty = facts.omits_empty
        self.grace_s = late_candle_grace_s(series.tf_seconds)

    def page_limit(self, since: int) -> int:
        return self._facts.page_limit(since, self._clock(), self._series.tf_seconds)

    def fetch_page(self, page: Page, remaining_s: float | None) -> list:
        sid, tf = self._series, self._series.tf_seconds
        now = self._clock()

        def klines(ex):
            try:
                return _checked_page(ex, self._facts.fetch(ex, sid.symbol, sid.timeframe, page.start, page.end,
                                                           page.asked, now, tf, price_params(sid)))
            except ccxt.BadRequest as exc:
                refused = too_old(exc)
                if refused is not None:
                    raise refused from exc
                raise

        return _call(self._entry, klines, remaining_s, self._clock)


def price_params(series: SeriesId) -> dict:
    """ccxt's unified `price` parameter of fetch_ohlcv for a mark, index or premium-index series."""
    return {"price": series.candle_type} if series.candle_type in ("mark", "index", "premiumIndex") else {}


class CcxtSource:
    """The ccxt candle source (contract section 5, level 3)."""

    name = "ccxt"

    def __init__(self, pool: ExchangePool, clock: Clock = SYSTEM_CLOCK,
                 sleep: Callable[[float], None] = time.sleep):
        self._pool = pool
        self._clock = clock
        self._walk = RangeWalk(RetryPolicy(), sleep)
        self._stats_lock = threading.Lock()  # protects `retries` only
        self.retries = 0  # transient failures retried, over the source's life (for metrics)

    def offers(self, series: SeriesId) -> bool:
        """Every exchange ccxt knows (whether ccxt may be asked is the service's switch)."""
        return True

    def fetch(self, series: SeriesId, holes: list[Hole], now: float | None = None,
              deadline: float | None = None) -> SourceResult:
        result = SourceResult()
        now = self._clock() if now is None else now
        try:
            self._fetch(series, holes, now, deadline, result)
        except Exception as exc:  # never raise into the backfill service
            log.exception("ccxt %s: unexpected failure", series)
            result.errors.append(f"ccxt {series}: unexpected {type(exc).__name__}: {exc}")
        with self._stats_lock:
            self.retries += result.retries
        return result

    def page_limit(self, series: SeriesId, since: int, now: float | None = None,
                   deadline: float | None = None) -> PageLimit:
        """Candles one request of the range walk returns at most for `series` from `since` on (the page it
        plans with: ccxt's `features`, a documented larger page, OKX's endpoint by age), so a caller can ask
        holes that share a page as one range. Loads the exchange's markets once (cached by the pool's
        exchange object); never raises: a failure comes back as `PageLimit.error`."""
        result = SourceResult()
        now = self._clock() if now is None else now
        try:
            _, facts = self._facts(series, deadline, result)
        except Exception as exc:  # TimeBound, retries spent, a permanent error: the fetch would fail too
            return PageLimit(None, f"ccxt {series}: loading markets: {type(exc).__name__}: {exc}")
        finally:
            with self._stats_lock:
                self.retries += result.retries
        return PageLimit(facts.page_limit(since, now, series.tf_seconds))

    def _facts(self, series: SeriesId, deadline: float | None, result: SourceResult) -> tuple[_Entry, ExchangeFacts]:
        """The pooled exchange of `series`, its markets loaded (retried per the walk's policy), and its facts."""
        entry = self._pool.get(series.exchange, series.market)
        self._walk.retrying(lambda remaining: _call(entry, _load_markets, remaining, self._clock),
                            deadline, result, f"ccxt {series}")
        return entry, ExchangeFacts.of(entry.exchange, series.symbol, series.market)

    def _fetch(self, series: SeriesId, holes: list[Hole], now: float, deadline: float | None,
               result: SourceResult) -> None:
        tf = series.tf_seconds
        wanted = closed_hole_ranges(holes, tf, now)
        if not wanted:
            return
        label = f"ccxt {series}"
        if series.candle_type == "funding_rate":  # not OHLCV in ccxt (fetchFundingRateHistory): freqtrade's
            result.errors.append(f"{label}: funding-rate series are filled from freqtrade only")
            return
        try:
            entry, facts = self._facts(series, deadline, result)
        except TimeBound as stop:
            result.errors.append(f"{label}: loading markets: {stop}")
            return
        except Exception as exc:
            record_error(result, label, wanted[0][0], wanted[-1][1], exc)
            return
        self._walk.walk(CcxtTransport(entry, series, facts, self._clock), wanted, tf, now, deadline, result,
                        reach=known_reach(series.exchange))
