"""The emulator's HTTP side: `ExchangeEmulator` serves one exchange dialect (Binance's by default) on
127.0.0.1 from a daemon thread, counts requests, rate-limits and applies the request faults. Never to be
pointed at, or used as, a real exchange.

Locks: `ExchangeEmulator._life_lock` serialises start/stop; `ExchangeEmulator._lock` guards the request log,
the counts, the weight, the shuffle salt and the token bucket; `_Server.conn_lock` the open connections.
None is held while another is taken, nor while answering a request."""

from __future__ import annotations

import json
import logging
import math
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

from ...domain.clock import SYSTEM_CLOCK, Clock
from .candles import timeframe_seconds
from .dialect import ApiError, Dialect
from .dialects import build_dialect, dialect_spec
from .faults import FaultController, http_error_answer, request_kind
from .markets import Market, Markets
from .truth import Truth

log = logging.getLogger(__name__)

# Request weights (Binance's, roughly) for the x-mbx-used-weight headers.
_WEIGHTS = {"klines": 2, "exchangeInfo": 20, "depth": 5, "ticker/24hr": 2, "ticker": 4, "ticker/price": 2,
            "ticker/bookTicker": 2, "time": 1, "ping": 1}


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

    def log_message(self, format: str, *args) -> None:
        log.debug("emulator %s - %s", self.address_string(), format % args)

    def do_GET(self) -> None:
        self.server.emulator._handle(self, "GET")

    def do_POST(self) -> None:
        self.server.emulator._handle(self, "POST")

    def do_PUT(self) -> None:
        self.server.emulator._handle(self, "PUT")

    def do_DELETE(self) -> None:
        self.server.emulator._handle(self, "DELETE")


