"""Deterministic, fault-injecting emulator of Binance's public spot REST API on 127.0.0.1, for tests and demos.
Its market data is made up: never use it as a real exchange, and never point it (or its faults) at one."""

from __future__ import annotations

import argparse
import json
import logging
import math
import signal
import socket
import sys
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

import numpy as np

from ..domain.clock import ManualClock  # re-exported: tests import it from tradecanvas_ext.testing

__all__ = ["ExchangeEmulator", "FaultController", "ManualClock", "TIMEFRAMES", "main"]

log = logging.getLogger(__name__)

#: Supported kline intervals (seconds). All are epoch aligned; Binance's 3d/1w/1M are not, so not served.
TIMEFRAMES: dict[str, int] = {
    "1m": 60,
    "3m": 180,
    "5m": 300,
    "15m": 900,
    "30m": 1800,
    "1h": 3600,
    "2h": 7200,
    "4h": 14400,
    "6h": 21600,
    "8h": 28800,
    "12h": 43200,
    "1d": 86400,
}

API_PREFIX = "/api/v3/"
UNIT = 10**8  # prices and volumes are integers in units of 1e-8, formatted like Binance ("%.8f")
MAX_KLINES_LIMIT = 1000
DEFAULT_KLINES_LIMIT = 500
DEFAULT_SYMBOLS = ("BTC/USDT", "ETH/USDT", "LTC/USDT", "BNB/USDT", "SOL/USDT", "XRP/USDT", "ETH/BTC")

# Rough, realistic price levels; any other base asset gets a seed-independent hash-derived level.
_BASE_PRICES = {
    "BTC": 37000.0,
    "ETH": 2000.0,
    "LTC": 70.0,
    "BNB": 230.0,
    "SOL": 55.0,
    "XRP": 0.6,
    "ADA": 0.38,
    "DOGE": 0.08,
    "DOT": 5.2,
    "TRX": 0.1,
    "LINK": 14.0,
    "AVAX": 20.0,
}
_STABLE = {"USDT", "USDC", "BUSD", "FDUSD", "TUSD", "DAI", "USD"}

# Request weights (Binance's, roughly) for the x-mbx-used-weight headers.
_WEIGHTS = {"klines": 2, "exchangeInfo": 20, "depth": 5, "ticker/24hr": 2, "ticker": 4, "ticker/price": 2,
            "ticker/bookTicker": 2, "time": 1, "ping": 1}

_MSG_503 = "Internal error; unable to process your request. Please try again."
_DEFAULT_ERROR_BODIES: dict[int, object] = {
    429: {"code": -1003, "msg": "Too many requests; current limit of IP is 6000 request weight per 1 MINUTE. "
                                "Please use WebSocket Streams for live updates to avoid polling the API."},
    418: {"code": -1003, "msg": "Way too many requests; IP banned until further notice. "
                                "Please use WebSocket Streams for live updates to avoid bans."},
    500: {"code": -1000, "msg": "An unknown error occurred while processing the request."},
    502: "<html><head><title>502 Bad Gateway</title></head><body>502 Bad Gateway</body></html>",
    503: {"code": -1001, "msg": _MSG_503},
    504: "<html><head><title>504 Gateway Time-out</title></head><body>504 Gateway Time-out</body></html>",
}


# --------------------------------------------------------------------------------------------- hashing

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_S30, _S27, _S31 = np.uint64(30), np.uint64(27), np.uint64(31)


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser on a uint64 array (wrapping arithmetic)."""
    x = x ^ (x >> _S30)
    x = x * _M1
    x = x ^ (x >> _S27)
    x = x * _M2
    return x ^ (x >> _S31)


def _mix_int(value: int) -> int:
    with np.errstate(over="ignore"):
        return int(_mix64(np.array([value & 0xFFFFFFFFFFFFFFFF], dtype=np.uint64))[0])


def _unit_float(h: np.ndarray, shift: int, bits: int) -> np.ndarray:
    """`bits` (<= 63) bits of uint64 `h` starting at `shift`, as floats in [0, 1)."""
    mask = np.uint64((1 << bits) - 1)
    return ((h >> np.uint64(shift)) & mask).view(np.int64).astype(np.float64) * (1.0 / (1 << bits))


def _fmt(units: int) -> str:
    """An integer count of 1e-8 as Binance's fixed 8-decimal string."""
    sign = "-" if units < 0 else ""
    units = abs(int(units))
    return f"{sign}{units // UNIT}.{units % UNIT:08d}"


def _fmt_float(value: float) -> str:
    return f"{value:.8f}"


# --------------------------------------------------------------------------------------------- markets


@dataclass(frozen=True)
class _Market:
    symbol: str  # ccxt unified, "BTC/USDT"
    id: str  # Binance, "BTCUSDT"
    base: str
    quote: str
    base_price: float  # in the quote asset
    usd_price: float  # of the base asset, for volumes
    tick_units: int  # price tick in 1e-8 units (a power of ten)
    step_units: int  # lot step in 1e-8 units (a power of ten)
    key: int  # per (seed, symbol) 64-bit hash key
    phases: tuple[float, float, float]


