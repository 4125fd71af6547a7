"""Level 3 inside the bot: range fetches through the bot's own freqtrade Exchange (its markets, its rate
limiter), one request per chunk. It never touches the bot's candle cache, never holds `_loop_lock` for more
than one request, and never raises out of `fetch`.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable

from ..domain import CandleBatch, Hole, SeriesId, list_holes
from ..domain.timeframe import expected_latest_closed_time
from ..sources.base import CandleSource, SourceResult, closed_hole_ranges, fetch_holes_in_order
from ..sources.ccxt_source import (
    BACKOFF_BASE_S,
    BACKOFF_CAP_S,
    MAX_TRIES,
    VOID_MIN_AGE_S,
    _clean,
    _concat,
)

log = logging.getLogger(__name__)

LOCK_WAIT_CAP_S = 30.0  # longest wait for the bot's `_loop_lock` before a page is given up
DDOS_BACKOFF_S = 2.0  # first wait after a rate-limit answer (freqtrade's DDosProtection)
DEFAULT_GRACE_S = 15.0  # freqtrade's ohlcv_late_candle_grace_secs, when the exchange object does not say


class _TimeBound(Exception):
    """The deadline leaves no room for another request, or the exchange object was detached."""


def candle_type_for(series: SeriesId):
    from freqtrade.enums import CandleType

    return CandleType.FUTURES if series.market == "futures" else CandleType.SPOT


def exchange_matches(exchange, series: SeriesId) -> bool:
    """True when the series is one of the bot's own kind: same exchange id and the bot's trading mode
    (spot and margin bots keep spot candles, futures bots futures candles)."""
    try:
        if str(getattr(exchange, "id", "")).lower() != series.exchange:
            return False
        mode = getattr(exchange, "trading_mode", None)
        return (series.market == "futures") == (str(getattr(mode, "value", mode)) == "futures")
    except Exception:  # noqa: BLE001 - a half-built or closed exchange object matches nothing
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
    except Exception:  # noqa: BLE001
        return False


class BotExchangeSource:
    """The `ccxt` level when running inside freqtrade.

    `bind(exchange)` plugs the bot's `Exchange` in (`strategy.dp._exchange`), `detach()` takes it out
    (config reload, shutdown) and waits for the request in flight. Series the bound exchange does not
    serve — or every series while nothing is bound — go to `fallback` (our own CcxtSource).

    Each page is one `fetch_ohlcv` through freqtrade's `_async_get_candle_history(..., count=0)` on the
    exchange's own event loop, under its `_loop_lock`, asking for at most `ohlcv_candle_limit - 1`
    candles; freqtrade's retries are switched off for it (they would run inside the lock) and ours run
    outside the lock with backoff. The raw rows are used as the exchange sent them: no fill-up filter
    (a real zero-volume candle looks like a fill-up one), only closed candles inside the asked hole, and
    the just-closed candle only when it is final (a newer row came with it, or the grace period passed).
    """

    name = "ccxt"

    def __init__(self, fallback: CandleSource | None, clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep):
        self.fallback = fallback
        self._clock = clock
        self._sleep = sleep
        self._cond = threading.Condition()
        self._exchange = None
        self._inflight = 0
        self.requests = 0  # pages asked through the bot's exchange, over the source's life (metrics, tests)

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
                self._cond.notify_all()
        return result

    # ---- internals --------------------------------------------------------------------------------
    def _fetch(self, ex, series: SeriesId, holes: list[Hole], now: float, deadline: float | None,
               result: SourceResult) -> None:
        tf = series.tf_seconds
        fetch_holes_in_order(
            closed_hole_ranges(holes, tf, now),
            lambda start, end: self._fetch_hole(ex, series, start, end, now, deadline, result),
            result, tf, f"bot exchange {series}", "time bound reached or exchange detached")
        if result.requests:
            log.debug("bot exchange %s: %d candle(s), %d void range(s) in %d request(s)", series,
                      len(result.candles), len(result.voids), result.requests)

    def _grace_s(self, ex, series: SeriesId) -> float:
        try:
            return ex._ohlcv_candle_grace_ms(series.timeframe) / 1000.0
        except Exception:  # noqa: BLE001
            return min(DEFAULT_GRACE_S, series.tf_seconds / 2)

    def _fetch_hole(self, ex, series: SeriesId, start: int, end: int, now: float, deadline: float | None,
                    result: SourceResult) -> tuple[CandleBatch, list, bool]:
        tf = series.tf_seconds
        ct = candle_type_for(series)
        cutoff = now - max(VOID_MIN_AGE_S, tf)  # a candle closing after this may still be published
        newest_void = (int(cutoff) - tf) // tf * tf
        last_closed = expected_latest_closed_time(now, tf)
        grace = self._grace_s(ex, series)
        pages: list[CandleBatch] = []
        voids: list[tuple[int, int]] = []
        page_start, finished = start, True
        while page_start <= end:
            try:
                limit = int(ex.ohlcv_candle_limit(series.timeframe, ct, page_start * 1000))
            except Exception:  # noqa: BLE001
                limit = 500
            chunk = max(1, limit - 1)
            page_end = min(end, page_start + (chunk - 1) * tf)
            try:
                raw = self._request(ex, series, ct, page_start, deadline, result)
            except _TimeBound as stop:
                result.errors.append(f"bot exchange {series} {page_start}..{end}: {stop}")
                finished = False
                break
            except Exception as exc:
                message = f"bot exchange {series} {page_start}..{end}: {type(exc).__name__}: {exc}"
                log.warning("%s", message)
                result.errors.append(message)
                break
            raw_times = sorted({int(r[0]) // 1000 for r in raw if r and int(r[0]) % (tf * 1000) == 0})
            page = _clean(raw, page_start, page_end, tf, now)
            if (len(page) and raw_times and raw_times[-1] == last_closed
                    and int(page.times[-1]) == last_closed and now < last_closed + tf + grace):
                # the exchange sent no newer row: the just-closed candle may still change (freqtrade's
                # late-candle grace); it is left for a later fetch, never stored provisional
                page = page.take(page.times < last_closed)
            pages.append(page)
            if len(raw) < limit:
                # everything the exchange has from page_start up to now came back: what is missing in
                # this page (and old enough) is confirmed empty
                voids.extend((h.start, h.end) for h in list_holes(page.times, page_start, page_end, tf))
                page_start = page_end + tf
            else:
                # a full answer: only times with rows on both sides (rows past the page count) are known
                # to be empty; duplicates may have used up the limit, then ask again after the last row
                inside = [t for t in raw_times if page_start <= t]
                if inside:
                    known_end = min(page_end, inside[-1])
                    known = [t for t in inside if t <= known_end]
                    voids.extend((h.start, h.end) for h in list_holes(known, known[0], known_end, tf))
                if inside and inside[-1] < page_end:
                    page_start = inside[-1] + tf
                elif inside:
                    page_start = page_end + tf
                else:
                    result.errors.append(f"bot exchange {series}: {len(raw)} rows answered, none from "
                                         f"{page_start} on")
                    break
        voids = [(s, min(e, newest_void)) for s, e in voids if s <= min(e, newest_void)]
        return _concat(pages), voids, finished

    def _request(self, ex, series: SeriesId, ct, since: int, deadline: float | None,
                 result: SourceResult) -> list:
        """One page of raw rows; transient errors retried with backoff, outside the exchange's lock."""
        from freqtrade.exceptions import DDosProtection, TemporaryError

        error: Exception | None = None
        for attempt in range(1, MAX_TRIES + 1):
            if self._exchange is not ex:
                raise _TimeBound("the bot's exchange was detached (config reload or shutdown)")
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise _TimeBound("time bound reached" + (f" (last error: {error})" if error else ""))
            lock_wait = LOCK_WAIT_CAP_S if remaining is None else min(LOCK_WAIT_CAP_S, remaining)
            if not ex._loop_lock.acquire(timeout=lock_wait):
                raise _TimeBound(f"the bot's exchange stayed busy for {lock_wait:.0f}s")
            try:
                timeout_s = float(getattr(ex._api_async, "timeout", 10000)) / 1000.0 + 1.0
                if remaining is not None:
                    timeout_s = max(0.5, min(timeout_s, remaining))
                result.requests += 1
                self.requests += 1
                coro = ex._async_get_candle_history(series.symbol, series.timeframe, ct, since * 1000,
                                                    count=0)  # count=0: freqtrade's retrier off
                response = ex.loop.run_until_complete(asyncio.wait_for(coro, timeout_s))
                return list(response[3] or [])
            except (TemporaryError, TimeoutError) as exc:
                error = exc
            finally:
                ex._loop_lock.release()
            if attempt == MAX_TRIES:
                raise error
            if isinstance(error, DDosProtection):
                wait = min(BACKOFF_CAP_S * 4, DDOS_BACKOFF_S * 2 ** (attempt - 1))
            else:
                wait = min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2 ** (attempt - 1))
            if deadline is not None and time.monotonic() + wait >= deadline:
                raise _TimeBound(f"time bound reached (last error: {type(error).__name__}: {error})")
            log.info("bot exchange %s: %s; retry %d in %.2fs", series, type(error).__name__, attempt, wait)
            self._sleep(wait)
        raise AssertionError("unreachable")  # pragma: no cover
