"""Faults the emulator injects: data faults (outages, quiet stretches without trades, listing times,
downtimes) and request faults (HTTP errors, slow, malformed, duplicated or shuffled klines), armed by tests. One lock, `FaultController._lock`, guards all
armed faults; it is never held while calling anything else."""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass

#: Requests are keyed by kind: the path after this prefix ("klines", "ticker/24hr", ...).
API_PREFIX = "/api/v3/"

MSG_503 = "Internal error; unable to process your request. Please try again."
#: Binance's answers per HTTP status, for `http_error` without a body (and for rate limiting, downtimes).
ERROR_BODIES: dict[int, object] = {
    429: {"code": -1003, "msg": "Too many requests; current limit of IP is 6000 request weight per 1 MINUTE. "
                                "Please use WebSocket Streams for live updates to avoid polling the API."},
    418: {"code": -1003, "msg": "Way too many requests; IP banned until further notice. "
                                "Please use WebSocket Streams for live updates to avoid bans."},
    500: {"code": -1000, "msg": "An unknown error occurred while processing the request."},
    502: "<html><head><title>502 Bad Gateway</title></head><body>502 Bad Gateway</body></html>",
    503: {"code": -1001, "msg": MSG_503},
    504: "<html><head><title>504 Gateway Time-out</title></head><body>504 Gateway Time-out</body></html>",
}


@dataclass
class FaultRule:
    kind: str  # http_error | rate_limit | slow | malformed | duplicate | out_of_order
    path: str | None  # request kind ("klines", "exchangeInfo", ...) or None for every request
    remaining: int | None  # None: until cleared
    status: int = 0
    retry_after: float | None = None
    body: object = None
    delay_s: float = 0.0


@dataclass
class FaultDecision:
    """What to do to one request (taken from the armed rules by `FaultController.take`)."""

    delay_s: float = 0.0
    error: FaultRule | None = None
    rate_limited: bool = False
    malformed: bool = False
    duplicate: bool = False
    out_of_order: bool = False


def request_kind(path: str | None) -> str | None:
    """A fault's or a counter's `path` argument as a request kind; None for every request."""
    if path is None or path in ("*", ""):
        return None
    path = path.strip()
    if path.startswith(API_PREFIX):
        path = path[len(API_PREFIX):]
    return path.strip("/")


def binance_error_body(status: int) -> object:
    """Binance's answer body for an HTTP error status."""
    return ERROR_BODIES.get(status, {"code": -1000, "msg": f"HTTP {status}"})


def http_error_answer(rule: FaultRule, error_body: Callable[[int], object] = binance_error_body
                      ) -> tuple[int, str, dict[str, str]]:
    """(status, body, headers) of an `http_error` rule: its body, or the exchange's for the status."""
    body = rule.body if rule.body is not None else error_body(rule.status)
    headers: dict[str, str] = {}
    if isinstance(body, str):
        if body.lstrip().startswith("<"):
            headers["Content-Type"] = "text/html"
    else:
        body = json.dumps(body)
    if rule.retry_after is not None:
        ra = rule.retry_after
        headers["Retry-After"] = str(int(ra)) if float(ra).is_integer() else str(ra)
    return rule.status, body, headers


def _check_n(n: int | None) -> int | None:
    if n is None:
        return None
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer or None (until cleared), got {n!r}")
    return n


def _merge(intervals: Iterable[tuple[float, float]]) -> list[tuple[float, float]]:
    out: list[list[float]] = []
    for s, e in sorted(intervals):
        if e <= s:
            continue
        if out and s <= out[-1][1]:
            out[-1][1] = max(out[-1][1], e)
        else:
            out.append([s, e])
    return [(s, e) for s, e in out]


