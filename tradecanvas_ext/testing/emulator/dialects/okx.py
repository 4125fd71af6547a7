"""The OKX v5 dialect: /api/v5/market/candles (the latest 1440 buckets, 300 a page) and
/api/v5/market/history-candles (all history, 100 a page), both newest first with exclusive `after` (older
than) / `before` (newer than) in ms; /api/v5/public/instruments and /api/v5/public/time. Spot markets only."""

from __future__ import annotations

import math

from ..dialect import (
    Answer,
    ApiError,
    Dialect,
    DialectSpec,
    Endpoint,
    apply_row_faults,
    columns,
    fmt_short,
    gateway_page,
    ok,
)
from ..faults import FaultDecision
from ..markets import UNIT, Market

PREFIX = "/api/v5/"

OKX = DialectSpec(
    name="okx", ccxt_id="okx", market_type="spot",
    endpoints=(Endpoint("market/candles", PREFIX + "market/candles", 300, 100, reach=1440),
               Endpoint("market/history-candles", PREFIX + "market/history-candles", 100, 100)),
    time_unit="ms", newest_first=True, omits_quiet=False,
    # ccxt appends "utc" to bars of 6h and more; OKX's plain 6H/12H/1D are Hong Kong time (not served)
    timeframes={"1m": "1m", "3m": "3m", "5m": "5m", "15m": "15m", "30m": "30m", "1h": "1H", "2h": "2H",
                "4h": "4H", "6h": "6Hutc", "12h": "12Hutc", "1d": "1Dutc"})



def _err(code: str, msg: str) -> dict:
    return {"code": code, "msg": msg, "data": []}


class OkxDialect(Dialect):
    spec = OKX

    def kind(self, method: str, path: str, body: object) -> str:
        return path[len(PREFIX):].strip("/") if path.startswith(PREFIX) else path

    def unified_symbol(self, mk: Market) -> str | None:
        return mk.symbol

    def ccxt_config(self, base_url: str) -> dict:
        return {"urls": {"api": {"rest": base_url}, "test": {"rest": base_url}}}

    def error_body(self, status: int) -> object:
        if status == 429:
            return _err("50011", "Too Many Requests")
        if status == 503:
            return _err("50001", "Service temporarily unavailable. Please try again later.")
        if status in (502, 504):
            return gateway_page(status)
        if status >= 500:
            return _err("50026", "System error. Try again later")
        return _err("50000", "Body for POST request cannot be empty.")

    def answer(self, method: str, kind: str, path: str, params: dict, body: object, now: float,
               decision: FaultDecision, salt: int) -> Answer:
        if method != "GET" or not path.startswith(PREFIX):
            raise ApiError(404, _err("404", "Not Found"))
        if kind == "public/time":
            return ok({"code": "0", "msg": "", "data": [{"ts": str(int(now * 1000))}]})
        if kind == "public/instruments":
            return ok(self._instruments(params))
        if kind in OKX.candle_kinds:
            return self._candles(OKX.endpoint(kind), params, now, decision, salt)
        raise ApiError(404, _err("404", "Not Found"))

    def _instruments(self, params: dict) -> dict:
        inst_type = params.get("instType", "")
        if inst_type not in ("SPOT", "MARGIN", "SWAP", "FUTURES", "OPTION"):
            raise ApiError(400, _err("51000", "Parameter instType error"))
        data = []
        if inst_type == "SPOT":
            for _, mk in self.listed():
                data.append({
                    "instType": "SPOT", "instId": f"{mk.base}-{mk.quote}", "uly": "", "instFamily": "",
                    "baseCcy": mk.base, "quoteCcy": mk.quote, "settleCcy": "", "ctVal": "", "ctMult": "",
                    "ctValCcy": "", "optType": "", "stk": "", "listTime": str(self.truth.first_open(mk, 60) * 1000),
                    "expTime": "", "lever": "", "tickSz": fmt_short(mk.tick_units), "lotSz": fmt_short(mk.step_units),
                    "minSz": fmt_short(mk.step_units), "ctType": "", "alias": "", "state": "live",
                    "maxLmtSz": "9999999999", "maxMktSz": "1000000", "maxTwapSz": "", "maxIcebergSz": "",
                    "maxTriggerSz": "", "maxStopSz": "", "ruleType": "normal",
                })
        return {"code": "0", "msg": "", "data": data}

    def _candles(self, ep: Endpoint, params: dict, now: float, decision: FaultDecision, salt: int) -> Answer:
        inst = params.get("instId", "")
        mk = next((m for _, m in self.listed() if f"{m.base}-{m.quote}" == inst), None)
        if mk is None:
            raise ApiError(400, _err("51001", "Instrument ID does not exist"))
        tf = self.timeframe_of(params.get("bar", "1m"))
        if tf is None:
            raise ApiError(400, _err("51000", "Parameter bar error"))
        try:
            limit = int(params.get("limit", ep.default_limit))
            after = int(params["after"]) if params.get("after") else None
            before = int(params["before"]) if params.get("before") else None
        except ValueError:
            raise ApiError(400, _err("51000", "Parameter limit error")) from None
        limit = max(1, min(limit, ep.page_cap))
        tf_ms = tf * 1000
        # exclusive bounds: open time < after and > before
        hi = math.floor(now / tf) * tf if after is None else math.ceil(after / tf_ms) * tf - tf
        lo = 0 if before is None else (before // tf_ms) * tf + tf
        reach = ep.reach_start(tf, now)
        if reach is not None:
            lo = max(lo, reach)
        rows = self.truth.rows(mk, tf, lo, hi, now, limit, from_end=True)
        closed_before = math.floor(now / tf) * tf
        out = [[str(t * 1000), fmt_short(o), fmt_short(h), fmt_short(lw), fmt_short(c), fmt_short(v),
                fmt_short(int(round(q * UNIT))), fmt_short(int(round(q * UNIT))), "1" if t < closed_before else "0"]
               for t, o, h, lw, c, v, q, _ in reversed(columns(rows))]
        return ok({"code": "0", "msg": "", "data": apply_row_faults(out, decision, self.seed, salt)})
