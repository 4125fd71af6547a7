"""The Bybit v5 dialect: /v5/market/kline (newest first, start/end inclusive in ms, 1000 a page),
/v5/market/instruments-info, /v5/market/time, /v5/market/tickers and /v5/market/orderbook, with Bybit's
retCode bodies. Spot markets only."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import ClassVar

from .. import dialect as d
from ..faults import FaultDecision
from ..markets import UNIT

PREFIX = "/v5/"
ORDERBOOK_DEFAULT, ORDERBOOK_CAP = 1, 200  # spot depth: Bybit's docs, "[1, 200]. Default: 1"

BYBIT = d.DialectSpec(
    name="bybit", ccxt_id="bybit", market_type="spot",
    endpoints=(d.Endpoint("market/kline", PREFIX + "market/kline", 1000, 200),),
    time_unit="ms", newest_first=True, omits_quiet=False,
    timeframes={"1m": "1", "3m": "3", "5m": "5", "15m": "15", "30m": "30", "1h": "60", "2h": "120",
                "4h": "240", "6h": "360", "12h": "720", "1d": "D"},
    rate_limit_status=200)  # per-endpoint limit: HTTP 200 with retCode 10006 (IP limit: 403)



def _body(code: int, msg: str, now_ms: int, result: object = None) -> dict:
    return {"retCode": code, "retMsg": msg, "result": {} if result is None else result, "retExtInfo": {},
            "time": now_ms}


class BybitDialect(d.Dialect):
    spec = BYBIT
    prefix = PREFIX
    not_found = {"retCode": 404, "retMsg": "Not Found"}


    def ccxt_config(self, base_url: str) -> dict:
        urls = {k: base_url for k in ("spot", "futures", "v2", "public", "private")}
        return {"urls": {"api": dict(urls), "test": dict(urls), "demotrading": dict(urls)}}

    # 403: Bybit's IP limit (plain text); 429 is not Bybit's, answered as its per-endpoint limit (10006)
    error_bodies: ClassVar[Mapping[int, object]] = {
        403: "access too frequent", 429: _body(10006, "Too many visits!", 0), 503: d.gateway_page(503)}
    server_error = _body(10016, "Internal server error.", 0)
    client_error = _body(10001, "params error", 0)

    def rate_limit_answer(self, retry_after_s: int) -> d.Answer:
        return d.Answer(200, _body(10006, "Too many visits!", 0),
                      {"X-Bapi-Limit": "600", "X-Bapi-Limit-Status": "0", "X-Bapi-Limit-Reset-Timestamp": "0"})

    def answer(self, method: str, kind: str, path: str, params: dict, body: object, now: float,
               decision: FaultDecision, salt: int) -> d.Answer:
        now_ms = int(now * 1000)
        if kind == "market/time":
            return d.ok(_body(0, "OK", now_ms, {"timeSecond": str(int(now)), "timeNano": str(now_ms * 1_000_000)}))
        if kind == "market/instruments-info":
            return d.ok(self._instruments(params, now_ms))
        if kind == "market/tickers":
            return d.ok(self._tickers(params, now, now_ms))
        if kind == "market/orderbook":
            return d.ok(self._orderbook(params, now_ms))
        if kind == "market/kline":
            return d.ok(self._kline(params, now, now_ms, decision, salt))
        raise self.unknown(method, path)

    def _instruments(self, params: dict, now_ms: int) -> dict:
        category = params.get("category", "")
        if category not in ("spot", "linear", "inverse", "option"):
            return _body(10001, "params error: Category is invalid", now_ms)
        items = []
        if category == "spot" and params.get("status", "Trading") == "Trading":
            for _, mk in self.listed():
                if params.get("symbol") and params["symbol"] != mk.id:
                    continue
                items.append({
                    "symbol": mk.id, "baseCoin": mk.base, "quoteCoin": mk.quote, "innovation": "0",
                    "status": "Trading", "marginTrading": "none", "stTag": "0",
                    "lotSizeFilter": {"basePrecision": d.fmt_short(mk.step_units), "quotePrecision": "0.00000001",
                                      "minOrderQty": d.fmt_short(mk.step_units),
                                      "maxOrderQty": d.fmt_short(int(9_000_000 / mk.base_price * UNIT)
                                                               // mk.step_units * mk.step_units),
                                      "minOrderAmt": "1", "maxOrderAmt": "2000000"},
                    "priceFilter": {"tickSize": d.fmt_short(mk.tick_units)},
                    "riskParameters": {"priceLimitRatioX": "0.05", "priceLimitRatioY": "0.05"},
                })
        return _body(0, "OK", now_ms, {"category": category, "list": items})

    def _tickers(self, params: dict, now: float, now_ms: int) -> dict:
        if params.get("category") != "spot":
            return _body(0, "OK", now_ms, {"category": params.get("category", ""), "list": []})
        items = []
        for _, mk in self.listed():
            if params.get("symbol") and params["symbol"] != mk.id:
                continue
            day, f = self.truth.day(mk, now), d.fmt_short
            items.append({"symbol": mk.id, "bid1Price": f(day.bid), "bid1Size": f(mk.step_units * 1000),
                          "ask1Price": f(day.ask), "ask1Size": f(mk.step_units * 700), "lastPrice": f(day.last),
                          "prevPrice24h": f(day.open), "price24hPcnt": f"{(day.last - day.open) / day.open:.4f}",
                          "highPrice24h": f(day.high), "lowPrice24h": f(day.low),
                          "turnover24h": f"{day.quote_volume:.8f}", "volume24h": f(day.volume)})
        return _body(0, "OK", now_ms, {"category": "spot", "list": items})

    def _orderbook(self, params: dict, now_ms: int) -> dict:
        """What freqtrade's dry-run asks before it fills an order (`fetch_l2_order_book`)."""
        mk = next((m for _, m in self.listed() if m.id == params.get("symbol")), None)
        if params.get("category") != "spot" or mk is None:
            return _body(10001, "Not supported symbols", now_ms)
        try:
            depth = max(1, min(int(params.get("limit", ORDERBOOK_DEFAULT)), ORDERBOOK_CAP))
        except ValueError:
            return _body(10001, "params error: invalid number", now_ms)
        book, f = self.truth.book(mk, now_ms / 1000, depth), d.fmt_short
        return _body(0, "OK", now_ms, {"s": mk.id, "b": [[f(p), f(q)] for p, q in book.bids],
                                       "a": [[f(p), f(q)] for p, q in book.asks], "ts": now_ms,
                                       "u": now_ms // 1000, "seq": now_ms // 1000, "cts": now_ms})

    def _kline(self, params: dict, now: float, now_ms: int, decision: FaultDecision, salt: int) -> dict:
        category = params.get("category", "linear")
        mk = next((m for _, m in self.listed() if m.id == params.get("symbol")), None)
        if category != "spot" or mk is None:
            return _body(10001, "Not supported symbols", now_ms)
        tf = self.timeframe_of(params.get("interval", ""))
        if tf is None:
            return _body(10001, "Invalid period!", now_ms)
        ep = BYBIT.endpoints[0]
        try:
            limit = int(params.get("limit", ep.default_limit))
            start = int(params["start"]) if "start" in params else None
            end = int(params["end"]) if "end" in params else None
        except ValueError:
            return _body(10001, "params error: invalid number", now_ms)
        limit = max(1, min(limit, ep.page_cap))
        if start is not None and end is not None and start > end:
            return _body(10001, "params error: start must be less than end", now_ms)
        tf_ms = tf * 1000
        lo = 0 if start is None else math.ceil(start / tf_ms) * tf
        hi = math.floor(now / tf) * tf if end is None else end // tf_ms * tf
        rows = self.truth.rows(mk, tf, lo, hi, now, limit, from_end=start is None)
        out = [[str(t * 1000), d.fmt_short(o), d.fmt_short(h), d.fmt_short(lw), d.fmt_short(c), d.fmt_short(v),
                d.fmt_short(int(round(q * UNIT)))] for t, o, h, lw, c, v, q, _ in reversed(d.columns(rows))]
        out = d.apply_row_faults(out, decision, self.seed, salt)
        return _body(0, "OK", now_ms, {"symbol": mk.id, "category": "spot", "list": out})
