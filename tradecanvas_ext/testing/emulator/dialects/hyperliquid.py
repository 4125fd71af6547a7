"""The Hyperliquid dialect: POST /info, one path whose JSON body's `type` says what is asked: candleSnapshot
(only the latest 5000 buckets, startTime/endTime inclusive in ms, ascending), metaAndAssetCtxs, spotMeta,
spotMetaAndAssetCtxs, perpDexs, exchangeStatus. Perpetuals of the configured markets quoted in USDC."""

from __future__ import annotations

import json
import math

from .. import dialect as d
from ..faults import FaultDecision
from ..markets import Market

KIND_PREFIX = "info/"

HYPERLIQUID = d.DialectSpec(
    name="hyperliquid", ccxt_id="hyperliquid", market_type="swap",
    endpoints=(d.Endpoint("info/candleSnapshot", "/info", 5000, 5000, reach=5000),),
    time_unit="ms", newest_first=False, omits_quiet=False,
    timeframes={"1m": "1m", "3m": "3m", "5m": "5m", "15m": "15m", "30m": "30m", "1h": "1h", "2h": "2h",
                "4h": "4h", "8h": "8h", "12h": "12h", "1d": "1d"},
    default_symbols=("BTC/USDC", "ETH/USDC", "SOL/USDC", "XRP/USDC"))

_USDC = {"name": "USDC", "szDecimals": 8, "weiDecimals": 8, "index": 0, "tokenId": "0x" + "0" * 32,
         "isCanonical": True, "evmContract": None, "fullName": None}


def _deserialize_error() -> d.ApiError:
    return d.ApiError(422, "Failed to deserialize the JSON body into the target type")


class HyperliquidDialect(d.Dialect):
    spec = HYPERLIQUID
    prefix = "/info"
    methods = ("POST",)
    not_found = ""

    def kind(self, method: str, path: str, body: object) -> str:
        if path == "/info" and isinstance(body, dict) and isinstance(body.get("type"), str):
            return KIND_PREFIX + body["type"]
        return path

    def unified_symbol(self, mk: Market) -> str | None:
        return f"{mk.base}/USDC:USDC" if mk.quote == "USDC" else None

    def ccxt_config(self, base_url: str) -> dict:
        urls = {"public": base_url, "private": base_url}
        return {"urls": {"api": dict(urls), "test": dict(urls)}}

    server_error = client_error = "null"  # Hyperliquid's error answers carry a JSON null

    def answer(self, method: str, kind: str, path: str, params: dict, body: object, now: float,
               decision: FaultDecision, salt: int) -> d.Answer:
        if not kind.startswith(KIND_PREFIX):
            raise _deserialize_error()
        what = kind[len(KIND_PREFIX):]
        if what == "exchangeStatus":
            return d.ok({"specialStatuses": None, "time": str(int(now * 1000))})
        if what == "perpDexs":
            return d.ok([None])
        if what == "spotMeta":
            return d.ok({"tokens": [_USDC], "universe": []})
        if what == "spotMetaAndAssetCtxs":
            return d.ok([{"tokens": [_USDC], "universe": []}, []])
        if what in ("meta", "metaAndAssetCtxs"):
            return d.ok(self._meta(now) if what == "meta" else [self._meta(now), self._ctxs(now)])
        if what == "candleSnapshot":
            return d.ok(self._candles(body, now, decision, salt))
        raise _deserialize_error()

    def _meta(self, now: float) -> dict:
        return {"universe": [{"name": mk.base, "szDecimals": max(0, 9 - len(str(mk.step_units))),
                              "maxLeverage": 20, "marginTableId": 20} for _, mk in self.listed()],
                "marginTables": [], "collateralToken": 0}

    def _ctxs(self, now: float) -> list:
        out = []
        for _, mk in self.listed():
            rows = self.truth.forming(mk, 60, now)
            px = d.fmt_short(int(rows.c[0])) if len(rows) else d.fmt_short(mk.tick_units)
            out.append({"funding": "0.0000125", "openInterest": "1000.0", "prevDayPx": px, "dayNtlVlm": "1000000.0",
                        "premium": "0.0", "oraclePx": px, "markPx": px, "midPx": px, "impactPxs": [px, px],
                        "dayBaseVlm": "100.0"})
        return out

    def _candles(self, body: object, now: float, decision: FaultDecision, salt: int) -> str:
        req = body.get("req") if isinstance(body, dict) else None
        if not isinstance(req, dict):
            raise _deserialize_error()
        try:
            coin, interval = str(req["coin"]), str(req["interval"])
            start, end = int(req["startTime"]), int(req.get("endTime") or now * 1000)
        except (KeyError, TypeError, ValueError):
            raise _deserialize_error() from None
        tf = self.timeframe_of(interval)
        if tf is None:
            raise _deserialize_error()
        mk = next((m for _, m in self.listed() if m.base == coin), None)
        if mk is None:
            return "[]"
        ep = HYPERLIQUID.endpoints[0]
        tf_ms = tf * 1000
        lo = max(math.ceil(start / tf_ms) * tf, ep.reach_start(tf, now) or 0)
        rows = self.truth.rows(mk, tf, lo, end // tf_ms * tf, now)
        # the rows' JSON text built in numpy (json.dumps of the dicts, byte for byte): 5000 rows in ~5 ms, not
        # ~100 (a real exchange's page is not built from Python dicts; the bench's figure is ccxt's and ours)
        ms = rows.t * 1000
        parts = ['{"t":', d.int_text(ms), ',"T":', d.int_text(ms + (tf_ms - 1)),
                 ',"s":' + json.dumps(coin) + ',"i":' + json.dumps(interval) + ',"o":"', d.decimal_text(rows.o),
                 '","c":"', d.decimal_text(rows.c), '","h":"', d.decimal_text(rows.h), '","l":"',
                 d.decimal_text(rows.l), '","v":"', d.decimal_text(rows.v), '","n":', d.int_text(rows.trades), "}"]
        order = d.apply_row_faults(list(range(len(rows))), decision, self.seed, salt)
        return d.json_array(parts, order)
