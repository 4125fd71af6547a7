"""WebServer: werkzeug's threaded WSGI server in a daemon thread, whose stop() closes every socket (open
WebSockets too) and joins its threads. It never lets werkzeug exit the process or log a token."""
from __future__ import annotations

import errno
import logging
import re
import socket
import threading
import time
from urllib.parse import unquote_plus

from werkzeug.serving import ThreadedWSGIServer, WSGIRequestHandler, get_sockaddr, select_address_family

log = logging.getLogger(__name__)

STOP_TIMEOUT_S = 2.0
_CLOSE_GRACE_S = 0.5  # how long WebSockets get to answer our close frame before their sockets are cut
_QUERY_PAIR_RE = re.compile(r"([?&])([^=&?\s\"']*)=([^&?\s\"']*)")
SERVER_HEADER = "tradecanvas"  # no version of anything: nothing to look up a known hole by


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
    """werkzeug's handler, logging to our logger (access lines at DEBUG) with tokens redacted."""

    def version_string(self) -> str:  # http.server's `Server:` header, "Werkzeug/x Python/y" by default
        return SERVER_HEADER

    def log_request(self, code="-", size="-") -> None:
        log.debug('web: "%s" %s', redact(getattr(self, "requestline", "")), code)

    def log(self, type: str, message: str, *args) -> None:  # werkzeug's signature
        _werkzeug_log(type, message, args)


class _TrackingServer(ThreadedWSGIServer):
    """ThreadedWSGIServer that remembers each open connection and its handler thread."""

    def __init__(self, *args, **kwargs):
        self._conns: dict[socket.socket, threading.Thread] = {}
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
            if self._closing:
                self.shutdown_request(request)
                return
            self._conns[request] = t
        t.start()

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._conns_lock:
                self._conns.pop(request, None)

    def open_connections(self) -> dict[socket.socket, threading.Thread]:
        with self._conns_lock:
            return dict(self._conns)

    def wait_connections(self, deadline: float) -> None:
        for t in self.open_connections().values():
            t.join(max(0.0, deadline - time.monotonic()))

    def cut_connections(self) -> None:
        """Shut every open connection down: blocked reads (a WebSocket's receive too) return at once."""
        with self._conns_lock:
            self._closing = True
            conns = list(self._conns)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class WebServer:
    """`WebServer(app, host, port).start()`; `.url` is the real address (also when port 0 was asked for);
    `.stop()` closes the listening socket and every connection and joins the threads (idempotent).
    A stopped server can be started again."""

    def __init__(self, app, host: str, port: int):
        self.app, self.host, self.port = app, host, int(port)
        self._server: _TrackingServer | None = None
        self._thread: threading.Thread | None = None
        self._real_port: int | None = None
        self._lock = threading.Lock()

    @property
    def running(self) -> bool:
        return self._server is not None

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
                                         fd=listener.fileno())
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
