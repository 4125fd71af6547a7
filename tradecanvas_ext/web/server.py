"""WebServer: werkzeug's threaded WSGI server in a daemon thread, with HTTP/1.1 keep-alive, a cap on open
connections (one more is answered 503 and closed, never queued), a deadline for each request to arrive
(slowloris; an idle keep-alive connection waits under the same deadline), and a stop() that closes every
socket (open WebSockets too) and joins its threads. It never lets werkzeug exit the process or log a token.

Locks: `_TrackingServer._conns_lock` guards the open connections, their request deadlines and the refused
sockets still lingering; under it only non-blocking socket calls (shutdown, a non-blocking recv) are made.
`WebServer._lock` serialises start/stop and is taken before `_conns_lock`, never after.
`_WebSocketConn._send_lock` serialises the sends on one upgraded socket (the hub's writer, simple_websocket's
ping thread); it is held for one send, which WS_SEND_TIMEOUT_S bounds, and nothing is taken under it."""
from __future__ import annotations

import errno
import logging
import re
import selectors
import socket
import struct
import threading
import time
from dataclasses import dataclass
from urllib.parse import unquote_plus

from werkzeug.exceptions import InternalServerError
from werkzeug.serving import ThreadedWSGIServer, WSGIRequestHandler, get_sockaddr, select_address_family
from werkzeug.wsgi import LimitedStream

log = logging.getLogger(__name__)

STOP_TIMEOUT_S = 2.0
_CLOSE_GRACE_S = 0.5  # how long WebSockets get to answer our close frame before their sockets are cut
_QUERY_PAIR_RE = re.compile(r"([?&])([^=&?\s\"']*)=([^&?\s\"']*)")
SERVER_HEADER = "tradecanvas"  # no version of anything: nothing to look up a known hole by
MAX_CONNECTIONS = 256  # contract section 2, `max_connections`
REQUEST_TIMEOUT_S = 5.0  # a request's line and headers must arrive within this; also each read of a body
WS_SEND_TIMEOUT_S = 10.0  # an upgraded socket that takes no byte for this long fails its send (SO_SNDTIMEO)
_LINGER_S = 2.0  # a refused socket is read (and dropped) this long, so the client sees the 503, not a reset
_MAX_LINGERING = 256  # beyond this many, a refused socket is closed at once
_MAX_KEPT_BODY_BYTES = 1 << 20  # a request with a longer body (or a chunked one) closes the connection after it
_DRAIN_READS = 1000  # at a close, what the client still sends is read (so it sees the answer) this many times
_REFUSAL_BODY = b"too many connections, try again later\n"
_REFUSAL = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
            b"Content-Length: %d\r\nRetry-After: 1\r\nConnection: close\r\n\r\n%s"
            % (len(_REFUSAL_BODY), _REFUSAL_BODY))


def redact(text: str) -> str:
    """Hide a `?token=` value in a request line or URL, however its name is percent-encoded (`?%74oken=`):
    the name is compared as the app reads it, URL-decoded."""
    def mask(m: re.Match) -> str:
        if unquote_plus(m.group(2)).strip().lower() != "token":
            return m.group(0)
        return f"{m.group(1)}{m.group(2)}=***"

    return _QUERY_PAIR_RE.sub(mask, text)


def _werkzeug_log(type_: str, message: str, args: tuple) -> None:
    try:
        text = message % args if args else message
    except Exception:  # a malformed format from deep inside http.server
        text = str(message)
    (log.warning if type_ == "error" else log.debug)("web: %s", redact(text))


class ServerError(OSError):
    """The server could not start (for example its port is busy); the message names host:port."""


