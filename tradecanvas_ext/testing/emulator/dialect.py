"""What every exchange dialect of the emulator shares: its rules as data (`DialectSpec`, `Endpoint`: page
caps, history reach, order, units, omission), the `Dialect` base the server talks to, and the formatting and
row-fault helpers. Holds no state; never decides which candles exist (that is `truth.Truth`)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, NamedTuple

import numpy as np

from .candles import TIMEFRAMES, Rows
from .faults import FaultDecision
from .markets import DEFAULT_SYMBOLS, UNIT, Market
from .truth import Truth


@dataclass(frozen=True)
class Endpoint:
    """One candle endpoint of a dialect, as data for clients that walk ranges over it."""

    kind: str  # request kind, as counted by `ExchangeEmulator.request_count` and matched by faults
    path: str  # URL path (POST body type for Hyperliquid)
    page_cap: int  # the most candles one answer holds (a larger `limit` is capped, or refused: `limit_refused`)
    default_limit: int  # candles answered when the request names no limit
    reach: int | None = None  # only the latest N buckets (the forming one included) are served; None: all
    refuses_older: bool = False  # a request reaching past `reach` is refused (Gate's 400), not trimmed
    limit_refused: bool = False  # a limit above `page_cap` is an error answer, not capped

    def reach_start(self, tf: int, now: float) -> int | None:
        """The oldest open time this endpoint serves at `now`, or None (no reach limit)."""
        if self.reach is None:
            return None
        return math.floor(now / tf) * tf - (self.reach - 1) * tf


@dataclass(frozen=True)
class DialectSpec:
    """A dialect's rules as data (documented in docs/emulator-dialects.md)."""

    name: str  # emulator dialect name ("bybit")
    ccxt_id: str  # the ccxt class that speaks it ("bybit")
    market_type: str  # "spot" or "swap": the unified symbols it lists ("BTC/USDT" or "BTC/USDT:USDT")
    endpoints: tuple[Endpoint, ...]
    time_unit: str  # "ms" or "s": the unit of candle times and time parameters
    newest_first: bool  # candle rows answered newest first
    omits_quiet: bool  # buckets without trades are left out of the answer (not sent with volume 0)
    timeframes: Mapping[str, str] = field(default_factory=dict)  # unified timeframe -> exchange interval
    # unified timeframe -> where its grid starts after the epoch (open times t % tf == offset); others 0
    grid_offsets: Mapping[str, int] = field(default_factory=dict)
    rate_limit_status: int = 429  # the HTTP status of its rate-limit answer
    retry_after: bool = False  # its rate-limit answer carries a Retry-After header
    default_symbols: tuple[str, ...] = DEFAULT_SYMBOLS  # the emulator's markets when none are configured

    @property
    def page_cap(self) -> int:
        """The page cap of the endpoint ccxt's fetch_ohlcv uses by default (the first one)."""
        return self.endpoints[0].page_cap

    def endpoint(self, kind: str) -> Endpoint:
        for ep in self.endpoints:
            if ep.kind == kind:
                return ep
        raise KeyError(f"{self.name} has no candle endpoint {kind!r}")

    def grid_offset(self, timeframe: str) -> int:
        """Where this exchange's grid of `timeframe` starts after the epoch (0: epoch aligned)."""
        return self.grid_offsets.get(timeframe, 0)

    @property
    def candle_kinds(self) -> frozenset[str]:
        return frozenset(ep.kind for ep in self.endpoints)


class Answer(NamedTuple):
    status: int
    body: object  # a JSON-able payload, or a str sent as is
    headers: dict[str, str]


def ok(payload: object) -> Answer:
    return Answer(200, payload, {})


class ApiError(Exception):
    """An exchange's error answer: HTTP `status` with `body` (a JSON-able payload)."""

    def __init__(self, status: int, body: object, headers: dict[str, str] | None = None) -> None:
        super().__init__(json.dumps(body) if not isinstance(body, str) else body)
        self.status, self.body, self.headers = status, body, dict(headers or {})


_REASONS = {500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Temporarily Unavailable",
            504: "Gateway Time-out"}


def gateway_page(status: int) -> str:
    """The HTML page a load balancer in front of an exchange answers with (502, 504, ...)."""
    title = f"{status} {_REASONS.get(status, 'Error')}"
    return f"<html><head><title>{title}</title></head><body><center><h1>{title}</h1></center></body></html>"


