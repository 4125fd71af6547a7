"""The Binance dialects: spot (/api/v3) and USD-M futures (/fapi/v1) public REST endpoints (klines,
exchangeInfo, time, tickers, depth; on USD-M also mark-price klines, premiumIndex and fundingRate) as
JSON-ready payloads, read from the truth model with the armed faults
applied. Knows nothing of sockets or threads serving them."""

from __future__ import annotations

import json
import math
from collections.abc import Callable

from .candles import TIMEFRAMES, Rows
from .dialect import Answer, Dialect, DialectSpec, Endpoint, apply_row_faults, fmt8, fmt_float, ok
from .dialect import ApiError as DialectError
from .faults import API_PREFIX, FaultDecision, binance_error_body
from .markets import UNIT, Market
from .truth import MARK_BASIS_BP, Truth

MAX_KLINES_LIMIT = 1000
DEFAULT_KLINES_LIMIT = 500
MAX_FAPI_KLINES_LIMIT = 1500
FAPI_PREFIX = "/fapi/v1/"
FUNDING_INTERVAL_S = 8 * 3600  # Binance USD-M funds every 8 hours (00:00, 08:00, 16:00 UTC)
# the funding rate the emulator reports: Binance's default interest rate 0.01% per 8h, with the premium
# clamped away (the basis of truth.MARK_BASIS_BP is inside the +-0.05% band that clamp leaves at 0)
FUNDING_RATE = "0.00010000"

_BINANCE_TIMEFRAMES = {tf: tf for tf in TIMEFRAMES}
# Binance's kline grid where it is not the epoch's: 3d candles open at t % 259200 == 86400 (1970-01-02 + k x
# 3d; e.g. 1502668800 = 2017-08-14), 1w on Mondays (1970-01-05 + k x 7d)
BINANCE_GRID_OFFSETS = {"3d": 86_400, "1w": 4 * 86_400}

BINANCE_SPOT = DialectSpec(
    name="binance", ccxt_id="binance", market_type="spot",
    endpoints=(Endpoint("klines", API_PREFIX + "klines", MAX_KLINES_LIMIT, DEFAULT_KLINES_LIMIT,
                        limit_refused=True),),
    time_unit="ms", newest_first=False, omits_quiet=False, timeframes=_BINANCE_TIMEFRAMES, retry_after=True,
    grid_offsets=BINANCE_GRID_OFFSETS)
BINANCE_USDM = DialectSpec(
    name="binanceusdm", ccxt_id="binanceusdm", market_type="swap",
    endpoints=(Endpoint("klines", FAPI_PREFIX + "klines", MAX_FAPI_KLINES_LIMIT, DEFAULT_KLINES_LIMIT,
                        limit_refused=True),
               Endpoint("markPriceKlines", FAPI_PREFIX + "markPriceKlines", MAX_FAPI_KLINES_LIMIT,
                        DEFAULT_KLINES_LIMIT, limit_refused=True)),
    time_unit="ms", newest_first=False, omits_quiet=False, timeframes=_BINANCE_TIMEFRAMES, retry_after=True,
    grid_offsets=BINANCE_GRID_OFFSETS)


class ApiError(DialectError):
    """A Binance error answer: HTTP `status` with body {"code": code, "msg": msg}."""

    def __init__(self, status: int, code: int, msg: str) -> None:
        super().__init__(status, {"code": code, "msg": msg})
        self.code, self.msg = code, msg


_fmt = fmt8
_fmt_float = fmt_float


