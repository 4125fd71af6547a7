"""The emulator's HTTP side: `ExchangeEmulator` serves `BinanceRoutes` on 127.0.0.1 from a daemon thread,
counts requests, rate-limits and applies the request faults. Never to be pointed at, or used as, a real exchange.

Locks: `ExchangeEmulator._life_lock` serialises start/stop; `ExchangeEmulator._lock` guards the request log,
the counts, the weight and the token bucket; `_Server.conn_lock` the open connections. None is held while
another is taken, nor while answering a request."""

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
from .candles import closed_candles, forming_candle, timeframe_seconds
from .faults import API_PREFIX, ERROR_BODIES, FaultController, http_error_answer, request_kind
from .markets import DEFAULT_SYMBOLS, Markets
from .routes import ApiError, BinanceRoutes

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
    """Binance-format public spot REST API with deterministic candles and switchable faults.

    >>> emu = ExchangeEmulator(seed=1, clock=lambda: 1_700_006_430.0); emu.start()
    >>> ex = ccxt.binance(emu.ccxt_config())   # ccxt now talks to emu.url only
    """

    def __init__(self, seed: int = 1, symbols: Iterable[str] = DEFAULT_SYMBOLS,
                 clock: Clock = SYSTEM_CLOCK, port: int = 0, host: str = "127.0.0.1",
                 max_requests_per_second: float | None = None) -> None:
        self.seed = int(seed)
        self.clock = clock
        self.host = host
        self._requested_port = int(port)
        self._markets = Markets(symbols, self.seed)
        self.faults = FaultController()
        self.routes = BinanceRoutes(self._markets, self.seed, self.faults)
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
        return self._markets.symbols

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
            return self._counts.get(request_kind(kind) or "", 0)

    def reset_counts(self) -> None:
        with self._lock:
            self._requests.clear()
            self._counts.clear()

    # ------------------------------------------------------------------ data (the test oracle)
    def candles(self, symbol: str, timeframe: str, start: float, end: float) -> list[tuple]:
        """Closed candles (t, o, h, l, c, v) with open time t (seconds) in [start, end], ascending, exactly
        as klines serves them (outages applied), as ccxt parses them (floats)."""
        mk = self._markets.find(symbol)
        tf = timeframe_seconds(timeframe)
        now = float(self.clock())
        return closed_candles(mk, tf, start, end, now, self.faults.outage_intervals(mk.symbol))

    def forming(self, symbol: str, timeframe: str) -> tuple | None:
        """The still-forming candle klines serves now (partial), or None inside an outage."""
        mk = self._markets.find(symbol)
        tf = timeframe_seconds(timeframe)
        now = float(self.clock())
        return forming_candle(mk, tf, now, self.faults.outage_intervals(mk.symbol))

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

    def _respond(self, method: str, path: str, kind: str, params: dict, stopping: threading.Event):
        if self._rate_limited():
            retry = max(1, math.ceil(1.0 / float(self.max_requests_per_second or 1)))
            return 429, json.dumps(ERROR_BODIES[429]), {"Retry-After": str(retry)}
        if self.faults.is_down(float(self.clock())):
            return 503, json.dumps(ERROR_BODIES[503]), {}
        decision = self.faults.take(kind)
        if decision.delay_s > 0 and stopping.wait(decision.delay_s):
            return None, b"", {}
        if decision.error is not None:
            return http_error_answer(decision.error)
        try:
            if method != "GET" or not path.startswith(API_PREFIX):
                raise ApiError(404, -5000, f"Path {path}, Method {method} is invalid")
            payload = self.routes.route(kind, params, float(self.clock()), decision)
            body = json.dumps(payload, separators=(",", ":"))
            status = 200
        except ApiError as err:
            status, body = err.status, json.dumps({"code": err.code, "msg": err.msg})
        if decision.malformed:
            body = body[: max(1, len(body) // 2)]
            if status == 200 and body.endswith(("]", "}")):
                body = body[:-1]
        return status, body, {}
