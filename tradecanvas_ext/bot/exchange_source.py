"""Level 3 inside the bot: the range walk over a transport on the bot's own freqtrade Exchange (its markets,
its rate limiter). It never touches the bot's candle cache, never holds `_loop_lock` for more than one
request, and never raises out of `fetch`.
Locks: `BotExchangeSource._cond` guards the binding and counters; the exchange's `_loop_lock` is taken per
request by `FreqtradeTransport` (bounded wait), never while `_cond` is held.
"""
from __future__ import annotations

import asyncio
import copy
import logging
import threading
import time
from collections.abc import Callable

import ccxt

from ..domain import Hole, SeriesId
from ..domain.clock import SYSTEM_CLOCK, Clock
from ..sources.base import CandleSource, SourceResult, closed_hole_ranges
from ..sources.exchange_facts import OMITS_EMPTY, known_reach, late_candle_grace_s
from ..sources.range_walk import Page, RangeWalk, RetryPolicy, TimeBound, Transient

log = logging.getLogger(__name__)

LOCK_WAIT_CAP_S = 30.0  # longest wait for the bot's `_loop_lock` before a page is given up


def candle_type_for(series: SeriesId):
    """freqtrade's CandleType of the series (its candle type, else its market's): the bot's cache key, and
    the price type freqtrade's exchange fetches (mark, index, premiumIndex, funding rate)."""
    from freqtrade.enums import CandleType

    from ..sources.freqtrade_source import default_candle_type

    return CandleType.from_string(default_candle_type(series))


def exchange_matches(exchange, series: SeriesId) -> bool:
    """True when the series is one of the bot's own kind: same exchange id and the bot's trading mode
    (spot and margin bots keep spot candles, futures bots futures candles)."""
    try:
        if str(getattr(exchange, "id", "")).lower() != series.exchange:
            return False
        mode = getattr(exchange, "trading_mode", None)
        return (series.market == "futures") == (str(getattr(mode, "value", mode)) == "futures")
    except Exception:  # a half-built or closed exchange object matches nothing
        return False


def exchange_serves(exchange, series: SeriesId) -> bool:
    """True when the bot's exchange object can fetch this series itself: it matches, its markets are loaded
    and hold the symbol, and it offers the timeframe. `_markets` is read directly: the public `markets`
    property would load them (a network call) when they are not there."""
    if not exchange_matches(exchange, series):
        return False
    try:
        markets = getattr(exchange, "_markets", None) or {}
        return series.symbol in markets and series.timeframe in (exchange.timeframes or ())
    except Exception:
        return False


class BotExchangeSource:
    """The `ccxt` level when running inside freqtrade.

    `bind(exchange)` plugs the bot's `Exchange` in (`strategy.dp._exchange`), `detach()` takes it out
    (config reload, shutdown) and waits for the request in flight. Series the bound exchange does not
    serve — or every series while nothing is bound — go to `fallback` (our own CcxtSource).

    Each page is one `fetch_ohlcv` through freqtrade's `_async_get_candle_history(..., count=0)` on the
    exchange's own event loop, under its `_loop_lock`, asking `ohlcv_candle_limit` rows from the page
    start (freqtrade sends no end bound); freqtrade's retries are switched off for it (they would run inside the lock) and ours run
    outside the lock with backoff. The raw rows are used as the exchange sent them: no fill-up filter
    (a real zero-volume candle looks like a fill-up one), only closed candles inside the asked hole, and
    the just-closed candle only when it is final (a newer row came with it, or the grace period passed).
    """

    name = "ccxt"

    def __init__(self, fallback: CandleSource | None, clock: Clock = SYSTEM_CLOCK,
                 sleep: Callable[[float], None] = time.sleep):
        self.fallback = fallback
        self._clock = clock
        self._walk = RangeWalk(RetryPolicy(), sleep)
        # protects _exchange, _inflight, requests and retries; never held for I/O or another object's call
        self._cond = threading.Condition()
        self._exchange = None
        self._inflight = 0
        self.requests = 0  # pages asked through the bot's exchange, over the source's life (metrics, tests)
        self.retries = 0  # transient failures retried through it, over the source's life (metrics)

    # ---- binding --------------------------------------------------------------------------------------
    def bind(self, exchange) -> None:
        with self._cond:
            self._exchange = exchange

    def detach(self, wait_s: float = 15.0) -> bool:
        """Stop using the bound exchange; wait (bounded) until no request runs on it. True when idle."""
        deadline = time.monotonic() + wait_s
        with self._cond:
            self._exchange = None
            while self._inflight:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    @property
    def exchange(self):
        return self._exchange

    # ---- the CandleSource protocol ----------------------------------------------------------------
    def offers(self, series: SeriesId) -> bool:
        return True  # the bot's exchange, or the fallback's

    def fetch(self, series: SeriesId, holes: list[Hole], now: float | None = None,
              deadline: float | None = None) -> SourceResult:
        now = self._clock() if now is None else now
        with self._cond:
            ex = self._exchange
            use = ex is not None and exchange_serves(ex, series)
            if use:
                self._inflight += 1
        if not use:
            if self.fallback is not None:
                return self.fallback.fetch(series, holes, now, deadline=deadline)
            return SourceResult()
        result = SourceResult()
        try:
            self._fetch(ex, series, holes, now, deadline, result)
        except Exception as exc:  # never raise into the backfill service
            log.exception("bot exchange %s: unexpected failure", series)
            result.errors.append(f"bot exchange {series}: unexpected {type(exc).__name__}: {exc}")
        finally:
            with self._cond:
                self._inflight -= 1
                self.requests += result.requests
                self.retries += result.retries
                self._cond.notify_all()
        return result

    # ---- internals --------------------------------------------------------------------------------
    def _fetch(self, ex, series: SeriesId, holes: list[Hole], now: float, deadline: float | None,
               result: SourceResult) -> None:
        tf = series.tf_seconds
        transport = FreqtradeTransport(ex, series, lambda: self._exchange is ex)
        self._walk.walk(transport, closed_hole_ranges(holes, tf, now), tf, now, deadline, result,
                        "time bound reached or exchange detached", reach=known_reach(series.exchange))
        if result.requests:
            log.debug("bot exchange %s: %d candle(s), %d void range(s) in %d request(s)", series,
                      len(result.candles), len(result.voids), result.requests)