class FaultController:
    """Faults the emulator injects. Thread-safe. Each request fault applies to the next `n` matching
    requests (`n=None`: every matching request until `clear()`); `path` is a request kind such as
    "klines", "exchangeInfo", "depth", "ticker/24hr" (or "/api/v3/klines"), or None/"*" for all."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rules: list[FaultRule] = []
        self._outages: list[tuple[float, float, str | None]] = []
        self._downtimes: list[tuple[float, float]] = []
        self._quiet: list[tuple[float, float, str | None]] = []
        self._listings: dict[str, float] = {}

    # -- data faults
    def outage(self, start: float, end: float, symbol: str | None = None) -> None:
        """Candles whose open time is in [start, end) (seconds) do not exist, for `symbol` or every
        symbol: absent from klines (and tickers) and from `ExchangeEmulator.candles()`. A larger candle is
        absent when its own open time is in the outage; otherwise it aggregates the 1m candles left."""
        start, end = float(start), float(end)
        if not (math.isfinite(start) and math.isfinite(end)) or end <= start:
            raise ValueError(f"outage needs start < end, got [{start}, {end})")
        with self._lock:
            self._outages.append((start, end, symbol))

    def clear_outages(self) -> None:
        with self._lock:
            self._outages.clear()

    def quiet(self, start: float, end: float, symbol: str | None = None) -> None:
        """No trade in [start, end) (seconds), for `symbol` or every symbol: the 1m candles in it exist, flat
        at the price the stretch began with and with volume 0 (an exchange that omits candles without
        trades, such as Coinbase, serves none of those whose whole bucket is quiet)."""
        start, end = float(start), float(end)
        if not (math.isfinite(start) and math.isfinite(end)) or end <= start:
            raise ValueError(f"quiet needs start < end, got [{start}, {end})")
        with self._lock:
            self._quiet.append((start, end, symbol))

    def listing(self, symbol: str, time: float) -> None:
        """`symbol` was listed at `time` (seconds): no candle opens before it (the first one is the first
        bucket opening at or after it)."""
        time = float(time)
        if not math.isfinite(time) or time < 0:
            raise ValueError(f"listing time must be a finite time >= 0, got {time!r}")
        with self._lock:
            self._listings[symbol] = time

    def downtime(self, start: float, end: float) -> None:
        """While the emulator clock is in [start, end), every request is answered 503 -1001."""
        start, end = float(start), float(end)
        if end <= start:
            raise ValueError(f"downtime needs start < end, got [{start}, {end})")
        with self._lock:
            self._downtimes.append((start, end))

    # -- request faults
    def http_error(self, status: int, n: int | None = 1, retry_after: float | None = None,
                   body: object = None, path: str | None = "klines") -> None:
        """Answer the next `n` matching requests with HTTP `status` and a Binance-like body (429/418:
        code -1003, 500: -1000, 503: -1001, 502/504: an HTML page) or `body` (a str is sent as is, anything
        else as JSON); with a `Retry-After` header when `retry_after` is given."""
        status = int(status)
        if not 400 <= status <= 599:
            raise ValueError(f"http_error status must be 4xx or 5xx, got {status}")
        with self._lock:
            self._rules.append(FaultRule("http_error", request_kind(path), _check_n(n), status=status,
                                         retry_after=retry_after, body=body))

    def rate_limit(self, n: int | None = 1, path: str | None = "klines") -> None:
        """Answer the next `n` matching requests with the exchange's own rate-limit answer (the dialect's
        status, body and headers: Binance 429 -1003 with Retry-After, Bybit 200 retCode 10006, Kraken
        EAPI:Rate limit exceeded, ...), as its server does to a client over the limit."""
        with self._lock:
            self._rules.append(FaultRule("rate_limit", request_kind(path), _check_n(n)))

    def slow(self, delay_s: float, n: int | None = 1, path: str | None = "klines") -> None:
        """Wait `delay_s` seconds before answering (to go past a client's timeout)."""
        if not delay_s >= 0:
            raise ValueError(f"delay_s must be >= 0, got {delay_s!r}")
        with self._lock:
            self._rules.append(FaultRule("slow", request_kind(path), _check_n(n), delay_s=float(delay_s)))

    def malformed(self, n: int | None = 1, path: str | None = "klines") -> None:
        """Answer 200 with a truncated, invalid JSON body."""
        with self._lock:
            self._rules.append(FaultRule("malformed", request_kind(path), _check_n(n)))

    def duplicate_rows(self, n: int | None = 1) -> None:
        """Klines answers repeat rows (every third row, from the first, is sent twice in a row)."""
        with self._lock:
            self._rules.append(FaultRule("duplicate", "klines", _check_n(n)))

    def out_of_order(self, n: int | None = 1) -> None:
        """Klines answers come in a shuffled (never ascending, when 2+ rows) order."""
        with self._lock:
            self._rules.append(FaultRule("out_of_order", "klines", _check_n(n)))

    def clear(self) -> None:
        """Remove every fault: request faults, outages and downtimes."""
        with self._lock:
            self._rules.clear()
            self._outages.clear()
            self._downtimes.clear()
            self._quiet.clear()
            self._listings.clear()

    def active(self) -> list[dict]:
        """A description of the faults still armed (for logs and debugging)."""
        with self._lock:
            rules = [dict(kind=r.kind, path=r.path, remaining=r.remaining, status=r.status or None,
                          delay_s=r.delay_s or None) for r in self._rules]
            rules += [dict(kind="outage", start=s, end=e, symbol=sym) for s, e, sym in self._outages]
            rules += [dict(kind="downtime", start=s, end=e) for s, e in self._downtimes]
            rules += [dict(kind="quiet", start=s, end=e, symbol=sym) for s, e, sym in self._quiet]
            rules += [dict(kind="listing", symbol=sym, time=t) for sym, t in self._listings.items()]
        return rules

    # -- read by the server for every request
    def outage_intervals(self, symbol: str) -> list[tuple[float, float]]:
        """The outages of `symbol` (and of every symbol), merged and sorted."""
        with self._lock:
            items = [(s, e) for s, e, sym in self._outages if sym is None or sym == symbol]
        return _merge(items)

    def quiet_intervals(self, symbol: str) -> list[tuple[float, float]]:
        """The quiet stretches of `symbol` (and of every symbol), merged and sorted."""
        with self._lock:
            items = [(s, e) for s, e, sym in self._quiet if sym is None or sym == symbol]
        return _merge(items)

    def listed_at(self, symbol: str) -> float:
        """When `symbol` was listed (0: always was)."""
        with self._lock:
            return self._listings.get(symbol, 0.0)

    def is_down(self, now: float) -> bool:
        with self._lock:
            return any(s <= now < e for s, e in self._downtimes)

    def take(self, kind: str, alias: str | None = None) -> FaultDecision:
        """The faults for one request of `kind` (or of its `alias`: "klines" for every dialect's candle
        endpoints), counting it against each matching rule's `n`."""
        d = FaultDecision()
        with self._lock:
            for rule in list(self._rules):
                if rule.path is not None and rule.path not in (kind, alias):
                    continue
                if rule.kind == "slow":
                    d.delay_s += rule.delay_s
                elif rule.kind in ("http_error", "rate_limit", "malformed"):
                    if d.error is not None or d.rate_limited or d.malformed:
                        continue
                    if rule.kind == "http_error":
                        d.error = rule
                    elif rule.kind == "rate_limit":
                        d.rate_limited = True
                    else:
                        d.malformed = True
                elif rule.kind == "duplicate":
                    if d.duplicate:
                        continue
                    d.duplicate = True
                elif rule.kind == "out_of_order":
                    if d.out_of_order:
                        continue
                    d.out_of_order = True
                if rule.remaining is not None:
                    rule.remaining -= 1
                    if rule.remaining <= 0:
                        self._rules.remove(rule)
        return d