def _make_market(symbol: str, seed: int) -> _Market:
    if not isinstance(symbol, str) or symbol.count("/") != 1 or ":" in symbol:
        raise ValueError(f"emulator symbols are spot 'BASE/QUOTE' symbols, got {symbol!r}")
    base, quote = symbol.split("/")
    if not (base.isalnum() and quote.isalnum() and base.isupper() and quote.isupper()):
        raise ValueError(f"emulator symbol {symbol!r}: base and quote must be upper-case alphanumerics")
    sym_hash = zlib.crc32(symbol.encode()) | (zlib.crc32(symbol[::-1].encode() + b"#") << 32)
    if base in _BASE_PRICES:
        base_usd = _BASE_PRICES[base]
    else:
        # 0.05 .. 500, from the symbol only, so a symbol keeps its price level whatever the seed
        base_usd = 10 ** (-1.3 + 4.0 * ((_mix_int(zlib.crc32(base.encode())) >> 11) / float(1 << 53)))
    if quote in _STABLE:
        price = base_usd
    else:
        quote_usd = _BASE_PRICES.get(quote, 10 ** (-1.3 + 4.0 * ((_mix_int(zlib.crc32(quote.encode())) >> 11)
                                                                 / float(1 << 53))))
        price = base_usd / quote_usd
    # ~5-6 significant digits of price; tick between 1e-8 and 0.01
    tick_exp = min(-2, max(-8, math.floor(math.log10(price)) - 5))
    step_exp = min(0, max(-8, math.floor(-math.log10(price))))
    key = _mix_int(_mix_int(seed) ^ sym_hash)
    ph = [((key >> s) & 0xFFFF) / 65536.0 * 2 * math.pi for s in (0, 16, 32)]
    return _Market(symbol=symbol, id=base + quote, base=base, quote=quote, base_price=price, usd_price=base_usd,
                   tick_units=10 ** (8 + tick_exp), step_units=10 ** (8 + step_exp), key=key,
                   phases=(ph[0], ph[1], ph[2]))


@dataclass
class _Rows:
    """Candles as parallel numpy arrays. Prices/volumes in 1e-8 units (int64)."""

    t: np.ndarray  # open time, seconds
    o: np.ndarray
    h: np.ndarray
    l: np.ndarray  # noqa: E741
    c: np.ndarray
    v: np.ndarray
    quote: np.ndarray  # float, quote asset volume
    trades: np.ndarray
    taker_base: np.ndarray
    taker_quote: np.ndarray

    def __len__(self) -> int:
        return int(self.t.shape[0])


_ANCHOR_SCALES = ((13, 0.08), (8, 0.025))  # (log2 of the anchor spacing in minutes, relative amplitude)
_CHUNK_CELLS = 1 << 16  # minute cells per vectorised block (keeps the temporaries in cache)


def _anchor_curve(m: _Market, minutes: np.ndarray) -> np.ndarray:
    """A smooth-ish deterministic price factor: value noise (hash-derived anchors every 2**s minutes,
    linearly interpolated) at two scales. Only integer hashing and + - * /, so bit-reproducible."""
    out = np.ones(minutes.shape, dtype=np.float64)
    lo_min, hi_min = int(minutes.min()), int(minutes.max())
    for salt, (shift, amp) in enumerate(_ANCHOR_SCALES):
        a0, a1 = lo_min >> shift, (hi_min >> shift) + 1
        idx = np.arange(a0, a1 + 1, dtype=np.int64)
        with np.errstate(over="ignore"):
            ha = _mix64((idx.view(np.uint64) * _GOLDEN) ^ np.uint64(m.key ^ (0xA5A5A5A5 + salt)))
        anchors = amp * (2.0 * _unit_float(ha, 11, 53) - 1.0)
        rel = (minutes >> shift) - a0
        frac = (minutes & ((1 << shift) - 1)).astype(np.float64) * (1.0 / (1 << shift))
        left = anchors[rel]
        out += left + (anchors[rel + 1] - left) * frac
    return out


def _minute_block(m: _Market, minutes: np.ndarray):
    """1m candle fields (o, h, l, c, v as int64 in 1e-8 units) for 2-D minute indices `minutes`
    (n x (k+1)): values for columns 0..k-1, column j+1 giving the close of column j (close == next open)."""
    with np.errstate(over="ignore"):
        h = _mix64((minutes.view(np.uint64) * _GOLDEN) ^ np.uint64(m.key))
    tick = m.tick_units
    # mid price: smooth factor x per-minute noise of +-0.15 %
    noise = ((h & np.uint64(0xFFFFF)).view(np.int64).astype(np.float64) * (0.003 / (1 << 20))) + (1.0 - 0.0015)
    scale = m.base_price * UNIT / tick
    mid = np.maximum(np.rint(_anchor_curve(m, minutes) * noise * scale).astype(np.int64), 1) * tick
    o = mid[:, :-1]
    c = mid[:, 1:]
    hs = h[:, :-1]
    wick_ticks = max(1, int(m.base_price * 0.0012 * UNIT / tick))
    up = ((((hs >> np.uint64(20)) & np.uint64(0xFFF)).view(np.int64) * wick_ticks) >> 12) * tick
    dn = ((((hs >> np.uint64(32)) & np.uint64(0xFFF)).view(np.int64) * wick_ticks) >> 12) * tick
    hi = np.maximum(o, c) + up
    lo = np.maximum(np.minimum(o, c) - dn, tick)
    vol_unit = max(1, int(20000.0 / m.usd_price * UNIT / 1000))  # volume 0.05x .. 2.05x of ~$20k a minute
    v = ((hs >> np.uint64(44)).view(np.int64) * (2 * vol_unit)) // (1 << 10) + 50 * vol_unit
    return o, hi, lo, c, v


def _merge(intervals: Iterable[tuple[float, float]]) -> list[tuple[float, float]]:
    out: list[list[float]] = []
    for s, e in sorted(intervals):
        if e <= s:
            continue
        if out and s <= out[-1][1]:
            out[-1][1] = max(out[-1][1], e)
        else:
            out.append([s, e])
    return [(s, e) for s, e in out]