class FreqtradeTransport:
    """Pages of one series through freqtrade's own Exchange: `ohlcv_candle_limit` rows from a start, one
    request per `_loop_lock` hold (bounded wait), freqtrade's retrier off; transient errors are its
    TemporaryError family (DDosProtection rate-limited) and timeouts."""

    open_ended = True  # freqtrade asks `ohlcv_candle_limit` rows from `since`, with no end bound

    def __init__(self, exchange, series: SeriesId, bound: Callable[[], bool]):
        self.label = f"bot exchange {series}"
        self._ex = exchange
        self._series = series
        self._ct = candle_type_for(series)
        self._bound = bound  # False once the exchange was detached: no new request then
        self.grace_s = _grace_s(exchange, series)
        self.omits_empty = series.exchange in OMITS_EMPTY

    def page_limit(self, since: int) -> int:
        try:
            return int(self._ex.ohlcv_candle_limit(self._series.timeframe, self._ct, since * 1000))
        except Exception:
            return 500

    def fetch_page(self, page: Page, remaining_s: float | None) -> list:
        from freqtrade.exceptions import DDosProtection, TemporaryError

        ex, sid = self._ex, self._series
        if not self._bound():
            raise TimeBound("the bot's exchange was detached (config reload or shutdown)")
        lock_wait = LOCK_WAIT_CAP_S if remaining_s is None else min(LOCK_WAIT_CAP_S, remaining_s)
        if not ex._loop_lock.acquire(timeout=lock_wait):
            raise TimeBound(f"the bot's exchange stayed busy for {lock_wait:.0f}s")
        try:
            timeout_s = float(getattr(ex._api_async, "timeout", 10000)) / 1000.0 + 1.0
            if remaining_s is not None:
                timeout_s = max(0.5, min(timeout_s, remaining_s))
            if page.asked < self.page_limit(page.start):
                # the walk learned the exchange cuts pages below freqtrade's limit (OKX history-candles):
                # freqtrade's call always asks its own limit, so ask the bot's async ccxt object directly,
                # with freqtrade's ohlcv params, for the rows the walk wants
                coro = ex._api_async.fetch_ohlcv(sid.symbol, timeframe=sid.timeframe, since=page.start * 1000,
                                                 limit=page.asked,
                                                 params=copy.deepcopy(ex._ft_has.get("ohlcv_params", {})))
                return list(ex.loop.run_until_complete(asyncio.wait_for(coro, timeout_s)) or [])
            coro = ex._async_get_candle_history(sid.symbol, sid.timeframe, self._ct, page.start * 1000,
                                                count=0)  # count=0: freqtrade's retrier off
            response = ex.loop.run_until_complete(asyncio.wait_for(coro, timeout_s))
            return list(response[3] or [])
        except ccxt.OperationFailed as exc:  # the direct call's transient errors, untranslated by freqtrade
            raise Transient(exc, rate_limited=isinstance(exc, ccxt.DDoSProtection)) from exc
        except (TemporaryError, TimeoutError) as exc:
            raise Transient(exc, rate_limited=isinstance(exc, DDosProtection)) from exc
        finally:
            ex._loop_lock.release()


def _grace_s(exchange, series: SeriesId) -> float:
    """freqtrade's late-candle grace for the timeframe (its `ohlcv_late_candle_grace_secs`)."""
    try:
        return exchange._ohlcv_candle_grace_ms(series.timeframe) / 1000.0
    except Exception:  # a freqtrade without the setting
        return late_candle_grace_s(series.tf_seconds)