def binance_api_urls(u: str) -> dict[str, str]:
    """Every binance API url key of ccxt's binance classes, pointed at base url `u`."""
    return {
        "public": u + "/api/v3", "private": u + "/api/v3", "v1": u + "/api/v1",
        "sapi": u + "/sapi/v1", "sapiV2": u + "/sapi/v2", "sapiV3": u + "/sapi/v3", "sapiV4": u + "/sapi/v4",
        "dapiPublic": u + "/dapi/v1", "dapiPrivate": u + "/dapi/v1", "dapiPrivateV2": u + "/dapi/v2",
        "dapiData": u + "/futures/data", "eapiPublic": u + "/eapi/v1", "eapiPrivate": u + "/eapi/v1",
        "fapiPublic": u + "/fapi/v1", "fapiPublicV2": u + "/fapi/v2", "fapiPublicV3": u + "/fapi/v3",
        "fapiPrivate": u + "/fapi/v1", "fapiPrivateV2": u + "/fapi/v2", "fapiPrivateV3": u + "/fapi/v3",
        "fapiData": u + "/futures/data", "papi": u + "/papi/v1", "papiV2": u + "/papi/v2",
    }


class BinanceRoutes(Dialect):
    """Binance spot (`futures=False`) or USD-M futures: the payload of each request kind."""

    def __init__(self, truth: Truth, seed: int, futures: bool = False) -> None:
        super().__init__(truth, seed)
        self.futures = futures
        self.spec = BINANCE_USDM if futures else BINANCE_SPOT
        self.prefix = FAPI_PREFIX if futures else API_PREFIX
        self._max_limit = MAX_FAPI_KLINES_LIMIT if futures else MAX_KLINES_LIMIT
        self._markets = truth.markets

    # ------------------------------------------------------------------ the dialect interface
    def unified_symbol(self, mk: Market) -> str | None:
        return f"{mk.symbol}:{mk.quote}" if self.futures else mk.symbol

    def error_body(self, status: int) -> object:
        return binance_error_body(status)

    def ccxt_config(self, base_url: str) -> dict:
        api = binance_api_urls(base_url)
        return {
            "urls": {"api": dict(api), "test": dict(api), "demo": dict(api)},
            "options": {"fetchMarkets": {"types": ["linear" if self.futures else "spot"]},
                        "fetchCurrencies": False, "fetchMargins": False},
        }

    def answer(self, method: str, kind: str, path: str, params: dict, body: object, now: float,
               decision: FaultDecision, salt: int) -> Answer:
        return ok(self.route(kind, params, now, decision, salt))

    def unknown(self, method: str, path: str) -> ApiError:
        return ApiError(404, -5000, f"Path {path}, Method {method} is invalid")

    def route(self, kind: str, params: dict, now: float, decision: FaultDecision, salt: int = 0):
        """The payload for a GET of the prefix + `kind`; raises ApiError for Binance's error answers."""
        if kind == "ping":
            return {}
        if kind == "time":
            return {"serverTime": int(now * 1000)}
        if kind == "exchangeInfo":
            return self._exchange_info(now, params)
        if kind == "klines":
            return self.klines(params, now, decision, salt)
        if self.futures and kind == "markPriceKlines":
            return self.klines(params, now, decision, salt, price="mark")
        if self.futures and kind == "premiumIndex":
            return self._tickers(params, now, self._premium_index)
        if self.futures and kind == "fundingRate":
            return self._funding_rate_history(params, now)
        if kind in ("ticker/24hr", "ticker"):
            return self._tickers(params, now, self._ticker_24hr)
        if kind == "ticker/price":
            return self._tickers(params, now, lambda mk, now: {"symbol": mk.id,
                                                                "price": self._ticker_24hr(mk, now)["lastPrice"]})
        if kind == "ticker/bookTicker":
            return self._tickers(params, now, self._book_ticker)
        if kind == "depth":
            return self._depth(params, now)
        raise ApiError(404, -5000, f"Path {self.prefix}{kind}, Method GET is invalid")

    # ------------------------------------------------------------------ parameters
    def _param_market(self, params: dict, required: bool = True) -> Market | None:
        sym = params.get("symbol")
        if sym is None or sym == "":
            if required:
                raise ApiError(400, -1102, "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.")
            return None
        mk = self._markets.with_id(sym)
        if mk is None:
            raise ApiError(400, -1121, "Invalid symbol.")
        return mk

    @classmethod
    def _limit_param(cls, params: dict, default: int, cap: int) -> int:
        """`limit` (1..cap, `default` when absent); Binance refuses one outside with -1130."""
        limit = cls._int_param(params, "limit")
        limit = default if limit is None else limit
        if limit < 1 or limit > cap:
            raise ApiError(400, -1130, "Data sent for parameter 'limit' is not valid.")
        return limit

    @staticmethod
    def _int_param(params: dict, name: str) -> int | None:
        raw = params.get(name)
        if raw is None:
            return None
        if not raw.isdigit() or len(raw) > 20:
            raise ApiError(400, -1100, f"Illegal characters found in parameter '{name}'; legal range is '^[0-9]{{1,20}}$'.")
        return int(raw)

    def _symbols_param(self, raw: str) -> list[Market]:
        try:
            ids = json.loads(raw)
        except ValueError:
            raise ApiError(400, -1100, "Illegal characters found in parameter 'symbols'.") from None
        if not isinstance(ids, list) or not all(isinstance(s, str) for s in ids):
            raise ApiError(400, -1100, "Illegal characters found in parameter 'symbols'.")
        wanted: list[Market] = []
        for s in ids:
            mk = self._markets.with_id(s)
            if mk is None:
                raise ApiError(400, -1121, "Invalid symbol.")
            wanted.append(mk)
        return wanted

    # ------------------------------------------------------------------ klines
    def klines(self, params: dict, now: float, decision: FaultDecision, salt: int = 0,
               price: str | None = None) -> list:
        """GET klines (`price="mark"`: markPriceKlines): the candles the truth model has, in Binance's row
        format (a mark row has "0" in the volume and quote-volume fields and the count of its samples)."""
        mk = self._param_market(params)
        assert mk is not None
        interval = params.get("interval")
        if not interval:
            raise ApiError(400, -1102, "Mandatory parameter 'interval' was not sent, was empty/null, or malformed.")
        if interval not in TIMEFRAMES:
            raise ApiError(400, -1120, "Invalid interval.")
        tf = TIMEFRAMES[interval]
        limit = self._limit_param(params, DEFAULT_KLINES_LIMIT, self._max_limit)
        start_ms = self._int_param(params, "startTime")
        end_ms = self._int_param(params, "endTime")
        if start_ms is not None and end_ms is not None and start_ms > end_ms:
            raise ApiError(400, -1023, "Start time is greater than end time.")
        # open times in [startTime, endTime] (inclusive, ms) on Binance's grid of the interval
        hi = now if end_ms is None else end_ms // 1000
        lo = 0 if start_ms is None else -(-start_ms // 1000)
        rows = self.truth.rows(mk, tf, lo, hi, now, limit, from_end=start_ms is None, price=price,
                               off=self.spec.grid_offset(interval))
        return apply_row_faults(self._format_klines(rows, tf), decision, self.seed, salt)

    @staticmethod
    def _format_klines(rows: Rows, tf: int) -> list:
        if not len(rows):
            return []
        f = _fmt
        return [
            [t * 1000, f(o), f(h), f(lo), f(c), f(v), t * 1000 + tf * 1000 - 1, _fmt_float(q), tr, f(tb),
             _fmt_float(tq), "0"]
            for t, o, h, lo, c, v, q, tr, tb, tq in zip(
                rows.t.tolist(), rows.o.tolist(), rows.h.tolist(), rows.l.tolist(), rows.c.tolist(),
                rows.v.tolist(), rows.quote.tolist(), rows.trades.tolist(), rows.taker_base.tolist(),
                rows.taker_quote.tolist(), strict=True)
        ]

    # ------------------------------------------------------------------ mark price and funding (USD-M)
    def _premium_index(self, mk: Market, now: float) -> dict:
        """GET /fapi/v1/premiumIndex of one market: the forming 1m mark price, the index it sits
        MARK_BASIS_BP above, the funding rate and the next funding time."""
        last = self._last_price_units(mk, now)
        mark = last * (10_000 + MARK_BASIS_BP) // 10_000
        next_funding = (math.floor(now / FUNDING_INTERVAL_S) + 1) * FUNDING_INTERVAL_S
        return {"symbol": mk.id, "markPrice": _fmt(mark), "indexPrice": _fmt(last),
                "estimatedSettlePrice": _fmt(last), "lastFundingRate": FUNDING_RATE, "interestRate": "0.00010000",
                "nextFundingTime": next_funding * 1000, "time": int(now * 1000)}

    def _funding_rate_history(self, params: dict, now: float) -> list:
        """GET /fapi/v1/fundingRate: the funding events (every 8 h after the listing) in [startTime, endTime],
        the first `limit` (default 100, max 1000) oldest first; without startTime the latest `limit`."""
        mk = self._param_market(params)
        assert mk is not None
        limit = self._limit_param(params, 100, 1000)
        start_ms, end_ms = self._int_param(params, "startTime"), self._int_param(params, "endTime")
        first = self.truth.first_open(mk, FUNDING_INTERVAL_S)
        hi = math.floor((now if end_ms is None else min(now, end_ms / 1000)) / FUNDING_INTERVAL_S)
        lo = max(first // FUNDING_INTERVAL_S, 0 if start_ms is None else -(-start_ms // (FUNDING_INTERVAL_S * 1000)))
        events = list(range(lo, hi + 1))
        events = events[:limit] if start_ms is not None else events[-limit:]
        out = []
        for k in events:
            t = k * FUNDING_INTERVAL_S
            rows = self.truth.rows(mk, 60, t - 60, t - 60, now, price="mark")
            mark = _fmt(int(rows.c[0])) if len(rows) else ""
            out.append({"symbol": mk.id, "fundingTime": t * 1000, "fundingRate": FUNDING_RATE, "markPrice": mark})
        return out

    # ------------------------------------------------------------------ exchangeInfo
    def _exchange_info(self, now: float, params: dict) -> dict:
        if self.futures:
            return self._futures_exchange_info(now)
        wanted: list[Market] = list(self._markets)
        if params.get("symbol"):
            wanted = [self._param_market(params)]  # type: ignore[list-item]
        elif params.get("symbols"):
            wanted = self._symbols_param(params["symbols"])
        return {
            "timezone": "UTC",
            "serverTime": int(now * 1000),
            "rateLimits": [
                {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 6000},
                {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 100},
                {"rateLimitType": "ORDERS", "interval": "DAY", "intervalNum": 1, "limit": 200000},
                {"rateLimitType": "RAW_REQUESTS", "interval": "MINUTE", "intervalNum": 5, "limit": 61000},
            ],
            "exchangeFilters": [],
            "symbols": [self._symbol_info(mk) for mk in wanted],
        }

    @staticmethod
    def _symbol_info(mk: Market) -> dict:
        tick, step = _fmt(mk.tick_units), _fmt(mk.step_units)
        max_qty_units = int(9_000_000 / mk.base_price * UNIT) // mk.step_units * mk.step_units
        max_qty = _fmt(min(max_qty_units, 9_000_000_000 * UNIT))
        return {
            "symbol": mk.id,
            "status": "TRADING",
            "baseAsset": mk.base,
            "baseAssetPrecision": 8,
            "quoteAsset": mk.quote,
            "quotePrecision": 8,
            "quoteAssetPrecision": 8,
            "baseCommissionPrecision": 8,
            "quoteCommissionPrecision": 8,
            "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS", "STOP_LOSS_LIMIT", "TAKE_PROFIT",
                           "TAKE_PROFIT_LIMIT"],
            "icebergAllowed": True,
            "ocoAllowed": True,
            "otoAllowed": True,
            "quoteOrderQtyMarketAllowed": True,
            "allowTrailingStop": True,
            "cancelReplaceAllowed": True,
            "amendAllowed": True,
            "isSpotTradingAllowed": True,
            "isMarginTradingAllowed": False,
            "filters": [
                {"filterType": "PRICE_FILTER", "minPrice": tick, "maxPrice": _fmt(10**6 * UNIT), "tickSize": tick},
                {"filterType": "LOT_SIZE", "minQty": step, "maxQty": max_qty, "stepSize": step},
                {"filterType": "ICEBERG_PARTS", "limit": 10},
                {"filterType": "MARKET_LOT_SIZE", "minQty": "0.00000000", "maxQty": max_qty,
                 "stepSize": "0.00000000"},
                {"filterType": "TRAILING_DELTA", "minTrailingAboveDelta": 10, "maxTrailingAboveDelta": 2000,
                 "minTrailingBelowDelta": 10, "maxTrailingBelowDelta": 2000},
                {"filterType": "PERCENT_PRICE_BY_SIDE", "bidMultiplierUp": "5", "bidMultiplierDown": "0.2",
                 "askMultiplierUp": "5", "askMultiplierDown": "0.2", "avgPriceMins": 5},
                {"filterType": "NOTIONAL", "minNotional": "5.00000000", "applyMinToMarket": True,
                 "maxNotional": "9000000.00000000", "applyMaxToMarket": False, "avgPriceMins": 5},
                {"filterType": "MIN_NOTIONAL", "minNotional": "5.00000000", "applyToMarket": True,
                 "avgPriceMins": 5},
                {"filterType": "MAX_NUM_ORDERS", "maxNumOrders": 200},
                {"filterType": "MAX_NUM_ALGO_ORDERS", "maxNumAlgoOrders": 5},
            ],
            "permissions": ["SPOT"],
            "permissionSets": [["SPOT"]],
            "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
            "allowedSelfTradePreventionModes": ["EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"],
        }

    def _futures_exchange_info(self, now: float) -> dict:
        """GET /fapi/v1/exchangeInfo: every market as a USD-M perpetual settled in its quote asset."""
        symbols = []
        for mk in self._markets:
            tick, step = _fmt(mk.tick_units), _fmt(mk.step_units)
            symbols.append({
                "symbol": mk.id, "pair": mk.id, "contractType": "PERPETUAL", "deliveryDate": 4133404800000,
                "onboardDate": int(self.truth.first_open(mk, 60) * 1000), "status": "TRADING",
                "maintMarginPercent": "2.5000", "requiredMarginPercent": "5.0000",
                "baseAsset": mk.base, "quoteAsset": mk.quote, "marginAsset": mk.quote,
                "pricePrecision": max(0, 8 - len(str(mk.tick_units)) + 1),
                "quantityPrecision": max(0, 8 - len(str(mk.step_units)) + 1),
                "baseAssetPrecision": 8, "quotePrecision": 8, "underlyingType": "COIN", "underlyingSubType": [],
                "triggerProtect": "0.0500", "liquidationFee": "0.012500", "marketTakeBound": "0.05",
                "maxMoveOrderLimit": 10000,
                "filters": [
                    {"filterType": "PRICE_FILTER", "minPrice": tick, "maxPrice": _fmt(10**6 * UNIT), "tickSize": tick},
                    {"filterType": "LOT_SIZE", "minQty": step, "maxQty": "1000.00000000", "stepSize": step},
                    {"filterType": "MARKET_LOT_SIZE", "minQty": step, "maxQty": "120.00000000", "stepSize": step},
                    {"filterType": "MAX_NUM_ORDERS", "limit": 200},
                    {"filterType": "MAX_NUM_ALGO_ORDERS", "limit": 10},
                    {"filterType": "MIN_NOTIONAL", "notional": "100"},
                    {"filterType": "PERCENT_PRICE", "multiplierUp": "1.0500", "multiplierDown": "0.9500",
                     "multiplierDecimal": "4"},
                ],
                "orderTypes": ["LIMIT", "MARKET", "STOP", "STOP_MARKET", "TAKE_PROFIT", "TAKE_PROFIT_MARKET",
                               "TRAILING_STOP_MARKET"],
                "timeInForce": ["GTC", "IOC", "FOK", "GTX", "GTD"],
            })
        return {
            "timezone": "UTC", "serverTime": int(now * 1000), "futuresType": "U_MARGINED",
            "rateLimits": [
                {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 2400},
                {"rateLimitType": "ORDERS", "interval": "MINUTE", "intervalNum": 1, "limit": 1200},
                {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 300},
            ],
            "exchangeFilters": [],
            "assets": [{"asset": q, "marginAvailable": True, "autoAssetExchange": "-10000"}
                       for q in sorted({mk.quote for mk in self._markets})],
            "symbols": symbols,
        }

    # ------------------------------------------------------------------ tickers and depth
    def _tickers(self, params: dict, now: float, one: Callable[[Market, float], dict]):
        mk = self._param_market(params, required=False)
        if mk is not None:
            return one(mk, now)
        if params.get("symbols"):
            return [one(m, now) for m in self._symbols_param(params["symbols"])]
        return [one(m, now) for m in self._markets]

    def _last_price_units(self, mk: Market, now: float) -> int:
        return self.truth.day(mk, now).last

    def _ticker_24hr(self, mk: Market, now: float) -> dict:
        day = self.truth.day(mk, now)
        t_ms = int(now * 1000)
        o, last, hi, lo, vol, qv, count = day.open, day.last, day.high, day.low, day.volume, day.quote_volume, day.trades
        tick = mk.tick_units
        bid, ask = max(tick, last - tick), last + tick
        change = last - o
        pct = (change / o * 100.0) if o else 0.0
        wavg = (qv / (vol / UNIT)) if vol else last / UNIT
        first_id = int(now // 60) * 400
        return {
            "symbol": mk.id,
            "priceChange": _fmt(change),
            "priceChangePercent": f"{pct:.3f}",
            "weightedAvgPrice": _fmt_float(wavg),
            "prevClosePrice": _fmt(o),
            "lastPrice": _fmt(last),
            "lastQty": _fmt(mk.step_units * 3),
            "bidPrice": _fmt(bid),
            "bidQty": _fmt(mk.step_units * 1000),
            "askPrice": _fmt(ask),
            "askQty": _fmt(mk.step_units * 700),
            "openPrice": _fmt(o),
            "highPrice": _fmt(max(hi, last)),
            "lowPrice": _fmt(min(lo, last)),
            "volume": _fmt(vol),
            "quoteVolume": _fmt_float(qv),
            "openTime": t_ms - 86_400_000,
            "closeTime": t_ms,
            "firstId": first_id,
            "lastId": first_id + max(0, count - 1),
            "count": count,
        }

    def _book_ticker(self, mk: Market, now: float) -> dict:
        last = self._last_price_units(mk, now)
        tick = mk.tick_units
        return {"symbol": mk.id, "bidPrice": _fmt(max(tick, last - tick)), "bidQty": _fmt(mk.step_units * 1000),
                "askPrice": _fmt(last + tick), "askQty": _fmt(mk.step_units * 700)}

    def _depth(self, params: dict, now: float) -> dict:
        mk = self._param_market(params)
        assert mk is not None
        book = self.truth.book(mk, now, self._limit_param(params, 100, 5000))
        return {"lastUpdateId": int(now * 1000), "bids": [[_fmt(p), _fmt(q)] for p, q in book.bids],
                "asks": [[_fmt(p), _fmt(q)] for p, q in book.asks]}