def _in_intervals(t: np.ndarray, intervals: Sequence[tuple[float, float]]) -> np.ndarray:
    mask = np.zeros(t.shape, dtype=bool)
    for s, e in intervals:
        mask |= (t >= s) & (t < e)
    return mask


def _present_times(tf: int, lo: int, hi: int, outages: Sequence[tuple[float, float]],
                   limit: int | None, from_end: bool) -> np.ndarray:
    """Aligned open times in [lo, hi] (lo, hi aligned) not inside a merged outage interval; the first
    (or, from_end, the last) `limit` of them, ascending."""
    if hi < lo:
        return np.empty(0, dtype=np.int64)
    segments: list[tuple[int, int]] = []
    cur = lo
    for s, e in outages:
        if e <= cur:
            continue
        if s > hi:
            break
        last_before = math.ceil(s / tf) * tf - tf
        if last_before >= cur:
            segments.append((cur, min(last_before, hi)))
        cur = max(cur, math.ceil(e / tf) * tf)
        if cur > hi:
            break
    if cur <= hi:
        segments.append((cur, hi))
    parts: list[np.ndarray] = []
    need = limit
    order = reversed(segments) if from_end else segments
    for a, b in order:
        count = (b - a) // tf + 1
        if need is not None:
            count = min(count, need)
        if count <= 0:
            break
        if from_end:
            parts.append(np.arange(b - (count - 1) * tf, b + 1, tf, dtype=np.int64))
        else:
            parts.append(np.arange(a, a + count * tf, tf, dtype=np.int64))
        if need is not None:
            need -= count
            if need <= 0:
                break
    if not parts:
        return np.empty(0, dtype=np.int64)
    if from_end:
        parts.reverse()
    return np.concatenate(parts)


