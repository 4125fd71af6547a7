"""Binance's public spot REST endpoints (klines, exchangeInfo, tickers, depth) as JSON-ready payloads,
read from the truth model with the armed faults applied. Knows nothing of sockets or threads serving them."""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Callable

import numpy as np

from .candles import TIMEFRAMES, Rows, build_rows, minute_block, present_times
from .faults import API_PREFIX, FaultController, FaultDecision
from .markets import GOLDEN, UNIT, Market, Markets, mix64, unit_float

MAX_KLINES_LIMIT = 1000
DEFAULT_KLINES_LIMIT = 500


class ApiError(Exception):
    """A Binance error answer: HTTP `status` with body {"code": code, "msg": msg}."""

    def __init__(self, status: int, code: int, msg: str) -> None:
        super().__init__(msg)
        self.status, self.code, self.msg = status, code, msg


def _fmt(units: int) -> str:
    """An integer count of 1e-8 as Binance's fixed 8-decimal string."""
    sign = "-" if units < 0 else ""
    units = abs(int(units))
    return f"{sign}{units // UNIT}.{units % UNIT:08d}"


def _fmt_float(value: float) -> str:
    return f"{value:.8f}"


class BinanceRoutes:
    """The payload of each request kind. `_lock` guards only the counter that salts shuffled klines."""

    def __init__(self, markets: Markets, seed: int, faults: FaultController) -> None:
        self._markets = markets
        self._seed = seed
        self._faults = faults
        self._lock = threading.Lock()
        self._update_id = 0

    def route(self, kind: str, params: dict, now: float, decision: FaultDecision):
        """The payload for a GET of `API_PREFIX + kind`; raises ApiError for Binance's error answers."""
        if kind == "ping":
            return {}
        if kind == "time":
            return {"serverTime": int(now * 1000)}
        if kind == "exchangeInfo":
            return self._exchange_info(now, params)
        if kind == "klines":
            return self.klines(params, now, decision)
        if kind in ("ticker/24hr", "ticker"):
            return self._tickers(params, now, self._ticker_24hr)
        if kind == "ticker/price":
            return self._tickers(params, now, lambda mk, now: {"symbol": mk.id,
                                                                "price": self._ticker_24hr(mk, now)["lastPrice"]})
        if kind == "ticker/bookTicker":
            return self._tickers(params, now, self._book_ticker)
        if kind == "depth":
            return self._depth(params, now)
        raise ApiError(404, -5000, f"Path {API_PREFIX}{kind}, Method GET is invalid")

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
    def klines(self, params: dict, now: float, decision: FaultDecision) -> list:
        """GET /api/v3/klines: the candles the truth model has, in Binance's row format."""
        mk = self._param_market(params)
        assert mk is not None
        interval = params.get("interval")
        if not interval:
            raise ApiError(400, -1102, "Mandatory parameter 'interval' was not sent, was empty/null, or malformed.")
        if interval not in TIMEFRAMES:
            raise ApiError(400, -1120, "Invalid interval.")
        tf = TIMEFRAMES[interval]
        limit = self._int_param(params, "limit")
        if limit is None:
            limit = DEFAULT_KLINES_LIMIT
        if limit < 1 or limit > MAX_KLINES_LIMIT:
            raise ApiError(400, -1130, "Data sent for parameter 'limit' is not valid.")
        start_ms = self._int_param(params, "startTime")
        end_ms = self._int_param(params, "endTime")
        if start_ms is not None and end_ms is not None and start_ms > end_ms:
            raise ApiError(400, -1023, "Start time is greater than end time.")
        tf_ms = tf * 1000
        now_open = math.floor(now / tf) * tf
        hi = now_open if end_ms is None else min(now_open, (end_ms // tf_ms) * tf)
        lo = 0 if start_ms is None else -(-start_ms // tf_ms) * tf
        outages = self._faults.outage_intervals(mk.symbol)
        times = present_times(tf, lo, hi, outages, limit, from_end=start_ms is None)
        rows = build_rows(mk, tf, times, now, outages)
        out = self._format_klines(rows, tf)
        if decision.duplicate and out:
            dup: list = []
            for i, row in enumerate(out):
                dup.append(row)
                if i % 3 == 0:
                    dup.append(list(row))
            out = dup
        if decision.out_of_order and len(out) >= 2:
            with self._lock:
                self._update_id += 1
                salt = self._update_id
            rng = np.random.default_rng([self._seed, salt])
            perm = rng.permutation(len(out))
            if np.all(perm == np.arange(len(out))):
                perm = perm[::-1]
            out = [out[i] for i in perm]
        return out

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

    # ------------------------------------------------------------------ exchangeInfo
    def _exchange_info(self, now: float, params: dict) -> dict:
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

    # ------------------------------------------------------------------ tickers and depth
    def _tickers(self, params: dict, now: float, one: Callable[[Market, float], dict]):
        mk = self._param_market(params, required=False)
        if mk is not None:
            return one(mk, now)
        if params.get("symbols"):
            return [one(m, now) for m in self._symbols_param(params["symbols"])]
        return [one(m, now) for m in self._markets]

    def _day_rows(self, mk: Market, now: float) -> Rows:
        now_open = math.floor(now / 60) * 60
        outages = self._faults.outage_intervals(mk.symbol)
        times = present_times(60, max(0, now_open - 1439 * 60), now_open, outages, None, False)
        return build_rows(mk, 60, times, now, outages)

    def _last_price_units(self, mk: Market, now: float) -> int:
        rows = self._day_rows(mk, now)
        if len(rows):
            return int(rows.c[-1])
        return int(minute_block(mk, np.array([[int(now // 60), int(now // 60) + 1]], dtype=np.int64))[0][0, 0])

    def _ticker_24hr(self, mk: Market, now: float) -> dict:
        rows = self._day_rows(mk, now)
        t_ms = int(now * 1000)
        if len(rows):
            o, last = int(rows.o[0]), int(rows.c[-1])
            hi, lo, vol = int(rows.h.max()), int(rows.l.min()), int(rows.v.sum())
            qv, count = float(rows.quote.sum()), int(rows.trades.sum())
        else:
            o = last = hi = lo = self._last_price_units(mk, now)
            vol, qv, count = 0, 0.0, 0
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
        limit = self._int_param(params, "limit")
        limit = 100 if limit is None else limit
        if limit < 1 or limit > 5000:
            raise ApiError(400, -1130, "Data sent for parameter 'limit' is not valid.")
        last = self._last_price_units(mk, now)
        tick = mk.tick_units
        lvl = np.arange(limit, dtype=np.int64)
        with np.errstate(over="ignore"):
            hq = mix64((lvl.astype(np.uint64) + np.uint64(int(now) & 0xFFFFFFFF)) * GOLDEN ^ np.uint64(mk.key))
        qty = (np.floor((0.1 + 5 * unit_float(hq, 0, 20)) * 100) * mk.step_units).astype(np.int64) + mk.step_units
        qty_a = (np.floor((0.1 + 5 * unit_float(hq, 20, 20)) * 100) * mk.step_units).astype(np.int64) + mk.step_units
        bids = [[_fmt(p), _fmt(q)] for p, q in zip((last - tick * (1 + lvl)).tolist(), qty.tolist(), strict=True)
                if p > 0]
        asks = [[_fmt(p), _fmt(q)] for p, q in zip((last + tick * (1 + lvl)).tolist(), qty_a.tolist(), strict=True)]
        return {"lastUpdateId": int(now * 1000), "bids": bids, "asks": asks}