class _Handler(WSGIRequestHandler):
    """werkzeug's handler, logging to our logger (access lines at DEBUG) with tokens redacted; each request
    must arrive before its deadline, and a WebSocket, once upgraded, has no read timeout (pings find dead
    peers)."""

    server: _TrackingServer

    def setup(self) -> None:
        self.timeout = self.server.request_timeout_s  # StreamRequestHandler sets it on the socket
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # an answer's last segment now

    def handle_one_request(self) -> None:
        self.server.await_request(self.connection)  # also the idle time of a keep-alive connection
        super().handle_one_request()

    def parse_request(self) -> bool:
        ok = super().parse_request()
        self.server.request_arrived(self.connection)
        if ok and self.headers.get("Upgrade", "").lower() == "websocket":
            self.connection.settimeout(None)  # simple_websocket needs a blocking socket (it sends with send())
            self.close_connection = True  # the upgraded socket is the WebSocket's until it ends
        return ok

    def run_wsgi(self) -> None:
        """werkzeug's run_wsgi, keeping the connection for the next request (HTTP/1.1 keep-alive) when
        the client allows it, the request body has a known length of at most _MAX_KEPT_BODY_BYTES (what
        the app leaves unread is read and dropped) and the answer is framed (Content-Length or chunked);
        otherwise the answer says `Connection: close` and what the client still sends is drained."""
        if self.headers.get("Expect", "").lower().strip(" \t") == "100-continue":
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        environ = self.environ = self.make_environ()
        body = None
        if not environ.get("wsgi.input_terminated"):  # not chunked: the body is Content-Length bytes
            try:
                length = max(0, int(environ.get("CONTENT_LENGTH") or 0))
            except ValueError:
                length = None
            if length is not None and length <= _MAX_KEPT_BODY_BYTES:
                body = LimitedStream(self.rfile, length)
                environ["wsgi.input"] = body
        response = _Response(self, environ, keep=body is not None and not self.close_connection)
        try:
            response.execute(self.server.app)
        except _DROPPED:
            self.close_connection = True
            return
        except Exception:
            if self.server.passthrough_errors:
                raise
            log.error("web: error on request %s", redact(getattr(self, "requestline", "")), exc_info=True)
            response.keep = False
            if not response.sent:
                response.reset()
                try:
                    response.execute(InternalServerError())
                except Exception:
                    pass
        if response.keep and body is not None and not body.is_exhausted:
            self.server.await_request(self.connection)  # a trickled rest is cut at the request deadline
            try:
                body.exhaust()  # what the app left unread, at most _MAX_KEPT_BODY_BYTES
            except Exception:  # the client went away (or was cut) in the middle of its body
                response.keep = False
            self.server.request_arrived(self.connection)
        if not response.keep:
            self.close_connection = True
            self._drain_input()

    def _drain_input(self) -> None:
        """Read (and drop) what the client still sends for a moment, so that closing the socket does not
        reset the answer away before the client has read it (werkzeug's drain)."""
        selector = selectors.DefaultSelector()
        try:
            selector.register(self.connection, selectors.EVENT_READ)
            for _ in range(_DRAIN_READS):
                if not selector.select(timeout=0.01) or not self.connection.recv(65536):
                    break
        except OSError:
            pass
        finally:
            selector.close()

    def make_environ(self):
        environ = super().make_environ()
        if self.headers.get("Upgrade", "").lower() == "websocket":  # simple_websocket takes it from here
            environ["werkzeug.socket"] = _WebSocketConn(self.connection, WS_SEND_TIMEOUT_S)
        return environ

    def version_string(self) -> str:  # http.server's `Server:` header, "Werkzeug/x Python/y" by default
        return SERVER_HEADER

    def log_request(self, code="-", size="-") -> None:
        log.debug('web: "%s" %s', redact(getattr(self, "requestline", "")), code)

    def log(self, type: str, message: str, *args) -> None:  # werkzeug's signature
        if message.startswith("Request timed out"):  # http.server's words for an idle keep-alive's end
            type = "debug"
        _werkzeug_log(type, message, args)


_DROPPED = (ConnectionError, socket.timeout)  # the client went away: nothing to answer