class ExchangeEmulator:
    """One exchange's public REST API (`dialect`: "binance" spot by default, see `dialects.DIALECTS`) with
    deterministic candles and switchable faults.

    >>> emu = ExchangeEmulator(seed=1, clock=lambda: 1_700_006_430.0); emu.start()
    >>> ex = ccxt.binance(emu.ccxt_config())   # ccxt now talks to emu.url only
    >>> bybit = ExchangeEmulator(dialect="bybit", clock=...).start()
    >>> ex = ccxt.bybit({**bybit.ccxt_config(), "enableRateLimit": False})
    """

    def __init__(self, seed: int = 1, symbols: Iterable[str] | None = None,
                 clock: Clock = SYSTEM_CLOCK, port: int = 0, host: str = "127.0.0.1",
                 max_requests_per_second: float | None = None, dialect: str = "binance",
                 listings: dict[str, float] | None = None) -> None:
        self.seed = int(seed)
        self.clock = clock
        self.host = host
        self._requested_port = int(port)
        spec = dialect_spec(dialect)
        self._markets = Markets(spec.default_symbols if symbols is None else symbols, self.seed)
        self.faults = FaultController()
        for symbol, listed in (listings or {}).items():
            self.faults.listing(self._markets.find(symbol).symbol, listed)
        self.truth = Truth(self._markets, self.faults)
        self.dialect: Dialect = build_dialect(dialect, self.truth, self.seed)
        self.routes = self.dialect  # the old name (Binance's routes)
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
        self._salt = 0
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
        """The configured markets' spot symbols ("BTC/USDT"), the truth model's keys."""
        return self._markets.symbols

    @property
    def listed_symbols(self) -> list[str]:
        """The ccxt symbols the dialect lists them under ("BTC/USDT:USDT" on a futures dialect)."""
        return [sym for sym, _ in self.dialect.listed()]

    def ccxt_config(self) -> dict:
        """Options to deep-merge into the dialect's ccxt class (`self.dialect.spec.ccxt_id`, sync or
        async) so that every REST call goes to this emulator (see `dialects.ccxt_config_for`). For Binance:
        all of its API url keys (also the sandbox/demo sets) point here, and `load_markets` fetches spot
        markets only (one GET /api/v3/exchangeInfo)."""
        return self.dialect.ccxt_config(self.url)

    # ------------------------------------------------------------------ counters
    @property
    def requests(self) -> list[tuple[str, dict]]:
        """(path, params) of every request served so far, oldest first (a copy)."""
        with self._lock:
            return list(self._requests)

    def request_count(self, kind: str | None = None) -> int:
        """Requests served (faulted ones too): all, or of one kind ("klines", "exchangeInfo", "time",
        "ping", "depth", "ticker/24hr", ... or a full path "/api/v3/klines"). On every dialect "klines"
        counts the requests to all its candle endpoints; a dialect's own kinds ("market/history-candles")
        or full paths ("/api/v5/market/history-candles") count one endpoint."""
        if kind is not None and kind.startswith("/"):
            kind = self.dialect.kind("GET", kind, None)
        elif kind is not None:
            kind = request_kind(kind) or ""
        with self._lock:
            if kind is None:
                return sum(self._counts.values())
            if kind == "klines":
                return sum(self._counts.get(k, 0) for k in self.dialect.spec.candle_kinds | {"klines"})
            return self._counts.get(kind, 0)

    def reset_counts(self) -> None:
        with self._lock:
            self._requests.clear()
            self._counts.clear()

    # ------------------------------------------------------------------ data (the test oracle)
    def _find(self, symbol: str) -> Market:
        """The market of a spot symbol, an exchange id or the dialect's unified symbol."""
        mk = self.dialect.market_of_symbol(symbol)
        return mk if mk is not None else self._markets.find(symbol)

    def candles(self, symbol: str, timeframe: str, start: float, end: float, price: str | None = None
                ) -> list[tuple]:
        """The truth: closed candles (t, o, h, l, c, v) with open time t (seconds) in [start, end],
        ascending (listing and outages applied, quiet candles flat with volume 0), as ccxt parses them
        (floats). `symbol` may be the spot symbol or the dialect's ("BTC/USDT:USDT"); `price="mark"`: the
        mark-price candles (truth.mark_of) a futures dialect serves."""
        mk = self._find(symbol)
        return self.truth.closed(mk, timeframe_seconds(timeframe), start, end, float(self.clock()),
                                 price=price, off=self.dialect.spec.grid_offset(timeframe)).as_tuples()

    def served(self, symbol: str, timeframe: str, start: float, end: float) -> list[tuple]:
        """What this exchange answers for [start, end] inside its reach: `candles` without the quiet
        buckets on a dialect that omits those (Coinbase)."""
        mk = self._find(symbol)
        rows = self.truth.closed(mk, timeframe_seconds(timeframe), start, end, float(self.clock()),
                                 off=self.dialect.spec.grid_offset(timeframe))
        return self.dialect.served(rows).as_tuples()

    def reach_start(self, timeframe: str, kind: str | None = None) -> int | None:
        """The oldest open time the dialect's candle endpoint `kind` (its first one by default) serves now,
        or None when it serves all history (after the listing)."""
        spec = self.dialect.spec
        ep = spec.endpoints[0] if kind is None else spec.endpoint(kind)
        return ep.reach_start(timeframe_seconds(timeframe), float(self.clock()))

    def forming(self, symbol: str, timeframe: str) -> tuple | None:
        """The still-forming candle klines serves now (partial), or None inside an outage."""
        mk = self._find(symbol)
        rows = self.truth.forming(mk, timeframe_seconds(timeframe), float(self.clock()),
                                  self.dialect.spec.grid_offset(timeframe)).as_tuples()
        return rows[0] if rows else None

    # ------------------------------------------------------------------ request handling
    def _handle(self, h: _Handler, method: str) -> None:
        try:
            parts = urlsplit(h.path)
            path = parts.path
            params = dict(parse_qsl(parts.query, keep_blank_values=True))
            body = self._read_body(h)
            kind = self.dialect.kind(method, path, body)
            with self._lock:
                self._requests.append((path, params if body is None else {**params, "body": body}))
                self._counts[kind] += 1
                weight = self._add_weight(_WEIGHTS.get(kind, 1))
                self._salt += 1
                salt = self._salt
            status, body, headers = self._respond(method, path, kind, params, body, salt, h.server.stopping)
        except Exception as exc:  # never let a bug kill the connection silently
            log.exception("emulator: error answering %s", h.path)
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
            if self.dialect.spec.ccxt_id.startswith("binance"):
                h.send_header("x-mbx-used-weight", str(weight))
                h.send_header("x-mbx-used-weight-1m", str(weight))
            for k, v in headers.items():
                h.send_header(k, v)
            h.end_headers()
            h.wfile.write(data)
            h.wfile.flush()
        except OSError:  # the client went away (timeout) or the emulator stopped
            h.close_connection = True

    @staticmethod
    def _read_body(h: _Handler) -> object:
        """A request's JSON body (Hyperliquid's POST /info), or None."""
        length = int(h.headers.get("Content-Length") or 0)
        if length <= 0:
            return None
        raw = h.rfile.read(length)
        try:
            return json.loads(raw)
        except ValueError:
            return raw.decode("utf-8", "replace")

    def _add_weight(self, w: int) -> int:
        """Called with `_lock` held."""
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

    def _respond(self, method: str, path: str, kind: str, params: dict, body: object, salt: int,
                 stopping: threading.Event):
        dialect = self.dialect
        if self._rate_limited():
            retry = max(1, math.ceil(1.0 / float(self.max_requests_per_second or 1)))
            return self._encode(dialect.rate_limit_answer(retry))
        if self.faults.is_down(float(self.clock())):
            return 503, json.dumps(dialect.error_body(503)), {}
        candle = kind in dialect.spec.candle_kinds
        decision = self.faults.take(kind, "klines" if candle else None)
        if decision.delay_s > 0 and stopping.wait(decision.delay_s):
            return None, b"", {}
        if decision.error is not None:
            return http_error_answer(decision.error, dialect.error_body)
        if decision.rate_limited:
            return self._encode(dialect.rate_limit_answer(1))
        try:
            status, payload, headers = self._encode(
                dialect.respond(method, kind, path, params, body, float(self.clock()), decision, salt))
        except ApiError as err:
            status, payload, headers = self._encode((err.status, err.body, err.headers))
        if decision.malformed:
            payload = payload[: max(1, len(payload) // 2)]
            if status == 200 and payload.endswith(("]", "}")):
                payload = payload[:-1]
        return status, payload, headers

    @staticmethod
    def _encode(answer) -> tuple[int, str, dict[str, str]]:
        status, payload, headers = answer
        headers = dict(headers)
        if isinstance(payload, str):
            if payload.lstrip().startswith("<"):
                headers.setdefault("Content-Type", "text/html")
            return status, payload, headers
        return status, json.dumps(payload, separators=(",", ":")), headers
