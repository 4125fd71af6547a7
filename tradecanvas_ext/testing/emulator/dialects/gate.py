"""The Gate v4 dialect: /api/v4/spot/candlesticks (from/to inclusive in seconds, ascending, 1000 a request,
a range reaching past the latest 10000 points refused with HTTP 400 INVALID_PARAM_VALUE), the spot pair,
currency and time lists, and empty lists for the derivative markets ccxt also loads. Spot markets only."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import ClassVar

from .. import dialect as d
from ..faults import FaultDecision
from ..markets import UNIT

PREFIX = "/api/v4/"

GATE = d.DialectSpec(
    name="gate", ccxt_id="gate", market_type="spot",
    endpoints=(d.Endpoint("spot/candlesticks", PREFIX + "spot/candlesticks", 1000, 100, reach=10000,
                        refuses_older=True, limit_refused=True),),
    time_unit="s", newest_first=False, omits_quiet=False,
    timeframes={"1m": "1m", "5m": "5m", "15m": "15m", "30m": "30m", "1h": "1h", "4h": "4h", "8h": "8h",
                "1d": "1d"})

TOO_LONG_AGO = "Candlestick too long ago. Maximum 10000 points ago are allowed"
TOO_MANY = "Maximum of 1000 points can be returned in a query"  # our wording: Gate's own is not documented


def _err(label: str, message: str) -> dict:
    return {"label": label, "message": message}


def _bad(message: str) -> d.ApiError:
    return d.ApiError(400, _err("INVALID_PARAM_VALUE", message))


class GateDialect(d.Dialect):
    spec = GATE
    prefix = PREFIX
    not_found = _err("NOT_FOUND", "not found")


    def ccxt_config(self, base_url: str) -> dict:
        api = base_url + "/api/v4"
        sections = ("wallet", "futures", "margin", "delivery", "spot", "options", "subAccounts", "sub_accounts",
                    "earn", "unified", "rebate", "account", "loan", "withdrawals", "flash_swap", "portfolio",
                    "multi_collateral_loan", "otc")
        urls = {"public": {s: api for s in sections}, "private": {s: api for s in sections}}
        return {"urls": {"api": urls, "test": urls}}

    error_bodies: ClassVar[Mapping[int, object]] = {429: _err("TOO_MANY_REQUESTS", "Request Rate limit Exceeded")}
    server_error = _err("SERVER_ERROR", "Internal server error")
    client_error = _err("INVALID_PARAM_VALUE", "invalid argument")

    def answer(self, method: str, kind: str, path: str, params: dict, body: object, now: float,
               decision: FaultDecision, salt: int) -> d.Answer:
        if kind == "spot/time":
            return d.ok({"server_time": int(now * 1000)})
        if kind == "spot/currency_pairs":
            return d.ok(self._pairs())
        if kind == "spot/currencies":
            return d.ok(self._currencies())
        if kind == "margin/currency_pairs" or kind.startswith(("futures/", "delivery/", "options/")):
            return d.ok([])  # derivative and margin lists: nothing emulated
        if kind == "spot/tickers":
            return d.ok(self._tickers(params, now))
        if kind == "spot/candlesticks":
            return d.ok(self._candles(params, now, decision, salt))
        raise self.unknown(method, path)

    def _pairs(self) -> list:
        return [{
            "id": f"{mk.base}_{mk.quote}", "base": mk.base, "base_name": mk.base, "quote": mk.quote,
            "quote_name": mk.quote, "fee": "0.2", "min_base_amount": d.fmt_short(mk.step_units),
            "min_quote_amount": "3", "max_quote_amount": "5000000",
            "amount_precision": 9 - len(str(mk.step_units)), "precision": 9 - len(str(mk.tick_units)),
            "trade_status": "tradable", "sell_start": self.truth.first_open(mk, 60),
            "buy_start": self.truth.first_open(mk, 60), "type": "normal",
        } for _, mk in self.listed()]

    def _currencies(self) -> list:
        codes = sorted({c for _, mk in self.listed() for c in (mk.base, mk.quote)})
        return [{"currency": c, "name": c, "delisted": False, "withdraw_disabled": False,
                 "withdraw_delayed": False, "deposit_disabled": False, "trade_disabled": False,
                 "chain": c, "chains": [{"name": c, "addr": "", "withdraw_disabled": False,
                                         "withdraw_delayed": False, "deposit_disabled": False}]}
                for c in codes]

    def _tickers(self, params: dict, now: float) -> list:
        out = []
        for _, mk in self.listed():
            pair = f"{mk.base}_{mk.quote}"
            if params.get("currency_pair") and params["currency_pair"] != pair:
                continue
            day, f = self.truth.day(mk, now), d.fmt_short
            out.append({"currency_pair": pair, "last": f(day.last), "lowest_ask": f(day.ask),
                        "highest_bid": f(day.bid), "change_percentage": f"{(day.last - day.open) / day.open * 100:.2f}",
                        "base_volume": f(day.volume), "quote_volume": f"{day.quote_volume:.8f}",
                        "high_24h": f(day.high), "low_24h": f(day.low)})
        if params.get("currency_pair") and not out:
            raise d.ApiError(400, _err("INVALID_CURRENCY_PAIR", f"Invalid currency pair {params['currency_pair']}"))
        return out

    def _candles(self, params: dict, now: float, decision: FaultDecision, salt: int) -> list:
        pair = params.get("currency_pair", "")
        mk = next((m for _, m in self.listed() if f"{m.base}_{m.quote}" == pair), None)
        if mk is None:
            raise d.ApiError(400, _err("INVALID_CURRENCY_PAIR", f"Invalid currency pair {pair}"))
        tf = self.timeframe_of(params.get("interval", "30m"))
        if tf is None:
            raise _bad("Invalid interval")
        ep = GATE.endpoints[0]
        try:
            start = int(params["from"]) if params.get("from") else None
            end = int(params["to"]) if params.get("to") else None
            limit = int(params["limit"]) if params.get("limit") else None
        except ValueError:
            raise _bad("invalid argument: from/to/limit") from None
        if limit is not None and start is not None:
            raise _bad("limit conflicts with from/to")
        now_open = math.floor(now / tf) * tf
        hi = now_open if end is None else min(now_open, end // tf * tf)
        if start is None:
            count = ep.default_limit if limit is None else limit
            if not 1 <= count <= ep.page_cap:
                raise _bad(TOO_MANY)
            lo = hi - (count - 1) * tf
        else:
            lo = math.ceil(start / tf) * tf
            if (hi - lo) // tf + 1 > ep.page_cap:
                raise _bad(TOO_MANY)
        reach = ep.reach_start(tf, now)
        assert reach is not None
        if lo < reach:
            raise _bad(TOO_LONG_AGO)
        rows = self.truth.rows(mk, tf, lo, hi, now)
        out = [[str(t), d.fmt_short(int(round(q * UNIT))), d.fmt_short(c), d.fmt_short(h), d.fmt_short(lw), d.fmt_short(o),
                d.fmt_short(v), "true" if t < now_open else "false"]
               for t, o, h, lw, c, v, q, _ in d.columns(rows)]
        return d.apply_row_faults(out, decision, self.seed, salt)