class _Response:
    """One WSGI answer written on a handler's socket: start_response and write, framing (Content-Length
    as the app set it, else chunked for an HTTP/1.1 client, else the connection closes), and the
    `Connection` header. `keep` says whether the connection serves another request afterwards. Once the
    socket became a WebSocket (flask-sock answers after it ends), nothing more is written on it."""

    def __init__(self, handler: _Handler, environ: dict, keep: bool):
        self._h = handler
        self._environ = environ
        self.keep = keep
        self.reset()

    def reset(self) -> None:
        """Forget a status and headers not yet sent (an error answer replaces them)."""
        self.status: str | None = None
        self.headers: list[tuple[str, str]] | None = None
        self.sent = False
        self.chunked = False

    def start_response(self, status, headers, exc_info=None):
        if exc_info:
            try:
                if self.sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None
        elif self.headers is not None:
            raise AssertionError("Headers already set")
        self.status, self.headers = status, headers
        return self.write

    def write(self, data: bytes) -> None:
        assert self.status is not None and self.headers is not None, "write() before start_response"
        h = self._h
        ws = self._environ.get("werkzeug.socket")
        if isinstance(ws, _WebSocketConn) and ws.upgraded:
            return
        if not self.sent:
            self.sent = True
            code_text, _, reason = self.status.partition(" ")
            code = int(code_text)
            h.send_response(code, reason)
            names = set()
            for name, value in self.headers:
                h.send_header(name, value)  # a `Connection: close` of the app's sets close_connection
                names.add(name.lower())
            if h.close_connection:
                self.keep = False
            bodiless = self._environ["REQUEST_METHOD"] == "HEAD" or 100 <= code < 200 or code in (204, 304)
            if "content-length" not in names and not bodiless:
                if h.request_version >= "HTTP/1.1":
                    self.chunked = True
                    h.send_header("Transfer-Encoding", "chunked")
                else:
                    self.keep = False  # the end of the body is the end of the connection
            if not self.keep and "connection" not in names:
                h.send_header("Connection", "close")
            h.end_headers()
        assert isinstance(data, bytes), "applications must write bytes"
        if data:
            h.wfile.write(b"%x\r\n%s\r\n" % (len(data), data) if self.chunked else data)
        h.wfile.flush()

    def execute(self, app) -> None:
        chunks = app(self._environ, self.start_response)
        try:
            for data in chunks:
                self.write(data)
            if not self.sent:
                self.write(b"")
            if self.chunked:
                self._h.wfile.write(b"0\r\n\r\n")
        finally:
            close = getattr(chunks, "close", None)  # WSGI: the iterable's close(), when it has one
            if close is not None:
                close()


class _WebSocketConn:
    """An upgraded socket as simple_websocket uses it (send, recv, fileno, shutdown, close; the app's Host
    check reads getsockname). Each send is
    whole (simple_websocket ignores a partial send's count, which would cut a frame in two), one at a time
    (frames of the writer and the ping thread never interleave), and bounded: a peer whose buffers are full
    and that takes nothing for `send_timeout_s` makes it raise (BlockingIOError), so the hub's writer
    drops that client instead of waiting for it forever."""

    def __init__(self, sock: socket.socket, send_timeout_s: float):
        self._sock = sock
        self._send_lock = threading.Lock()
        self.upgraded = False  # set by the first send (the handshake's answer): the socket is a WebSocket
        whole = int(send_timeout_s)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO,
                        struct.pack("ll", whole, int((send_timeout_s - whole) * 1_000_000)))

    def send(self, data: bytes) -> int:
        with self._send_lock:
            self.upgraded = True
            self._sock.sendall(data)  # a blocking socket: each send() waits at most SO_SNDTIMEO
        return len(data)

    def recv(self, size: int) -> bytes:
        return self._sock.recv(size)

    def fileno(self) -> int:
        return self._sock.fileno()

    def getsockname(self):
        return self._sock.getsockname()

    def shutdown(self, how: int) -> None:
        self._sock.shutdown(how)

    def close(self) -> None:
        self._sock.close()


