"""The Kraken dialect: /0/public/OHLC (only the latest 720 buckets whatever `since` says, `since` exclusive
in seconds, ascending, the forming candle last, a `last` field), /0/public/AssetPairs, /0/public/Assets and
/0/public/Time, errors as Kraken's {"error": [...]} bodies. Spot markets only."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import ClassVar

from .. import dialect as d
from ..faults import FaultDecision
from ..markets import UNIT, Market

PREFIX = "/0/public/"

KRAKEN = d.DialectSpec(
    name="kraken", ccxt_id="kraken", market_type="spot",
    endpoints=(d.Endpoint("OHLC", PREFIX + "OHLC", 720, 720, reach=720),),
    time_unit="s", newest_first=False, omits_quiet=False,
    timeframes={"1m": "1", "5m": "5", "15m": "15", "30m": "30", "1h": "60", "4h": "240", "1d": "1440"},
    rate_limit_status=200,
    default_symbols=("BTC/USD", "ETH/USD", "SOL/USD", "BTC/USDT", "ETH/BTC"))

# Kraken's asset ids and altnames: the legacy X/Z-prefixed ones, and the rest as they are
_ASSET_IDS = {"BTC": ("XXBT", "XBT"), "ETH": ("XETH", "ETH"), "LTC": ("XLTC", "LTC"), "XRP": ("XXRP", "XRP"),
              "USD": ("ZUSD", "USD"), "EUR": ("ZEUR", "EUR")}


def asset_id(code: str) -> tuple[str, str]:
    """(Kraken asset id, altname) of a currency code."""
    return _ASSET_IDS.get(code, (code, code))


def pair_id(mk: Market) -> str:
    """Kraken's pair name: "XXBTZUSD" for two legacy assets, else the altnames joined ("SOLUSD")."""
    (bid, balt), (qid, qalt) = asset_id(mk.base), asset_id(mk.quote)
    if bid != balt and qid != qalt:
        return bid + qid
    return balt + qalt


def _decimals(units: int) -> int:
    return 9 - len(str(units))  # units is a power of ten of 1e-8


class KrakenDialect(d.Dialect):
    spec = KRAKEN
    prefix = PREFIX
    methods = ("GET", "POST")
    not_found = {"error": ["EGeneral:Unknown method"]}


    def ccxt_config(self, base_url: str) -> dict:
        return {"urls": {"api": {"public": base_url, "private": base_url, "zendesk": base_url + "/zendesk"}}}

    error_bodies: ClassVar[Mapping[int, object]] = {429: {"error": ["EAPI:Rate limit exceeded"]}}
    server_error = {"error": ["EService:Unavailable"]}
    client_error = {"error": ["EGeneral:Invalid arguments"]}

    def rate_limit_answer(self, retry_after_s: int) -> d.Answer:
        return d.Answer(200, {"error": ["EAPI:Rate limit exceeded"]}, {})

    def answer(self, method: str, kind: str, path: str, params: dict, body: object, now: float,
               decision: FaultDecision, salt: int) -> d.Answer:
        if kind == "Time":
            return d.ok({"error": [], "result": {"unixtime": int(now), "rfc1123": ""}})
        if kind == "Assets":
            return d.ok({"error": [], "result": self._assets()})
        if kind == "AssetPairs":
            return d.ok({"error": [], "result": self._pairs()})
        if kind == "Ticker":
            return d.ok(self._ticker(params, now))
        if kind == "OHLC":
            return d.ok(self._ohlc(params, now, decision, salt))
        raise self.unknown(method, path)

    def _assets(self) -> dict:
        out = {}
        for _, mk in self.listed():
            for code in (mk.base, mk.quote):
                aid, alt = asset_id(code)
                out[aid] = {"aclass": "currency", "altname": alt, "decimals": 10, "display_decimals": 5,
                            "collateral_value": 1.0, "status": "enabled"}
        return out

    def _pairs(self) -> dict:
        out = {}
        for _, mk in self.listed():
            (bid, balt), (qid, qalt) = asset_id(mk.base), asset_id(mk.quote)
            out[pair_id(mk)] = {
                "altname": balt + qalt, "wsname": f"{balt}/{qalt}", "aclass_base": "currency", "base": bid,
                "aclass_quote": "currency", "quote": qid, "lot": "unit", "cost_decimals": 5,
                "pair_decimals": _decimals(mk.tick_units), "lot_decimals": 8, "lot_multiplier": 1,
                "leverage_buy": [], "leverage_sell": [],
                "fees": [[0, 0.26], [50000, 0.24]], "fees_maker": [[0, 0.16], [50000, 0.14]],
                "fee_volume_currency": "ZUSD", "margin_call": 80, "margin_stop": 40,
                "ordermin": d.fmt_short(mk.step_units), "costmin": "0.5", "tick_size": d.fmt_short(mk.tick_units),
                "status": "online",
            }
        return out

    def _ticker(self, params: dict, now: float) -> dict:
        wanted = set(filter(None, params.get("pair", "").split(",")))
        out = {}
        for _, mk in self.listed():
            if wanted and pair_id(mk) not in wanted and asset_id(mk.base)[1] + asset_id(mk.quote)[1] not in wanted:
                continue
            day, f = self.truth.day(mk, now), d.fmt_short
            vwap = f(int(round(day.quote_volume / (day.volume / UNIT) * UNIT))) if day.volume else f(day.last)
            out[pair_id(mk)] = {"a": [f(day.ask), "1", "1.000"], "b": [f(day.bid), "1", "1.000"],
                                "c": [f(day.last), f(mk.step_units)], "v": [f(day.volume), f(day.volume)],
                                "p": [vwap, vwap], "t": [day.trades, day.trades], "l": [f(day.low), f(day.low)],
                                "h": [f(day.high), f(day.high)], "o": f(day.open)}
        if wanted and not out:
            return {"error": ["EQuery:Unknown asset pair"]}
        return {"error": [], "result": out}

    def _ohlc(self, params: dict, now: float, decision: FaultDecision, salt: int) -> dict:
        name = params.get("pair", "")
        mk = next((m for _, m in self.listed() if name in (pair_id(m), asset_id(m.base)[1] + asset_id(m.quote)[1])),
                  None)
        if mk is None:
            return {"error": ["EQuery:Unknown asset pair"]}
        tf = self.timeframe_of(params.get("interval", "1"))
        if tf is None:
            return {"error": ["EGeneral:Invalid arguments"]}
        try:
            since = int(float(params["since"])) if params.get("since") else None
        except ValueError:
            return {"error": ["EGeneral:Invalid arguments"]}
        ep = KRAKEN.endpoints[0]
        now_open = math.floor(now / tf) * tf
        lo = ep.reach_start(tf, now) or 0
        if since is not None:
            lo = max(lo, (since // tf) * tf + tf)  # exclusive: open time > since
        # the forming candle is always answered, whatever `since` says
        rows = self.truth.rows(mk, tf, min(lo, now_open), now_open, now)
        out = []
        for t, o, h, lw, c, v, q, n in d.columns(rows):
            vwap = d.fmt_short(int(round(q / (v / UNIT) * UNIT))) if v else d.fmt_short(c)
            out.append([t, d.fmt_short(o), d.fmt_short(h), d.fmt_short(lw), d.fmt_short(c), vwap, d.fmt_short(v), n])
        out = d.apply_row_faults(out, decision, self.seed, salt)
        return {"error": [], "result": {pair_id(mk): out, "last": now_open - tf}}