def fmt8(units: int) -> str:
    """An integer count of 1e-8 as a fixed 8-decimal string (Binance's format)."""
    sign = "-" if units < 0 else ""
    units = abs(int(units))
    return f"{sign}{units // UNIT}.{units % UNIT:08d}"


def fmt_short(units: int) -> str:
    """An integer count of 1e-8 as a decimal string without trailing zeros ("37000.1", "0", "12")."""
    text = fmt8(units).rstrip("0")
    return text[:-1] if text.endswith(".") else text


# Text columns for answers built as bytes (`json_array`): per value a fixed-width row of ASCII bytes where
# the characters the value's text does not have are 0 bytes, dropped when the rows are joined.
_POW19 = 10 ** np.arange(18, -1, -1, dtype=np.int64)  # the place values of an int64's 19 digits
_POW8 = _POW19[-8:]


def _digits(a: np.ndarray, pows: np.ndarray, strip_leading: bool) -> np.ndarray:
    out = ((a[:, None] // pows) % 10 + 48).astype(np.uint8)
    if strip_leading:  # leading zeros dropped, the units digit always kept
        out[(a[:, None] < pows) & (pows > 1)] = 0
    return out


def int_text(values: np.ndarray) -> np.ndarray:
    """`str(v)` of every int64 value, as an (n, 20) byte matrix (0 bytes where the text has no character)."""
    a = np.asarray(values, dtype=np.int64)
    sign = np.where(a < 0, ord("-"), 0).astype(np.uint8)[:, None]
    return np.hstack([sign, _digits(np.abs(a), _POW19, True)])


def decimal_text(units: np.ndarray) -> np.ndarray:
    """`fmt_short(u)` of every int64 count of 1e-8, as an (n, 21) byte matrix (0 bytes where the text has no
    character): "37000.1", "0", "12"."""
    a = np.asarray(units, dtype=np.int64)
    q, r = np.divmod(np.abs(a), UNIT)
    sign = np.where(a < 0, ord("-"), 0).astype(np.uint8)[:, None]
    frac = _digits(r, _POW8, False)
    frac[r[:, None] % (10 * _POW8) == 0] = 0  # trailing zeros: no non-zero digit at or after the place
    dot = np.where(r != 0, ord("."), 0).astype(np.uint8)[:, None]
    return np.hstack([sign, _digits(q, _POW19[-11:], True), dot, frac])


def json_array(parts: Sequence[str | np.ndarray], order: Sequence[int]) -> str:
    """The text of a JSON array whose items are, for each i in `order` (row indices: a row fault's order),
    the concatenation of `parts` on row i: constant text (str, no NUL) or byte matrices from `int_text` /
    `decimal_text`. The same text as json.dumps(..., separators=(",", ":")) of the rows as dicts or lists,
    built in numpy: a 5000-row page in ~5 ms rather than ~100 (the emulator's service time)."""
    mats = [p for p in parts if not isinstance(p, str)]
    n = mats[0].shape[0] if mats else 0
    cols = []
    for p in [*parts, ","]:
        if isinstance(p, str):
            raw = np.frombuffer(p.encode(), dtype=np.uint8)
            cols.append(np.broadcast_to(raw, (n, raw.size)))
        else:
            cols.append(p)
    flat = np.hstack(cols)[np.asarray(order, dtype=np.intp)].ravel()
    return "[" + flat[flat != 0].tobytes().decode()[:-1] + "]"


def fmt_float(value: float) -> str:
    return f"{value:.8f}"


def columns(rows: Rows) -> list[tuple]:
    """(t, o, h, l, c, v, quote, trades) per row as Python scalars (t in seconds, prices in 1e-8 units)."""
    return list(zip(rows.t.tolist(), rows.o.tolist(), rows.h.tolist(), rows.l.tolist(), rows.c.tolist(),
                    rows.v.tolist(), rows.quote.tolist(), rows.trades.tolist(), strict=True))


def select(rows: Rows, keep: np.ndarray) -> Rows:
    return Rows(*(getattr(rows, f)[keep] for f in ("t", "o", "h", "l", "c", "v", "quote", "trades",
                                                     "taker_base", "taker_quote")))


def apply_row_faults(out: list, decision: FaultDecision, seed: int, salt: int) -> list:
    """The `duplicate` (every third row from the first sent twice) and `out_of_order` (a shuffle that is
    never the order sent, for 2+ rows) request faults on an answer's rows."""
    if decision.duplicate and out:
        dup: list = []
        for i, row in enumerate(out):
            dup.append(row)
            if i % 3 == 0:
                dup.append(row.copy() if isinstance(row, (list, dict)) else row)
        out = dup
    if decision.out_of_order and len(out) >= 2:
        perm = np.random.default_rng([seed, salt]).permutation(len(out))
        if np.all(perm == np.arange(len(out))):
            perm = perm[::-1]
        out = [out[i] for i in perm]
    return out


class Dialect:
    """One exchange's public REST API over the truth model. Subclasses set `spec` and implement `kind`,
    `answer`, `error_body`, `unified_symbol` and `ccxt_config`. Stateless (the server passes in the salt
    of shuffled answers), so callable from any thread."""

    spec: DialectSpec
    prefix: str = ""  # the path prefix of its API: request kinds are the paths after it
    # the exchange's error bodies: per HTTP status, else a gateway page (502, 504), else these two
    methods: ClassVar[tuple[str, ...]] = ("GET",)  # the HTTP methods its API answers
    not_found: ClassVar[object] = None  # its body for a path or method outside its API (HTTP 404)
    error_bodies: ClassVar[Mapping[int, object]] = {}
    server_error: ClassVar[object] = None
    client_error: ClassVar[object] = None

    def __init__(self, truth: Truth, seed: int) -> None:
        self.truth = truth
        self.seed = seed

    # -- the server's interface
    def kind(self, method: str, path: str, body: object) -> str:
        """The request kind of a request (for counts and faults): the path after `prefix`; a path the
        dialect does not know is its own kind."""
        if self.prefix and path.startswith(self.prefix):
            return path[len(self.prefix):].strip("/")
        return path

    def respond(self, method: str, kind: str, path: str, params: dict, body: object, now: float,
                decision: FaultDecision, salt: int) -> Answer:
        """The answer to one request (raises ApiError for the exchange's error answers)."""
        if method not in self.methods or not path.startswith(self.prefix):
            raise self.unknown(method, path)
        return self.answer(method, kind, path, params, body, now, decision, salt)

    def answer(self, method: str, kind: str, path: str, params: dict, body: object, now: float,
               decision: FaultDecision, salt: int) -> Answer:
        """The answer to a request the API's method and prefix admit."""
        raise NotImplementedError

    def unknown(self, method: str, path: str) -> ApiError:
        """The exchange's 404 for a request outside its API."""
        return ApiError(404, self.not_found)

    def error_body(self, status: int) -> object:
        """The exchange's answer body for an HTTP error status (faults, downtimes)."""
        if status in self.error_bodies:
            return self.error_bodies[status]
        if status in (502, 504):
            return gateway_page(status)
        return self.server_error if status >= 500 else self.client_error

    def rate_limit_answer(self, retry_after_s: int) -> Answer:
        """The exchange's answer to a client over its rate limit."""
        headers = {"Retry-After": str(retry_after_s)} if self.spec.retry_after else {}
        return Answer(self.spec.rate_limit_status, self.error_body(self.spec.rate_limit_status), headers)

    def unified_symbol(self, mk: Market) -> str | None:
        """The ccxt symbol the dialect lists `mk` under, or None if it does not list it (a spot dialect:
        every market, under its own symbol)."""
        return mk.symbol

    def ccxt_config(self, base_url: str) -> dict:
        """Options to deep-merge into the ccxt class's config so that every REST call goes to `base_url`."""
        raise NotImplementedError

    # -- shared helpers
    def listed(self) -> list[tuple[str, Market]]:
        """(unified symbol, market) of every market the dialect lists."""
        out = []
        for mk in self.truth.markets:
            sym = self.unified_symbol(mk)
            if sym is not None:
                out.append((sym, mk))
        return out

    def market_of_symbol(self, symbol: str) -> Market | None:
        """The market of a unified symbol as this dialect lists it ("BTC/USDT:USDT"), or None."""
        for sym, mk in self.listed():
            if sym == symbol:
                return mk
        return None

    def timeframe_of(self, interval: str) -> int | None:
        """The timeframe (seconds) of an exchange interval name, or None if it is not one the emulator serves."""
        for unified, name in self.spec.timeframes.items():
            if name == interval and unified in TIMEFRAMES:
                return TIMEFRAMES[unified]
        return None

    def served(self, rows: Rows) -> Rows:
        """`rows` as this exchange answers them: without quiet buckets where it omits those."""
        if self.spec.omits_quiet and len(rows):
            return select(rows, rows.v > 0)
        return rows