@dataclass
class _Conn:
    thread: threading.Thread
    deadline: float | None = None  # monotonic time by which the request being read must have arrived


class _TrackingServer(ThreadedWSGIServer):
    """ThreadedWSGIServer that remembers each open connection and its handler thread, refuses one more than
    `max_connections`, and cuts a connection whose request does not arrive in time."""

    def __init__(self, *args, max_connections: int, request_timeout_s: float, **kwargs):
        self.max_connections = max_connections
        self.request_timeout_s = request_timeout_s
        self._conns: dict[socket.socket, _Conn] = {}
        self._lingering: dict[socket.socket, float] = {}  # refused socket -> when it is closed anyway
        self._conns_lock = threading.Lock()
        self._closing = False
        super().__init__(*args, **kwargs)

    def log(self, type: str, message: str, *args) -> None:
        _werkzeug_log(type, message, args)

    def handle_error(self, request, client_address) -> None:
        log.warning("web: error while serving %s", client_address, exc_info=True)

    def process_request(self, request, client_address) -> None:
        t = threading.Thread(target=self.process_request_thread, args=(request, client_address),
                             name=f"tc-web-conn-{client_address[1] if client_address else ''}", daemon=True)
        with self._conns_lock:
            closing = self._closing
            full = len(self._conns) >= self.max_connections
            if not (closing or full):
                self._conns[request] = _Conn(t)
        if closing:
            self.shutdown_request(request)
        elif full:
            self._refuse(request)
        else:
            t.start()

    def _refuse(self, sock: socket.socket) -> None:
        """503 and close, from the accept loop without waiting: what the client sent is read and dropped,
        then the socket lingers (read by service_actions) so that closing it does not reset the 503 away."""
        try:
            sock.setblocking(False)
            _drain(sock)
            sock.send(_REFUSAL)  # a fresh socket's send buffer takes these few bytes whole
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            sock.close()
            return
        with self._conns_lock:
            keep = len(self._lingering) < _MAX_LINGERING
            if keep:
                self._lingering[sock] = time.monotonic() + _LINGER_S
        if not keep:
            sock.close()
        log.debug("web: connection refused with 503: %d open (max_connections)", self.max_connections)

    def service_actions(self) -> None:
        """Run by the accept loop every poll interval: cut requests past their deadline, close refused
        sockets whose client is done (or whose linger time is over)."""
        now = time.monotonic()
        done = []
        with self._conns_lock:
            for sock, conn in self._conns.items():
                if conn.deadline is not None and conn.deadline <= now:
                    conn.deadline = None
                    try:
                        sock.shutdown(socket.SHUT_RDWR)  # the handler's read returns: it ends
                    except OSError:
                        pass
            for sock, until in list(self._lingering.items()):
                if until <= now or _drain(sock):
                    del self._lingering[sock]
                    done.append(sock)
        for sock in done:
            sock.close()

    def await_request(self, sock: socket.socket) -> None:
        with self._conns_lock:
            conn = self._conns.get(sock)
            if conn is not None:
                conn.deadline = time.monotonic() + self.request_timeout_s

    def request_arrived(self, sock: socket.socket) -> None:
        with self._conns_lock:
            conn = self._conns.get(sock)
            if conn is not None:
                conn.deadline = None

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._conns_lock:
                self._conns.pop(request, None)

    def connection_count(self) -> int:
        with self._conns_lock:
            return len(self._conns)

    def open_connections(self) -> dict[socket.socket, threading.Thread]:
        with self._conns_lock:
            return {sock: conn.thread for sock, conn in self._conns.items()}

    def wait_connections(self, deadline: float) -> None:
        for t in self.open_connections().values():
            t.join(max(0.0, deadline - time.monotonic()))

    def cut_connections(self) -> None:
        """Shut every open connection down: blocked reads (a WebSocket's receive too) return at once."""
        with self._conns_lock:
            self._closing = True
            conns = list(self._conns)
            lingering = list(self._lingering)
            self._lingering.clear()
        for sock in lingering:
            sock.close()
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def _drain(sock: socket.socket) -> bool:
    """Read what a non-blocking socket has; True when the peer has closed (or the socket failed)."""
    try:
        while True:
            if not sock.recv(65536):
                return True
    except BlockingIOError:
        return False
    except OSError:
        return True