def _build_rows(m: _Market, tf: int, times: np.ndarray, now: float,
                outages: Sequence[tuple[float, float]]) -> _Rows:
    """Candles of timeframe `tf` at the given open times (none may be in an outage or after `now`),
    aggregated from the 1m candles; the 1m candle containing `now` is partial, later ones absent."""
    n = int(times.shape[0])
    times = times.astype(np.int64)
    out = {name: np.empty(n, dtype=np.int64) for name in ("o", "h", "l", "c", "v")}
    k = tf // 60
    cols = np.arange(k + 1, dtype=np.int64)
    step = max(1, _CHUNK_CELLS // (k + 1))
    for a in range(0, n, step):
        t = times[a:a + step]
        grid = (t // 60)[:, None] + cols[None, :]
        o, hi, lo, c, v = _minute_block(m, grid)
        first, last_start = int(t[0]), int(t[-1]) + tf - 60
        masked = last_start > now - 60 or any(s <= last_start and e > first for s, e in outages)
        sl = slice(a, a + t.shape[0])
        if not masked:
            out["o"][sl] = o[:, 0]
            out["c"][sl] = c[:, -1]
            out["h"][sl] = hi.max(axis=1)
            out["l"][sl] = lo.min(axis=1)
            out["v"][sl] = v.sum(axis=1)
            continue
        starts = grid[:, :-1] * 60
        present = starts <= now
        if outages:
            present &= ~_in_intervals(starts, outages)
        partial = present & (starts + 60 > now)
        if partial.any():
            c, hi, lo, v = c.copy(), hi.copy(), lo.copy(), v.copy()
            f = np.clip((now - starts[partial]) / 60.0, 0.0, 1.0)
            tick = m.tick_units
            po, pc, ph, pl = o[partial], c[partial], hi[partial], lo[partial]
            pc2 = po + np.rint((pc - po) // tick * f).astype(np.int64) * tick
            up = (ph - np.maximum(po, pc)) // tick
            dn = (np.minimum(po, pc) - pl) // tick
            c[partial] = pc2
            hi[partial] = np.maximum(po, pc2) + np.floor(up * f).astype(np.int64) * tick
            lo[partial] = np.maximum(np.minimum(po, pc2) - np.floor(dn * f).astype(np.int64) * tick, tick)
            v[partial] = np.maximum(np.floor(v[partial] * f).astype(np.int64), 1)
        last = k - 1 - np.argmax(present[:, ::-1], axis=1)
        out["o"][sl] = o[:, 0]
        out["c"][sl] = c[np.arange(t.shape[0]), last]
        out["h"][sl] = np.where(present, hi, 0).max(axis=1)
        out["l"][sl] = np.where(present, lo, np.iinfo(np.int64).max).min(axis=1)
        out["v"][sl] = np.where(present, v, 0).sum(axis=1)
    # per-candle extras (not part of the OHLCV contract): quote volume, trades, taker volumes
    avg_price = (out["o"] + out["h"] + out["l"] + out["c"]).astype(np.float64) / (4.0 * UNIT)
    quote = out["v"].astype(np.float64) / UNIT * avg_price
    trades = np.maximum(1, np.floor(quote / 60.0)).astype(np.int64)
    taker_base = out["v"] * 12 // 25
    taker_quote = taker_base.astype(np.float64) / UNIT * avg_price
    return _Rows(times, out["o"], out["h"], out["l"], out["c"], out["v"], quote, trades, taker_base, taker_quote)


# --------------------------------------------------------------------------------------------- faults


@dataclass
class _Rule:
    kind: str  # http_error | slow | malformed | duplicate | out_of_order
    path: str | None  # request kind ("klines", "exchangeInfo", ...) or None for every request
    remaining: int | None  # None: until cleared
    status: int = 0
    retry_after: float | None = None
    body: object = None
    delay_s: float = 0.0


@dataclass
class _Decision:
    delay_s: float = 0.0
    error: _Rule | None = None
    malformed: bool = False
    duplicate: bool = False
    out_of_order: bool = False


def _norm_path(path: str | None) -> str | None:
    if path is None or path in ("*", ""):
        return None
    path = path.strip()
    if path.startswith(API_PREFIX):
        path = path[len(API_PREFIX):]
    return path.strip("/")


def _check_n(n: int | None) -> int | None:
    if n is None:
        return None
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer or None (until cleared), got {n!r}")
    return n


class FaultController:
    """Faults the emulator injects. Thread-safe. Each request fault applies to the next `n` matching
    requests (`n=None`: every matching request until `clear()`); `path` is a request kind such as
    "klines", "exchangeInfo", "depth", "ticker/24hr" (or "/api/v3/klines"), or None/"*" for all."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rules: list[_Rule] = []
        self._outages: list[tuple[float, float, str | None]] = []
        self._downtimes: list[tuple[float, float]] = []

    # -- data faults
    def outage(self, start: float, end: float, symbol: str | None = None) -> None:
        """Candles whose open time is in [start, end) (seconds) do not exist, for `symbol` or every
        symbol: absent from klines (and tickers) and from `ExchangeEmulator.candles()`. A larger candle is
        absent when its own open time is in the outage; otherwise it aggregates the 1m candles left."""
        start, end = float(start), float(end)
        if not (math.isfinite(start) and math.isfinite(end)) or end <= start:
            raise ValueError(f"outage needs start < end, got [{start}, {end})")
        with self._lock:
            self._outages.append((start, end, symbol))

    def clear_outages(self) -> None:
        with self._lock:
            self._outages.clear()

    def downtime(self, start: float, end: float) -> None:
        """While the emulator clock is in [start, end), every request is answered 503 -1001."""
        start, end = float(start), float(end)
        if end <= start:
            raise ValueError(f"downtime needs start < end, got [{start}, {end})")
        with self._lock:
            self._downtimes.append((start, end))

    # -- request faults
    def http_error(self, status: int, n: int | None = 1, retry_after: float | None = None,
                   body: object = None, path: str | None = "klines") -> None:
        """Answer the next `n` matching requests with HTTP `status` and a Binance-like body (429/418:
        code -1003, 500: -1000, 503: -1001, 502/504: an HTML page) or `body` (a str is sent as is, anything
        else as JSON); with a `Retry-After` header when `retry_after` is given."""
        status = int(status)
        if not 400 <= status <= 599:
            raise ValueError(f"http_error status must be 4xx or 5xx, got {status}")
        with self._lock:
            self._rules.append(_Rule("http_error", _norm_path(path), _check_n(n), status=status,
                                     retry_after=retry_after, body=body))

    def slow(self, delay_s: float, n: int | None = 1, path: str | None = "klines") -> None:
        """Wait `delay_s` seconds before answering (to go past a client's timeout)."""
        if not delay_s >= 0:
            raise ValueError(f"delay_s must be >= 0, got {delay_s!r}")
        with self._lock:
            self._rules.append(_Rule("slow", _norm_path(path), _check_n(n), delay_s=float(delay_s)))

    def malformed(self, n: int | None = 1, path: str | None = "klines") -> None:
        """Answer 200 with a truncated, invalid JSON body."""
        with self._lock:
            self._rules.append(_Rule("malformed", _norm_path(path), _check_n(n)))

    def duplicate_rows(self, n: int | None = 1) -> None:
        """Klines answers repeat rows (every third row, from the first, is sent twice in a row)."""
        with self._lock:
            self._rules.append(_Rule("duplicate", "klines", _check_n(n)))

    def out_of_order(self, n: int | None = 1) -> None:
        """Klines answers come in a shuffled (never ascending, when 2+ rows) order."""
        with self._lock:
            self._rules.append(_Rule("out_of_order", "klines", _check_n(n)))

    def clear(self) -> None:
        """Remove every fault: request faults, outages and downtimes."""
        with self._lock:
            self._rules.clear()
            self._outages.clear()
            self._downtimes.clear()

    def active(self) -> list[dict]:
        """A description of the faults still armed (for logs and debugging)."""
        with self._lock:
            rules = [dict(kind=r.kind, path=r.path, remaining=r.remaining, status=r.status or None,
                          delay_s=r.delay_s or None) for r in self._rules]
            rules += [dict(kind="outage", start=s, end=e, symbol=sym) for s, e, sym in self._outages]
            rules += [dict(kind="downtime", start=s, end=e) for s, e in self._downtimes]
        return rules

    # -- used by the server
    def _outage_intervals(self, symbol: str) -> list[tuple[float, float]]:
        with self._lock:
            items = [(s, e) for s, e, sym in self._outages if sym is None or sym == symbol]
        return _merge(items)

    def _is_down(self, now: float) -> bool:
        with self._lock:
            return any(s <= now < e for s, e in self._downtimes)

    def _take(self, kind: str) -> _Decision:
        d = _Decision()
        with self._lock:
            for rule in list(self._rules):
                if rule.path is not None and rule.path != kind:
                    continue
                if rule.kind == "slow":
                    d.delay_s += rule.delay_s
                elif rule.kind in ("http_error", "malformed"):
                    if d.error is not None or d.malformed:
                        continue
                    if rule.kind == "http_error":
                        d.error = rule
                    else:
                        d.malformed = True
                elif rule.kind == "duplicate":
                    if d.duplicate:
                        continue
                    d.duplicate = True
                elif rule.kind == "out_of_order":
                    if d.out_of_order:
                        continue
                    d.out_of_order = True
                if rule.remaining is not None:
                    rule.remaining -= 1
                    if rule.remaining <= 0:
                        self._rules.remove(rule)
        return d


# --------------------------------------------------------------------------------------------- HTTP


class _ApiError(Exception):
    def __init__(self, status: int, code: int, msg: str) -> None:
        super().__init__(msg)
        self.status, self.code, self.msg = status, code, msg


class _Server(ThreadingHTTPServer):
    allow_reuse_address = True
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, addr, handler, emulator: ExchangeEmulator) -> None:
        self.emulator = emulator
        self.stopping = threading.Event()
        self.connections: set[socket.socket] = set()
        self.conn_lock = threading.Lock()
        super().__init__(addr, handler)

    def process_request(self, request, client_address):
        with self.conn_lock:
            self.connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request):
        with self.conn_lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self.conn_lock:
            conns = list(self.connections)
            self.connections.clear()
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                conn.close()
            except OSError:
                pass


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    server_version = "tradecanvas-emulator/1"
    sys_version = ""
    timeout = 60  # idle keep-alive connections are dropped after this

    def version_string(self) -> str:
        return self.server_version

    def log_message(self, format: str, *args) -> None:  # noqa: A002
        log.debug("emulator %s - %s", self.address_string(), format % args)

    def do_GET(self) -> None:  # noqa: N802
        self.server.emulator._handle(self, "GET")

    def do_POST(self) -> None:  # noqa: N802
        self.server.emulator._handle(self, "POST")

    def do_PUT(self) -> None:  # noqa: N802
        self.server.emulator._handle(self, "PUT")

    def do_DELETE(self) -> None:  # noqa: N802
        self.server.emulator._handle(self, "DELETE")


# --------------------------------------------------------------------------------------------- emulator


class ExchangeEmulator:
    """Binance-format public spot REST API with deterministic candles and switchable faults.

    >>> emu = ExchangeEmulator(seed=1, clock=lambda: 1_700_006_430.0); emu.start()
    >>> ex = ccxt.binance(emu.ccxt_config())   # ccxt now talks to emu.url only
    """

    def __init__(self, seed: int = 1, symbols: Iterable[str] = DEFAULT_SYMBOLS,
                 clock: Callable[[], float] = time.time, port: int = 0, host: str = "127.0.0.1",
                 max_requests_per_second: float | None = None) -> None:
        self.seed = int(seed)
        self.clock = clock
        self.host = host
        self._requested_port = int(port)
        self._markets: dict[str, _Market] = {}
        for sym in symbols:
            mk = _make_market(sym, self.seed)
            self._markets[mk.symbol] = mk
        if not self._markets:
            raise ValueError("the emulator needs at least one symbol")
        self._by_id = {mk.id: mk for mk in self._markets.values()}
        if len(self._by_id) != len(self._markets):
            raise ValueError("two symbols map to the same Binance id")
        self.faults = FaultController()
        self.max_requests_per_second = max_requests_per_second
        if max_requests_per_second is not None and not max_requests_per_second > 0:
            raise ValueError("max_requests_per_second must be > 0 or None")
        self._lock = threading.Lock()
        self._requests: list[tuple[str, dict]] = []
        self._counts: Counter[str] = Counter()
        self._tokens = float(max_requests_per_second or 0)
        self._tokens_at = time.monotonic()
        self._weight_minute = -1
        self._weight_used = 0
        self._update_id = 0
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._port: int | None = None
        self._life_lock = threading.Lock()

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> ExchangeEmulator:
        """Start serving (a daemon thread). A restart after `stop()` binds the same port again."""
        with self._life_lock:
            if self._server is not None:
                return self
            port = self._port if self._port is not None else self._requested_port
            server = None
            for attempt in range(50):
                try:
                    server = _Server((self.host, port), _Handler, self)
                    break
                except OSError:
                    if self._port is None or attempt == 49:
                        raise
                    time.sleep(0.05)
            assert server is not None
            self._server = server
            self._port = server.server_address[1]
            self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                            name=f"exchange-emulator:{self._port}", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving: closes the listening socket and open connections, joins the thread. Idempotent."""
        with self._life_lock:
            server, thread = self._server, self._thread
            self._server = self._thread = None
            if server is None:
                return
            server.stopping.set()
            server.shutdown()
            server.server_close()
            server.close_connections()
            if thread is not None:
                thread.join(timeout=10)

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the emulator has not been started")
        return self._port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def __enter__(self) -> ExchangeEmulator:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def symbols(self) -> list[str]:
        return list(self._markets)

    def ccxt_config(self) -> dict:
        """Options to deep-merge into `ccxt.binance({...})` (sync or async) so that every REST call goes
        to this emulator: all of binance's API url keys (also the sandbox/demo sets) point here, and
        `load_markets` fetches spot markets only (one GET /api/v3/exchangeInfo)."""
        u = self.url
        api = {
            "public": u + "/api/v3", "private": u + "/api/v3", "v1": u + "/api/v1",
            "sapi": u + "/sapi/v1", "sapiV2": u + "/sapi/v2", "sapiV3": u + "/sapi/v3", "sapiV4": u + "/sapi/v4",
            "dapiPublic": u + "/dapi/v1", "dapiPrivate": u + "/dapi/v1", "dapiPrivateV2": u + "/dapi/v2",
            "dapiData": u + "/futures/data", "eapiPublic": u + "/eapi/v1", "eapiPrivate": u + "/eapi/v1",
            "fapiPublic": u + "/fapi/v1", "fapiPublicV2": u + "/fapi/v2", "fapiPublicV3": u + "/fapi/v3",
            "fapiPrivate": u + "/fapi/v1", "fapiPrivateV2": u + "/fapi/v2", "fapiPrivateV3": u + "/fapi/v3",
            "fapiData": u + "/futures/data", "papi": u + "/papi/v1", "papiV2": u + "/papi/v2",
        }
        return {
            "urls": {"api": dict(api), "test": dict(api), "demo": dict(api)},
            "options": {"fetchMarkets": {"types": ["spot"]}, "fetchCurrencies": False,
                        "fetchMargins": False},
        }

    # ------------------------------------------------------------------ counters
    @property
    def requests(self) -> list[tuple[str, dict]]:
        """(path, params) of every request served so far, oldest first (a copy)."""
        with self._lock:
            return list(self._requests)

    def request_count(self, kind: str | None = None) -> int:
        """Requests served (faulted ones too): all, or of one kind ("klines", "exchangeInfo", "time",
        "ping", "depth", "ticker/24hr", ... or a full path "/api/v3/klines")."""
        with self._lock:
            if kind is None:
                return sum(self._counts.values())
            return self._counts.get(_norm_path(kind) or "", 0)

    def reset_counts(self) -> None:
        with self._lock:
            self._requests.clear()
            self._counts.clear()

    # ------------------------------------------------------------------ data (the test oracle)
    def _market(self, symbol: str) -> _Market:
        mk = self._markets.get(symbol) or self._by_id.get(symbol)
        if mk is None:
            raise ValueError(f"unknown emulator symbol {symbol!r}; configured: {', '.join(self._markets)}")
        return mk

    @staticmethod
    def _tf(timeframe: str) -> int:
        try:
            return TIMEFRAMES[timeframe]
        except KeyError:
            raise ValueError(f"unsupported timeframe {timeframe!r}; supported: {', '.join(TIMEFRAMES)}") from None

    def candles(self, symbol: str, timeframe: str, start: float, end: float) -> list[tuple]:
        """Closed candles (t, o, h, l, c, v) with open time t (seconds) in [start, end], ascending, exactly
        as klines serves them (outages applied), as ccxt parses them (floats)."""
        mk = self._market(symbol)
        tf = self._tf(timeframe)
        now = float(self.clock())
        lo = max(0, math.ceil(start / tf) * tf)
        hi = min(math.floor(end / tf) * tf, math.floor(now / tf) * tf - tf)
        outages = self.faults._outage_intervals(mk.symbol)
        times = _present_times(tf, lo, hi, outages, None, False)
        return self._as_tuples(_build_rows(mk, tf, times, now, outages))

    def forming(self, symbol: str, timeframe: str) -> tuple | None:
        """The still-forming candle klines serves now (partial), or None inside an outage."""
        mk = self._market(symbol)
        tf = self._tf(timeframe)
        now = float(self.clock())
        t = math.floor(now / tf) * tf
        outages = self.faults._outage_intervals(mk.symbol)
        times = _present_times(tf, t, t, outages, None, False)
        rows = self._as_tuples(_build_rows(mk, tf, times, now, outages))
        return rows[0] if rows else None

    @staticmethod
    def _as_tuples(rows: _Rows) -> list[tuple]:
        if not len(rows):
            return []
        cols = [rows.o, rows.h, rows.l, rows.c, rows.v]
        fl = [(col.astype(np.float64) / UNIT).tolist() for col in cols]
        return list(zip(rows.t.tolist(), *fl, strict=True))

    # ------------------------------------------------------------------ request handling
    def _handle(self, h: _Handler, method: str) -> None:
        try:
            parts = urlsplit(h.path)
            path = parts.path
            params = dict(parse_qsl(parts.query, keep_blank_values=True))
            if path.startswith(API_PREFIX):
                kind = path[len(API_PREFIX):].strip("/")
            else:
                kind = path
            with self._lock:
                self._requests.append((path, params))
                self._counts[kind] += 1
                weight = self._add_weight(_WEIGHTS.get(kind, 1))
            status, body, headers = self._respond(method, path, kind, params, h.server.stopping)
        except Exception as exc:  # never let a bug kill the connection silently
            log.exception("emulator: error answering %s", getattr(h, "path", "?"))
            status, body, headers = 500, json.dumps({"code": -1000, "msg": f"emulator error: {exc}"}), {}
            weight = 0
        if status is None:  # stopped while delaying
            h.close_connection = True
            return
        data = body.encode() if isinstance(body, str) else body
        try:
            h.send_response(status)
            h.send_header("Content-Type", headers.pop("Content-Type", "application/json;charset=UTF-8"))
            h.send_header("Content-Length", str(len(data)))
            h.send_header("x-mbx-used-weight", str(weight))
            h.send_header("x-mbx-used-weight-1m", str(weight))
            for k, v in headers.items():
                h.send_header(k, v)
            h.end_headers()
            h.wfile.write(data)
            h.wfile.flush()
        except OSError:  # the client went away (timeout) or the emulator stopped
            h.close_connection = True

    def _add_weight(self, w: int) -> int:
        minute = int(time.monotonic() // 60)
        if minute != self._weight_minute:
            self._weight_minute, self._weight_used = minute, 0
        self._weight_used += w
        return self._weight_used

    def _rate_limited(self) -> bool:
        rps = self.max_requests_per_second
        if rps is None:
            return False
        with self._lock:
            now = time.monotonic()
            cap = max(1.0, float(rps))
            self._tokens = min(cap, self._tokens + (now - self._tokens_at) * rps)
            self._tokens_at = now
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return False
            return True

    def _respond(self, method: str, path: str, kind: str, params: dict, stopping: threading.Event):
        if self._rate_limited():
            retry = max(1, math.ceil(1.0 / float(self.max_requests_per_second or 1)))
            return 429, json.dumps(_DEFAULT_ERROR_BODIES[429]), {"Retry-After": str(retry)}
        if self.faults._is_down(float(self.clock())):
            return 503, json.dumps({"code": -1001, "msg": _MSG_503}), {}
        decision = self.faults._take(kind)
        if decision.delay_s > 0 and stopping.wait(decision.delay_s):
            return None, b"", {}
        if decision.error is not None:
            rule = decision.error
            body = rule.body if rule.body is not None else _DEFAULT_ERROR_BODIES.get(
                rule.status, {"code": -1000, "msg": f"HTTP {rule.status}"})
            headers: dict[str, str] = {}
            if isinstance(body, str):
                if body.lstrip().startswith("<"):
                    headers["Content-Type"] = "text/html"
            else:
                body = json.dumps(body)
            if rule.retry_after is not None:
                ra = rule.retry_after
                headers["Retry-After"] = str(int(ra)) if float(ra).is_integer() else str(ra)
            return rule.status, body, headers
        try:
            if method != "GET" or not path.startswith(API_PREFIX):
                raise _ApiError(404, -5000, f"Path {path}, Method {method} is invalid")
            payload = self._route(kind, params, decision)
            body = json.dumps(payload, separators=(",", ":"))
            status = 200
        except _ApiError as err:
            status, body = err.status, json.dumps({"code": err.code, "msg": err.msg})
        if decision.malformed:
            body = body[: max(1, len(body) // 2)]
            if status == 200 and body.endswith(("]", "}")):
                body = body[:-1]
        return status, body, {}

    def _route(self, kind: str, params: dict, decision: _Decision):
        now = float(self.clock())
        if kind == "ping":
            return {}
        if kind == "time":
            return {"serverTime": int(now * 1000)}
        if kind == "exchangeInfo":
            return self._exchange_info(now, params)
        if kind == "klines":
            return self._klines(params, now, decision)
        if kind in ("ticker/24hr", "ticker"):
            return self._tickers(params, now, self._ticker_24hr)
        if kind == "ticker/price":
            return self._tickers(params, now, lambda mk, now: {"symbol": mk.id,
                                                                "price": self._ticker_24hr(mk, now)["lastPrice"]})
        if kind == "ticker/bookTicker":
            return self._tickers(params, now, self._book_ticker)
        if kind == "depth":
            return self._depth(params, now)
        raise _ApiError(404, -5000, f"Path {API_PREFIX}{kind}, Method GET is invalid")

    # ------------------------------------------------------------------ endpoints
    def _param_market(self, params: dict, required: bool = True) -> _Market | None:
        sym = params.get("symbol")
        if sym is None or sym == "":
            if required:
                raise _ApiError(400, -1102, "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.")
            return None
        mk = self._by_id.get(sym)
        if mk is None:
            raise _ApiError(400, -1121, "Invalid symbol.")
        return mk

    @staticmethod
    def _int_param(params: dict, name: str) -> int | None:
        raw = params.get(name)
        if raw is None:
            return None
        if not raw.isdigit() or len(raw) > 20:
            raise _ApiError(400, -1100, f"Illegal characters found in parameter '{name}'; legal range is '^[0-9]{{1,20}}$'.")
        return int(raw)

    def _klines(self, params: dict, now: float, decision: _Decision) -> list:
        mk = self._param_market(params)
        assert mk is not None
        interval = params.get("interval")
        if not interval:
            raise _ApiError(400, -1102, "Mandatory parameter 'interval' was not sent, was empty/null, or malformed.")
        if interval not in TIMEFRAMES:
            raise _ApiError(400, -1120, "Invalid interval.")
        tf = TIMEFRAMES[interval]
        limit = self._int_param(params, "limit")
        if limit is None:
            limit = DEFAULT_KLINES_LIMIT
        if limit < 1 or limit > MAX_KLINES_LIMIT:
            raise _ApiError(400, -1130, "Data sent for parameter 'limit' is not valid.")
        start_ms = self._int_param(params, "startTime")
        end_ms = self._int_param(params, "endTime")
        if start_ms is not None and end_ms is not None and start_ms > end_ms:
            raise _ApiError(400, -1023, "Start time is greater than end time.")
        tf_ms = tf * 1000
        now_open = math.floor(now / tf) * tf
        hi = now_open if end_ms is None else min(now_open, (end_ms // tf_ms) * tf)
        lo = 0 if start_ms is None else -(-start_ms // tf_ms) * tf
        outages = self.faults._outage_intervals(mk.symbol)
        times = _present_times(tf, lo, hi, outages, limit, from_end=start_ms is None)
        rows = _build_rows(mk, tf, times, now, outages)
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
            rng = np.random.default_rng([self.seed, salt])
            perm = rng.permutation(len(out))
            if np.all(perm == np.arange(len(out))):
                perm = perm[::-1]
            out = [out[i] for i in perm]
        return out

    @staticmethod
    def _format_klines(rows: _Rows, tf: int) -> list:
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

    def _exchange_info(self, now: float, params: dict) -> dict:
        wanted: list[_Market] = list(self._markets.values())
        if params.get("symbol"):
            wanted = [self._param_market(params)]  # type: ignore[list-item]
        elif params.get("symbols"):
            wanted = [self._by_id[s] for s in self._symbols_param(params["symbols"])]
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
    def _symbol_info(mk: _Market) -> dict:
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

    def _symbols_param(self, raw: str) -> list[str]:
        try:
            ids = json.loads(raw)
        except ValueError:
            raise _ApiError(400, -1100, "Illegal characters found in parameter 'symbols'.") from None
        if not isinstance(ids, list) or not all(isinstance(s, str) for s in ids):
            raise _ApiError(400, -1100, "Illegal characters found in parameter 'symbols'.")
        for s in ids:
            if s not in self._by_id:
                raise _ApiError(400, -1121, "Invalid symbol.")
        return ids

    def _tickers(self, params: dict, now: float, one: Callable[[_Market, float], dict]):
        mk = self._param_market(params, required=False)
        if mk is not None:
            return one(mk, now)
        if params.get("symbols"):
            return [one(self._by_id[s], now) for s in self._symbols_param(params["symbols"])]
        return [one(m, now) for m in self._markets.values()]

    def _day_rows(self, mk: _Market, now: float) -> _Rows:
        now_open = math.floor(now / 60) * 60
        outages = self.faults._outage_intervals(mk.symbol)
        times = _present_times(60, max(0, now_open - 1439 * 60), now_open, outages, None, False)
        return _build_rows(mk, 60, times, now, outages)

    def _last_price_units(self, mk: _Market, now: float) -> int:
        rows = self._day_rows(mk, now)
        if len(rows):
            return int(rows.c[-1])
        return int(_minute_block(mk, np.array([[int(now // 60), int(now // 60) + 1]], dtype=np.int64))[0][0, 0])

    def _ticker_24hr(self, mk: _Market, now: float) -> dict:
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

    def _book_ticker(self, mk: _Market, now: float) -> dict:
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
            raise _ApiError(400, -1130, "Data sent for parameter 'limit' is not valid.")
        last = self._last_price_units(mk, now)
        tick = mk.tick_units
        lvl = np.arange(limit, dtype=np.int64)
        with np.errstate(over="ignore"):
            hq = _mix64((lvl.astype(np.uint64) + np.uint64(int(now) & 0xFFFFFFFF)) * _GOLDEN ^ np.uint64(mk.key))
        qty = (np.floor((0.1 + 5 * _unit_float(hq, 0, 20)) * 100) * mk.step_units).astype(np.int64) + mk.step_units
        qty_a = (np.floor((0.1 + 5 * _unit_float(hq, 20, 20)) * 100) * mk.step_units).astype(np.int64) + mk.step_units
        bids = [[_fmt(p), _fmt(q)] for p, q in zip((last - tick * (1 + lvl)).tolist(), qty.tolist(), strict=True)
                if p > 0]
        asks = [[_fmt(p), _fmt(q)] for p, q in zip((last + tick * (1 + lvl)).tolist(), qty_a.tolist(), strict=True)]
        return {"lastUpdateId": int(now * 1000), "bids": bids, "asks": asks}


# --------------------------------------------------------------------------------------------- CLI


def _parse_pair(text: str, what: str) -> tuple[float, float]:
    try:
        a, b = text.split(":")
        return float(a), float(b)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{what} must be A:B with two numbers, got {text!r}") from None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the emulator until SIGINT/SIGTERM; print one line with its URL."""
    parser = argparse.ArgumentParser(
        prog="tradecanvas emulator",
        description="Binance-format public REST emulator with made-up candles (tests and demos only; "
                    "never use it as, or against, a real exchange).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9999)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--symbols", default=",".join(DEFAULT_SYMBOLS),
                        help="comma separated ccxt spot symbols (default: %(default)s)")
    parser.add_argument("--outage", action="append", default=[], metavar="START:END",
                        type=lambda s: _parse_pair(s, "--outage"),
                        help="candles with open time in [START, END) (unix seconds) do not exist; repeatable")
    parser.add_argument("--outage-in", action="append", default=[], metavar="SECONDS:DURATION",
                        type=lambda s: _parse_pair(s, "--outage-in"),
                        help="a scripted outage SECONDS after start-up lasting DURATION: requests get 503 "
                             "-1001 meanwhile and its candles never exist; repeatable")
    parser.add_argument("--rate-limit", type=float, default=None, metavar="N",
                        help="answer 429 above N requests per second")
    parser.add_argument("--log-level", default="WARNING")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(message)s")
    symbols = [s.strip() for s in args.symbols.split(",") if s.strip()]
    try:
        emu = ExchangeEmulator(seed=args.seed, symbols=symbols, port=args.port, host=args.host,
                               max_requests_per_second=args.rate_limit)
        for start, end in args.outage:
            emu.faults.outage(start, end)
        t0 = time.time()
        for offset, duration in args.outage_in:
            emu.faults.outage(t0 + offset, t0 + offset + duration)
            emu.faults.downtime(t0 + offset, t0 + offset + duration)
        emu.start()
    except (ValueError, OSError) as exc:
        print(f"emulator: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()

    def _on_signal(signum, frame):  # noqa: ARG001
        stop.set()

    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    print(f"exchange emulator (binance format, seed {args.seed}) listening on {emu.url}", flush=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        emu.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


if __name__ == "__main__":
    sys.exit(main())
