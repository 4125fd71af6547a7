"""The Coinbase Advanced dialect: /api/v3/brokerage/market/products/{id}/candles (start/end in seconds, at
most 350 buckets a request, newest first, buckets without trades left out), the public product list, the v2
currency, exchange-rate and time endpoints ccxt's load_markets reads. Spot markets only."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import ClassVar

from .. import dialect as d
from ..faults import FaultDecision
from ..markets import Market

V3 = "/api/v3/brokerage/"
V2 = "/v2/"
CANDLES_KIND = "market/products/candles"

COINBASE = d.DialectSpec(
    name="coinbase", ccxt_id="coinbase", market_type="spot",
    endpoints=(d.Endpoint(CANDLES_KIND, V3 + "market/products/{product_id}/candles", 350, 350,
                        limit_refused=True),),
    time_unit="s", newest_first=True, omits_quiet=True,
    timeframes={"1m": "ONE_MINUTE", "5m": "FIVE_MINUTE", "15m": "FIFTEEN_MINUTE", "30m": "THIRTY_MINUTE",
                "1h": "ONE_HOUR", "2h": "TWO_HOUR", "6h": "SIX_HOUR", "1d": "ONE_DAY"},
    default_symbols=("BTC/USD", "ETH/USD", "SOL/USD", "BTC/USDT", "ETH/BTC"))

TOO_MANY = "start and end argument is invalid - number of candles requested should be less than 350"
_FIAT = {"USD", "EUR", "GBP"}


def _invalid(message: str) -> d.ApiError:
    return d.ApiError(400, {"error": "INVALID_ARGUMENT", "error_details": message, "message": message})


def product_id(mk: Market) -> str:
    return f"{mk.base}-{mk.quote}"


class CoinbaseDialect(d.Dialect):
    spec = COINBASE
    not_found = {"error": "NOT_FOUND", "message": "Not Found"}

    def kind(self, method: str, path: str, body: object) -> str:
        if path.startswith(V3):
            tail = path[len(V3):].strip("/")
            parts = tail.split("/")
            if len(parts) == 4 and parts[:2] == ["market", "products"] and parts[3] in ("candles", "ticker"):
                return CANDLES_KIND if parts[3] == "candles" else "market/products/ticker"
            return tail
        if path.startswith(V2):
            return "v2/" + path[len(V2):].strip("/")
        return path

    def ccxt_config(self, base_url: str) -> dict:
        return {"urls": {"api": {"rest": base_url}}}

    error_bodies: ClassVar[Mapping[int, object]] = {
        429: {"errors": [{"id": "rate_limit_exceeded", "message": "Rate limit exceeded"}]}}
    server_error = {"errors": [{"id": "internal_server_error", "message": "Internal server error"}]}
    client_error = {"error": "INVALID_ARGUMENT", "error_details": "invalid request", "message": "invalid request"}

    def answer(self, method: str, kind: str, path: str, params: dict, body: object, now: float,
               decision: FaultDecision, salt: int) -> d.Answer:
        if kind == "v2/time":
            return d.ok({"data": {"iso": "", "epoch": int(now)}})
        if kind == "time":
            return d.ok({"iso": "", "epochSeconds": str(int(now)), "epochMillis": str(int(now * 1000))})
        if kind == "v2/currencies":
            return d.ok({"data": [{"id": c, "name": c, "min_size": "0.01"} for c in self._codes() if c in _FIAT]})
        if kind == "v2/currencies/crypto":
            return d.ok({"data": [{"asset_id": c.lower(), "code": c, "name": c, "color": "#000000", "sort_index": i,
                                 "exponent": 8, "type": "crypto", "address_regex": ""}
                                for i, c in enumerate(self._codes()) if c not in _FIAT]})
        if kind == "v2/exchange-rates":
            return d.ok({"data": {"currency": "USD", "rates": {c: "1" for c in self._codes()}}})
        if kind == "market/products":
            return d.ok(self._products(params, now))
        if kind == "market/products/ticker":
            return d.ok(self._ticker(path, now))
        if kind == CANDLES_KIND:
            return d.ok(self._candles(path, params, now, decision, salt))
        raise self.unknown(method, path)

    def _codes(self) -> list[str]:
        return sorted({c for _, mk in self.listed() for c in (mk.base, mk.quote)})

    def _products(self, params: dict, now: float) -> dict:
        if params.get("product_type", "SPOT") != "SPOT":
            return {"products": [], "num_products": 0}
        products = []
        for _, mk in self.listed():
            rows = self.truth.forming(mk, 60, now)
            px = d.fmt_short(int(rows.c[0])) if len(rows) else "0"
            products.append({
                "product_id": product_id(mk), "price": px, "price_percentage_change_24h": "0",
                "volume_24h": "1000", "volume_percentage_change_24h": "0",
                "base_increment": d.fmt_short(mk.step_units), "quote_increment": d.fmt_short(mk.tick_units),
                "quote_min_size": "1", "quote_max_size": "150000000", "base_min_size": d.fmt_short(mk.step_units),
                "base_max_size": "3400", "base_name": mk.base, "quote_name": mk.quote, "watched": False,
                "is_disabled": False, "new": False, "status": "online", "cancel_only": False, "limit_only": False,
                "post_only": False, "trading_disabled": False, "auction_mode": False, "product_type": "SPOT",
                "quote_currency_id": mk.quote, "base_currency_id": mk.base, "fcm_trading_session_details": None,
                "mid_market_price": "", "alias": "", "alias_to": [], "base_display_symbol": mk.base,
                "quote_display_symbol": mk.quote, "view_only": False, "price_increment": d.fmt_short(mk.tick_units),
                "display_name": f"{mk.base}-{mk.quote}", "product_venue": "CBE",
            })
        return {"products": products, "num_products": len(products)}

    def _market_in(self, path: str) -> Market:
        pid = path.rstrip("/").split("/")[-2]
        mk = next((m for _, m in self.listed() if product_id(m) == pid), None)
        if mk is None:
            raise d.ApiError(404, {"error": "NOT_FOUND", "error_details": "ProductID is invalid",
                                   "message": "ProductID is invalid"})
        return mk

    def _ticker(self, path: str, now: float) -> dict:
        mk = self._market_in(path)
        day, f = self.truth.day(mk, now), d.fmt_short
        trade = {"trade_id": str(int(now)), "product_id": product_id(mk), "price": f(day.last),
                 "size": f(mk.step_units), "time": "", "side": "BUY", "bid": "", "ask": ""}
        return {"trades": [trade], "best_bid": f(day.bid), "best_ask": f(day.ask)}

    def _candles(self, path: str, params: dict, now: float, decision: FaultDecision, salt: int) -> dict:
        mk = self._market_in(path)
        tf = self.timeframe_of(params.get("granularity", ""))
        if tf is None:
            raise _invalid("granularity argument is invalid")
        ep = COINBASE.endpoints[0]
        try:
            start, end = int(params["start"]), int(params["end"])
            limit = int(params.get("limit", ep.page_cap))
        except (KeyError, ValueError):
            raise _invalid("start and end argument is invalid") from None
        if not 1 <= limit <= ep.page_cap or end < start or math.ceil((end - start) / tf) > ep.page_cap:
            raise _invalid(TOO_MANY)
        # buckets opening in [start, end): end exclusive (the emulator's reading, see the dialect notes)
        rows = self.served(self.truth.rows(mk, tf, math.ceil(start / tf) * tf, math.ceil(end / tf) * tf - tf, now))
        out = [{"start": str(t), "low": d.fmt_short(lw), "high": d.fmt_short(h), "open": d.fmt_short(o),
                "close": d.fmt_short(c), "volume": d.fmt_short(v)}
               for t, o, h, lw, c, v, _, _ in reversed(d.columns(rows))][:limit]
        return {"candles": d.apply_row_faults(out, decision, self.seed, salt)}