class WebServer:
    """`WebServer(app, host, port, max_connections=256).start()`; `.url` is the real address (also when port
    0 was asked for); `.stop()` closes the listening socket and every connection and joins the threads
    (idempotent). A stopped server can be started again."""

    def __init__(self, app, host: str, port: int, max_connections: int = MAX_CONNECTIONS,
                 request_timeout_s: float = REQUEST_TIMEOUT_S):
        self.app, self.host, self.port = app, host, int(port)
        self.max_connections, self.request_timeout_s = max_connections, request_timeout_s
        self._server: _TrackingServer | None = None
        self._thread: threading.Thread | None = None
        self._real_port: int | None = None
        self._lock = threading.Lock()

    @property
    def running(self) -> bool:
        return self._server is not None

    def connection_count(self) -> int:
        """Open connections (HTTP and WebSocket) being served now; 0 when stopped."""
        server = self._server
        return server.connection_count() if server is not None else 0

    @property
    def url(self) -> str | None:
        if self._real_port is None:
            return None
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(self.host, self.host)
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self._real_port}"

    def start(self) -> WebServer:
        with self._lock:
            if self._server is not None:
                return self
            listener = self._listen()
            try:
                server = _TrackingServer(self.host, self.port, self.app, handler=_Handler,
                                         fd=listener.fileno(), max_connections=self.max_connections,
                                         request_timeout_s=self.request_timeout_s)
            finally:
                listener.close()  # werkzeug serves a duplicate of it
            self._server = server
            self._real_port = server.port
            self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                                            name=f"tc-web-{server.port}", daemon=True)
            self._thread.start()
        log.info("tradecanvas web server listening on %s", self.url)
        return self

    def _listen(self) -> socket.socket:
        family = select_address_family(self.host, self.port)
        where = f"{self.host}:{self.port}"
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # restart past TIME_WAIT only
            sock.bind(get_sockaddr(self.host, self.port, family))
            sock.listen(128)
        except OSError as exc:
            sock.close()
            hint = (" (the port is in use by another program or another bot: stop it or set "
                    "tradecanvas.listen_port)" if exc.errno == errno.EADDRINUSE else "")
            raise ServerError(exc.errno, f"cannot listen on {where}: {exc.strerror or exc}{hint}") from exc
        return sock

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        with self._lock:
            server, thread = self._server, self._thread
            self._server = self._thread = None
            if server is None:
                return
            deadline = time.monotonic() + timeout
            server.shutdown()  # the accept loop ends (within its poll interval)
            server.server_close()  # the listening socket is closed: new connections are refused
            sockets = self.app.extensions.get("tradecanvas.websockets") if hasattr(self.app, "extensions") \
                else None
            if sockets is not None and len(sockets):
                sockets.close_all()  # a close frame, so clients see 1001 "going away"
                server.wait_connections(min(deadline, time.monotonic() + _CLOSE_GRACE_S))
            server.cut_connections()
            server.wait_connections(deadline)
            if thread is not None:
                thread.join(max(0.0, deadline - time.monotonic()))
            left = [t.name for t in server.open_connections().values() if t.is_alive()]
            if left or (thread is not None and thread.is_alive()):
                log.warning("web server stop: %d connection thread(s) still finishing a request (daemon)",
                            len(left))
        log.info("tradecanvas web server on port %s stopped", self._real_port)
