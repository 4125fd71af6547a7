"""The OKX v5 dialect: /api/v5/market/candles (the latest 1440 buckets, 300 a page) and
/api/v5/market/history-candles (all history, 100 a page), both newest first with exclusive `after` (older
than) / `before` (newer than) in ms; /api/v5/public/instruments and /api/v5/public/time. Spot markets only."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import ClassVar

from .. import dialect as d
from ..faults import FaultDecision
from ..markets import UNIT

PREFIX = "/api/v5/"

OKX = d.DialectSpec(
    name="okx", ccxt_id="okx", market_type="spot",
    endpoints=(d.Endpoint("market/candles", PREFIX + "market/candles", 300, 100, reach=1440),
               d.Endpoint("market/history-candles", PREFIX + "market/history-candles", 100, 100)),
    time_unit="ms", newest_first=True, omits_quiet=False,
    # ccxt appends "utc" to bars of 6h and more; OKX's plain 6H/12H/1D are Hong Kong time (not served)
    timeframes={"1m": "1m", "3m": "3m", "5m": "5m", "15m": "15m", "30m": "30m", "1h": "1H", "2h": "2H",
                "4h": "4H", "6h": "6Hutc", "12h": "12Hutc", "1d": "1Dutc"})



def _err(code: str, msg: str) -> dict:
    return {"code": code, "msg": msg, "data": []}


class OkxDialect(d.Dialect):
    spec = OKX
    prefix = PREFIX
    not_found = _err("404", "Not Found")


    def ccxt_config(self, base_url: str) -> dict:
        return {"urls": {"api": {"rest": base_url}, "test": {"rest": base_url}}}

    error_bodies: ClassVar[Mapping[int, object]] = {
        429: _err("50011", "Too Many Requests"),
        503: _err("50001", "Service temporarily unavailable. Please try again later.")}
    server_error = _err("50026", "System error. Try again later")
    client_error = _err("50000", "Body for POST request cannot be empty.")

    def answer(self, method: str, kind: str, path: str, params: dict, body: object, now: float,
               decision: FaultDecision, salt: int) -> d.Answer:
        if kind == "public/time":
            return d.ok({"code": "0", "msg": "", "data": [{"ts": str(int(now * 1000))}]})
        if kind == "public/instruments":
            return d.ok(self._instruments(params))
        if kind in ("market/ticker", "market/tickers"):
            return d.ok({"code": "0", "msg": "", "data": self._tickers(kind, params, now)})
        if kind in OKX.candle_kinds:
            return self._candles(OKX.endpoint(kind), params, now, decision, salt)
        raise self.unknown(method, path)

    def _instruments(self, params: dict) -> dict:
        inst_type = params.get("instType", "")
        if inst_type not in ("SPOT", "MARGIN", "SWAP", "FUTURES", "OPTION"):
            raise d.ApiError(400, _err("51000", "Parameter instType error"))
        data = []
        if inst_type == "SPOT":
            for _, mk in self.listed():
                data.append({
                    "instType": "SPOT", "instId": f"{mk.base}-{mk.quote}", "uly": "", "instFamily": "",
                    "baseCcy": mk.base, "quoteCcy": mk.quote, "settleCcy": "", "ctVal": "", "ctMult": "",
                    "ctValCcy": "", "optType": "", "stk": "", "listTime": str(self.truth.first_open(mk, 60) * 1000),
                    "expTime": "", "lever": "", "tickSz": d.fmt_short(mk.tick_units), "lotSz": d.fmt_short(mk.step_units),
                    "minSz": d.fmt_short(mk.step_units), "ctType": "", "alias": "", "state": "live",
                    "maxLmtSz": "9999999999", "maxMktSz": "1000000", "maxTwapSz": "", "maxIcebergSz": "",
                    "maxTriggerSz": "", "maxStopSz": "", "ruleType": "normal",
                })
        return {"code": "0", "msg": "", "data": data}

    def _tickers(self, kind: str, params: dict, now: float) -> list:
        if kind == "market/tickers" and params.get("instType") != "SPOT":
            return []
        out = []
        for _, mk in self.listed():
            inst = f"{mk.base}-{mk.quote}"
            if kind == "market/ticker" and params.get("instId") != inst:
                continue
            day, f = self.truth.day(mk, now), d.fmt_short
            out.append({"instType": "SPOT", "instId": inst, "last": f(day.last), "lastSz": f(mk.step_units),
                        "askPx": f(day.ask), "askSz": f(mk.step_units * 700), "bidPx": f(day.bid),
                        "bidSz": f(mk.step_units * 1000), "open24h": f(day.open), "high24h": f(day.high),
                        "low24h": f(day.low), "volCcy24h": f"{day.quote_volume:.8f}", "vol24h": f(day.volume),
                        "ts": str(int(now * 1000)), "sodUtc0": f(day.open), "sodUtc8": f(day.open)})
        if kind == "market/ticker" and not out:
            raise d.ApiError(400, _err("51001", "Instrument ID does not exist"))
        return out

    def _candles(self, ep: d.Endpoint, params: dict, now: float, decision: FaultDecision, salt: int) -> d.Answer:
        inst = params.get("instId", "")
        mk = next((m for _, m in self.listed() if f"{m.base}-{m.quote}" == inst), None)
        if mk is None:
            raise d.ApiError(400, _err("51001", "Instrument ID does not exist"))
        tf = self.timeframe_of(params.get("bar", "1m"))
        if tf is None:
            raise d.ApiError(400, _err("51000", "Parameter bar error"))
        try:
            limit = int(params.get("limit", ep.default_limit))
            after = int(params["after"]) if params.get("after") else None
            before = int(params["before"]) if params.get("before") else None
        except ValueError:
            raise d.ApiError(400, _err("51000", "Parameter limit error")) from None
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
        out = [[str(t * 1000), d.fmt_short(o), d.fmt_short(h), d.fmt_short(lw), d.fmt_short(c), d.fmt_short(v),
                d.fmt_short(int(round(q * UNIT))), d.fmt_short(int(round(q * UNIT))), "1" if t < closed_before else "0"]
               for t, o, h, lw, c, v, q, _ in reversed(d.columns(rows))]
        return d.ok({"code": "0", "msg": "", "data": d.apply_row_faults(out, decision, self.seed, salt)})
