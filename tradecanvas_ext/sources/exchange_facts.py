"""What the range walk must know about each exchange's klines endpoint and cannot read from an answer alone:
page limit, which parameters ccxt's `fetch_ohlcv` understands for it, whether it omits candles without
trades, its known history reach, how it says "too old", and its late-candle grace.

Read from ccxt itself where ccxt states it (`features[market]['fetchOHLCV']['limit']`, the class's own
`fetch_ohlcv`), from freqtrade's records (`ohlcv_has_history`, `ohlcv_candle_limit`) and the exchanges'
documentation otherwise (sources named per entry). It must never make a request or hold state.
"""
from __future__ import annotations

import functools
import inspect
import re
from dataclasses import dataclass

import ccxt

from .range_walk import TooOld
from .reach import Reach

DEFAULT_CANDLE_LIMIT = 500  # when ccxt does not state the exchange's klines limit
LATE_CANDLE_GRACE_S = 15.0  # freqtrade's ohlcv_late_candle_grace_secs (clamped to half a candle)

# Pages above ccxt's stated limit that the exchange documents: Binance USD-M futures /fapi/v1/klines "limit
# default 500, max 1500". ccxt's binance fetch_ohlcv clamps every class to 1000 and trims the parsed rows to
# that, so these pages go through ccxt's own implicit endpoint method and row parser instead (`RAW_KLINES`).
RAW_PAGE_LIMITS: dict[tuple[str, str], int] = {("binance", "futures"): 1500, ("binanceusdm", "futures"): 1500}
RAW_KLINES: dict[str, str] = {"binance": "fapiPublicGetKlines", "binanceusdm": "fapiPublicGetKlines"}

# Latest-N windows (the forming candle included): freqtrade marks these `ohlcv_has_history: False`.
# Kraken OHLC "returns up to 720 of the most recent entries"; Hyperliquid candleSnapshot "only the most
# recent 5000 candles are available"; Gate v4 candlesticks refuse `from` older than "10000 points ago";
# Luno (freqtrade: "only provides the last 1000 candles").
KNOWN_REACH: dict[str, int] = {"kraken": 720, "hyperliquid": 5000, "gate": 10_000, "luno": 1000}

# Exchanges whose klines skip an interval without trades (Coinbase Advanced Trade / Exchange: "if no
# trades occur in a bucket, no candle is returned for it").
OMITS_EMPTY: frozenset[str] = frozenset({"coinbase", "coinbaseexchange", "coinbaseinternational"})

# OKX: ccxt reads /market/history-candles when `since` is older than 1439 candles (its own wall clock);
# history-candles serves at most 100 rows a page, /market/candles 300. We choose the endpoint on the
# runtime clock and say so with `type`, so the page limit and the endpoint always agree.
OKX_HISTORY_BORDER_CANDLES = 1439
OKX_HISTORY_LIMIT = 100

_TOO_OLD = re.compile(r"too (?:long ago|old|far)", re.IGNORECASE)
_POINTS = re.compile(r"(\d+)\s*(?:points|candles)", re.IGNORECASE)


@functools.cache
def _knows_until(cls: type) -> bool:
    """Whether the class's own fetch_ohlcv reads `params['until']` (Kraken's does not: it has no end bound)."""
    try:
        source = inspect.getsource(cls.fetch_ohlcv)
    except (OSError, TypeError):
        return False
    body = source.split('"""')[-1]
    return "'until'" in body or '"until"' in body or "handle_until_option" in body


def stated_limit(exchange, symbol: str) -> int:
    """ccxt's `features` page size for this market type."""
    try:
        market = exchange.market(symbol)
        feature = exchange.features.get(market["type"]) or {}
        if market["type"] in ("swap", "future"):
            feature = feature.get("linear" if market.get("linear") else "inverse") or {}
        limit = int((feature.get("fetchOHLCV") or {}).get("limit") or 0)
    except (AttributeError, KeyError, TypeError, ValueError):
        limit = 0
    return limit if limit > 0 else DEFAULT_CANDLE_LIMIT


def late_candle_grace_s(tf: int) -> float:
    """freqtrade's grace for the just-closed candle: 15 s, at most half a candle."""
    return min(LATE_CANDLE_GRACE_S, tf / 2)


def known_reach(exchange_id: str) -> Reach | None:
    candles = KNOWN_REACH.get(exchange_id)
    return None if candles is None else Reach(candles, 0.0, "known")


def too_old(exc: Exception) -> TooOld | None:
    """A refusal of a range as too old (Gate: 'Candlestick too long ago. Maximum 10000 points ago are
    allowed'), as TooOld with the reach it names; None for any other error."""
    if not isinstance(exc, ccxt.BadRequest) or not _TOO_OLD.search(str(exc)):
        return None
    named = _POINTS.search(str(exc))
    return TooOld(exc, int(named.group(1)) if named else None)


@dataclass(frozen=True)
class ExchangeFacts:
    """One exchange and market, as the ccxt transport pages it."""

    exchange_id: str
    limit: int  # rows a page asks at most
    knows_until: bool  # a page is bounded by `until`; otherwise it asks `limit` rows from `since`
    raw_limit: bool  # send `limit` in params too (past ccxt's own clamp)
    omits_empty: bool
    okx_history: bool

    @classmethod
    def of(cls, exchange, symbol: str, market: str) -> ExchangeFacts:
        ex_id = str(exchange.id)
        raw = RAW_PAGE_LIMITS.get((ex_id, market))
        return cls(ex_id, raw or stated_limit(exchange, symbol), _knows_until(type(exchange)), raw is not None,
                   ex_id in OMITS_EMPTY, ex_id == "okx")

    def page_limit(self, since: int, now: float, tf: int) -> int:
        if self.okx_history and self._okx_history(since, now, tf):
            return min(self.limit, OKX_HISTORY_LIMIT)
        return self.limit

    def _okx_history(self, since: int, now: float, tf: int) -> bool:
        return since < now - OKX_HISTORY_BORDER_CANDLES * tf

    def fetch(self, exchange, symbol: str, timeframe: str, start: int, end: int, asked: int, now: float,
              tf: int, extra: dict | None = None) -> list:
        """One page of raw rows [ms, o, h, l, c, v] through ccxt, with only the parameters its class reads;
        `extra` (a mark / index price) goes through ccxt's unified fetch_ohlcv, never the raw klines path."""
        if self.raw_limit and not extra and exchange.market(symbol).get("linear"):
            method = getattr(exchange, RAW_KLINES[self.exchange_id])
            answer = method({"symbol": exchange.market_id(symbol), "interval": exchange.timeframes[timeframe],
                             "startTime": start * 1000, "endTime": (end + tf) * 1000 - 1, "limit": asked})
            return exchange.parse_ohlcvs(answer, exchange.market(symbol), timeframe, start * 1000, None)
        return exchange.fetch_ohlcv(symbol, timeframe, since=start * 1000, limit=asked,
                                    params={**self.params(start, end, asked, now, tf), **(extra or {})})

    def params(self, start: int, end: int, asked: int, now: float, tf: int) -> dict:
        """fetch_ohlcv params for the page [start, end]: only what this exchange's ccxt class reads."""
        out: dict = {}
        if self.knows_until:
            # the close (ms) of the page's last candle: right whether the exchange treats it as inclusive
            # or exclusive, and whether it filters by open or close time
            out["until"] = (end + tf) * 1000 - 1
        if self.okx_history:
            out["type"] = "HistoryCandles" if self._okx_history(start, now, tf) else "Candles"
        return out
