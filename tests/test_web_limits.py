"""Who may connect and how many (contract sections 2 and 4), through a real server and raw sockets: the
`max_connections` cap answered 503, half-sent requests that neither hold the server nor stay open, pings
that close a silent WebSocket, and the Host and Origin checks."""
from __future__ import annotations

import json
import os
import queue
import socket
import threading
import time
from types import SimpleNamespace

import pytest

from tests.conftest import wait_for
from tests.test_web_server import FakeHub, StubRuntime
from tradecanvas_ext import create_app
from tradecanvas_ext.web.access import host_allowed, origin_allowed, own_names, split_host
from tradecanvas_ext.web.server import WebServer

WS_KEY = b"dGhlIHNhbXBsZSBub25jZQ=="


class HealthyStub(StubRuntime):
    """The stand-in hub, with the real runtime's health behind /api/market/health."""

    def __init__(self, rt, hub):
        super().__init__(rt.settings, hub)
        self.health = rt.health


@pytest.fixture
def serve(make_runtime):
    """The real app and server around a stand-in hub; `ping_interval` replaces the WebSocket ping period."""
    servers = []

    def make(ping_interval: float | None = None, **server_kw):
        rt = make_runtime(cors_origins=["http://frequi.example:3000"])
        hub = FakeHub()
        app = create_app(HealthyStub(rt, hub))
        if ping_interval is not None:
            app.config["SOCK_SERVER_OPTIONS"] = {**app.config["SOCK_SERVER_OPTIONS"], "ping_interval": ping_interval}
        server = WebServer(app, "127.0.0.1", 0, **server_kw).start()
        servers.append(server)
        port = int(server.url.rsplit(":", 1)[1])
        return SimpleNamespace(server=server, hub=hub, port=port, host=f"127.0.0.1:{port}")

    yield make
    for server in servers:
        server.stop()


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=30)


def read_head(s: socket.socket) -> bytes:
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(1)
        if not chunk:
            break
        head += chunk
    return head


def http(s: socket.socket, host: str, path: str = "/api/market/health", extra: str = "") -> tuple[int, bytes]:
    """One keep-alive request on a raw socket: (status, body)."""
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n".encode())
    head = read_head(s)
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    body = b""
    while len(body) < length:
        chunk = s.recv(length - len(body))
        assert chunk, "connection closed in the middle of a body"
        body += chunk
    return status, body


def read_to_eof(s: socket.socket) -> bytes:
    data = b""
    while chunk := s.recv(4096):
        data += chunk
    return data


def upgrade(port: int, host: str, origin: str | None = None) -> tuple[socket.socket, bytes]:
    """A raw WebSocket handshake: (socket, response head)."""
    s = connect(port)
    origin_line = f"Origin: {origin}\r\n" if origin is not None else ""
    s.sendall(f"GET /ws/market HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              f"Sec-WebSocket-Key: {WS_KEY.decode()}\r\nSec-WebSocket-Version: 13\r\n{origin_line}\r\n".encode())
    return s, read_head(s)


def send_text(s: socket.socket, text: str) -> None:
    """A masked client text frame (short payloads only)."""
    payload = text.encode()
    assert len(payload) < 126
    mask = os.urandom(4)
    s.sendall(bytes([0x81, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))


def read_frame(s: socket.socket) -> tuple[int, bytes]:
    """One server frame: (opcode, payload)."""
    def exactly(n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = s.recv(n - len(data))
            assert chunk, "connection closed"
            data += chunk
        return data

    b0, b1 = exactly(2)
    length = b1 & 0x7F
    if length == 126:
        length = int.from_bytes(exactly(2), "big")
    elif length == 127:
        length = int.from_bytes(exactly(8), "big")
    return b0 & 0x0F, exactly(length)


def echo_works(s: socket.socket, text: str) -> bool:
    """The stand-in hub echoes each text frame; pings met on the way are answered (opcode 0xA)."""
    send_text(s, text)
    while True:
        opcode, payload = read_frame(s)
        if opcode == 0x9:
            continue
        return opcode == 0x1 and json.loads(payload) == {"type": "echo", "text": text}


# -- max_connections ---------------------------------------------------------------------------------------

def test_one_connection_over_the_cap_is_answered_503_and_the_open_ones_keep_working(serve):
    srv = serve(request_timeout_s=120)  # the first 256 stay idle while the rest connect
    assert srv.server.max_connections == 256
    websockets = []
    for _ in range(8):
        s, head = upgrade(srv.port, srv.host)
        assert head.startswith(b"HTTP/1.1 101"), head
        websockets.append(s)
    halves = []  # open HTTP connections here are requests still arriving
    for i in range(248):
        s = connect(srv.port)
        s.sendall(f"GET /api/market/health HTTP/1.1\r\nHost: {srv.host}\r\nX-N: {i}\r\n".encode())
        halves.append(s)
    wait_for(lambda: srv.server.connection_count() == 256, 60, 0.02, "the first 256 accepted")
    refused = []
    for _ in range(44):  # the 257th to the 300th
        s = connect(srv.port)
        s.sendall(f"GET /api/market/health HTTP/1.1\r\nHost: {srv.host}\r\n\r\n".encode())
        refused.append(read_to_eof(s))  # answered and closed, never queued
        s.close()
    assert all(r.startswith(b"HTTP/1.1 503 ") for r in refused), {r[:30] for r in refused}
    assert all(r.endswith(b"too many connections, try again later\n") for r in refused)
    big = connect(srv.port)  # a refused client still sending when the 503 comes sees it, not a reset
    big.sendall(f"POST /api/market/backfill HTTP/1.1\r\nHost: {srv.host}\r\nContent-Length: 300000\r\n\r\n"
                .encode())
    try:
        big.sendall(b"x" * 300000)
    except OSError:
        pass
    assert read_to_eof(big).startswith(b"HTTP/1.1 503 ")
    big.close()
    assert srv.server.connection_count() == 256  # the refused ones never took a place
    for i, s in enumerate(websockets):
        assert echo_works(s, f"still here {i}")
    answered = halves[::31] + halves[-1:]
    for s in answered:  # the rest of the request: each is answered (and closed, as it asks)
        s.sendall(b"Connection: close\r\n\r\n")
        assert read_to_eof(s).startswith(b"HTTP/1.1 200 ")
        s.close()
    wait_for(lambda: srv.server.connection_count() <= 256 - len(answered), 30, 0.02, "answered connections counted out")
    late = connect(srv.port)  # a place is free again
    late.sendall(f"GET /api/market/health HTTP/1.1\r\nHost: {srv.host}\r\nConnection: close\r\n\r\n".encode())
    assert read_to_eof(late).startswith(b"HTTP/1.1 200 ")
    for s in websockets + halves + [late]:
        s.close()


def test_max_connections_is_a_setting(make_runtime):
    assert make_runtime().settings.max_connections == 256
    assert make_runtime(max_connections=3).settings.max_connections == 3
    from tradecanvas_ext.settings import ConfigError
    with pytest.raises(ConfigError, match="max_connections"):
        make_runtime(max_connections=0)


# -- slowloris -----------------------------------------------------------------------------------------------

def test_half_sent_requests_do_not_hold_back_a_normal_one(serve):
    srv = serve()
    halves = []
    for i in range(50):
        s = connect(srv.port)
        s.sendall(f"GET /api/market/health HTTP/1.1\r\nHost: {srv.host}\r\nX-Half: {i}\r\n".encode())
        halves.append(s)
    wait_for(lambda: srv.server.connection_count() >= 50, 30, 0.02, "the 50 half-sent requests accepted")
    normal = connect(srv.port)
    t0 = time.monotonic()
    status, _ = http(normal, srv.host)
    took = time.monotonic() - t0
    assert status == 200
    assert took < 1.0, took  # contract bound
    for s in halves + [normal]:
        s.close()


def test_a_request_that_does_not_arrive_in_time_is_closed_but_a_websocket_is_not(serve):
    srv = serve(request_timeout_s=0.5, ping_interval=0)  # no pings: the WebSocket's reads block, untimed
    ws, head = upgrade(srv.port, srv.host)
    assert head.startswith(b"HTTP/1.1 101")
    half = connect(srv.port)
    half.sendall(f"GET /api/market/health HTTP/1.1\r\nHost: {srv.host}\r\n".encode())
    trickle = connect(srv.port)  # one byte at a time, each well within the read timeout
    trickle.settimeout(0.1)
    request = f"GET /api/market/health HTTP/1.1\r\nHost: {srv.host}\r\nX-Slow: {'x' * 200}\r\n".encode()
    cut = False
    deadline = time.monotonic() + 30
    for byte in request:
        try:
            trickle.send(bytes([byte]))
            cut = trickle.recv(1) == b""  # waits 0.1 s unless the server closed it
        except TimeoutError:
            continue
        except OSError:
            cut = True
        if cut or time.monotonic() > deadline:
            break
    assert cut, "a request trickled in byte by byte was not cut at its deadline"
    half.settimeout(30)
    assert read_to_eof(half) == b""  # closed without an answer
    idle = connect(srv.port)  # connected, sends nothing
    idle.settimeout(30)
    assert read_to_eof(idle) == b""
    assert echo_works(ws, "the WebSocket outlived the request deadline")  # no read timeout once upgraded
    for s in (ws, half, trickle, idle):
        s.close()


# -- keep-alive ------------------------------------------------------------------------------------------------

def head_fields(head: bytes) -> dict[bytes, bytes]:
    return {name.strip().lower(): value.strip() for name, _, value in
            (line.partition(b":") for line in head.split(b"\r\n")[1:] if line)}


def chunked_app(environ, start_response):
    """No Content-Length: an HTTP/1.1 answer is chunked, an HTTP/1.0 one ends with the connection.
    /fail raises before answering, /break after the head."""
    if environ["PATH_INFO"] == "/fail":
        raise RuntimeError("before the head")
    start_response("200 OK", [("Content-Type", "text/plain")])
    if environ["PATH_INFO"] == "/break":
        def parts():
            yield b"one,"
            raise RuntimeError("after the head")
        return parts()
    return [b"one,", b"two"]


def test_a_connection_serves_request_after_request_until_the_client_closes_it(serve):
    srv = serve()
    s = connect(srv.port)
    for _ in range(3):
        s.sendall(f"GET /api/market/health HTTP/1.1\r\nHost: {srv.host}\r\n\r\n".encode())
        head = read_head(s)
        assert head.startswith(b"HTTP/1.1 200 "), head
        assert head_fields(head).get(b"connection") != b"close"
        s.recv(int(head_fields(head)[b"content-length"]), socket.MSG_WAITALL)
    assert srv.server.connection_count() == 1  # one connection, one handler thread, all along
    # a body the app never reads is dropped, and the next request on the connection is read as one
    s.sendall(f"POST /api/market/backfill HTTP/1.1\r\nHost: {srv.host}\r\nContent-Type: text/plain\r\n"
              f"Content-Length: 5000\r\n\r\n{'x' * 5000}".encode())
    status, body = http(s, srv.host, extra="Connection: close\r\n")  # the next request, on the same socket
    assert status == 400 and json.loads(body)["error"]["code"] == "bad_request"
    status, body = http(s, srv.host, extra="Connection: close\r\n")
    assert status == 200
    assert read_to_eof(s) == b""  # closed as it asked
    s.close()


def test_an_idle_keep_alive_connection_is_closed_at_the_request_deadline(serve):
    srv = serve(request_timeout_s=0.5)
    s = connect(srv.port)
    assert http(s, srv.host)[0] == 200
    assert srv.server.connection_count() == 1
    s.settimeout(30)
    t0 = time.monotonic()
    assert read_to_eof(s) == b""  # nothing more sent: cut, with no answer
    assert time.monotonic() - t0 >= 0.4
    wait_for(lambda: srv.server.connection_count() == 0, 30, 0.02, "the idle connection counted out")
    s.close()


def test_a_body_left_unread_and_trickled_is_cut_at_the_request_deadline(serve):
    srv = serve(request_timeout_s=0.5)
    s = connect(srv.port)
    s.sendall(f"POST /api/market/backfill HTTP/1.1\r\nHost: {srv.host}\r\nContent-Type: text/plain\r\n"
              f"Content-Length: 1000\r\n\r\nx".encode())
    head = read_head(s)  # answered at once (the app never reads a body that is not JSON) ...
    assert head.startswith(b"HTTP/1.1 400 ")
    s.recv(int(head_fields(head)[b"content-length"]), socket.MSG_WAITALL)
    s.settimeout(0.1)
    cut = False
    for _ in range(300):  # ... then the rest comes one byte per 0.1 s, each within the read timeout
        try:
            s.send(b"x")
            cut = s.recv(1) == b""
        except TimeoutError:
            continue
        except OSError:
            cut = True
        if cut:
            break
    assert cut, "a trickled body was read past the request deadline"
    s.close()


def test_what_cannot_be_kept_says_connection_close():
    server = WebServer(chunked_app, "127.0.0.1", 0).start()
    try:
        port = int(server.url.rsplit(":", 1)[1])
        s = connect(port)
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        head = read_head(s)
        assert head_fields(head).get(b"transfer-encoding") == b"chunked"
        assert head_fields(head).get(b"connection") != b"close"
        data = b""
        while not data.endswith(b"0\r\n\r\n"):
            data += s.recv(4096)
        assert data == b"4\r\none,\r\n3\r\ntwo\r\n0\r\n\r\n"
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")  # an HTTP/1.0 client: unframed, the close ends the body
        data = read_to_eof(s)
        head, _, rest = data.partition(b"\r\n\r\n")
        assert head_fields(head).get(b"connection") == b"close" and rest == b"one,two"
        s.close()
        for path, status in (("/fail", b"500"), ("/break", b"200")):  # an app that fails: answer, then close
            s = connect(port)
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            data = read_to_eof(s)
            assert data.split(b" ", 2)[1] == status, data[:60]
            if path == "/fail":
                assert head_fields(data.partition(b"\r\n\r\n")[0]).get(b"connection") == b"close"
            s.close()
        big = connect(port)  # a large body left unread is not read through: the connection closes
        big.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5000000\r\n\r\n" + b"x" * 100_000)
        head = read_head(big)
        assert head_fields(head).get(b"connection") == b"close"
        big.close()
    finally:
        server.stop()


# -- pings -----------------------------------------------------------------------------------------------------

def test_a_websocket_that_stops_answering_pings_is_closed(serve):
    srv = serve(ping_interval=0.2)
    deaf, head = upgrade(srv.port, srv.host)  # reads, but never answers a ping
    assert head.startswith(b"HTTP/1.1 101")
    srv.hub.wait_clients(1)
    deaf_client = srv.hub.clients[0]
    polite_sock, head = upgrade(srv.port, srv.host)
    assert head.startswith(b"HTTP/1.1 101")
    polite = PongingReader(polite_sock)  # answers every ping, as a browser does
    pings = 0
    deaf.settimeout(30)
    while True:
        opcode, payload = read_frame(deaf)
        if opcode == 0x9:
            pings += 1
            continue
        assert opcode == 0x8, opcode  # a close frame: policy violation
        assert int.from_bytes(payload[:2], "big") == 1008
        break
    assert pings >= 1
    assert read_to_eof(deaf) == b""  # then the connection ends, with no HTTP answer after the close frame
    wait_for(lambda: srv.hub.disconnected == [deaf_client], 30, 0.02, "the route handed the socket back")
    wait_for(lambda: srv.server.connection_count() == 1, 30, 0.02, "its connection counted out")
    seen = polite.pings
    wait_for(lambda: polite.pings >= seen + 5, 30, 0.02, "five more ping periods")
    send_text(polite_sock, "answering pings keeps me")
    assert polite.frames.get(timeout=30) == (0x1, b'{"type": "echo", "text": "answering pings keeps me"}')
    assert srv.hub.disconnected == [deaf_client]
    polite.stop()


class PongingReader:
    """Reads a raw WebSocket in a thread, answering each ping; other frames go to `frames`."""

    def __init__(self, sock: socket.socket):
        self.sock, self.pings, self.frames = sock, 0, queue.Queue()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while True:
                opcode, payload = read_frame(self.sock)
                if opcode == 0x9:
                    mask = os.urandom(4)
                    self.sock.sendall(bytes([0x8A, 0x80 | len(payload)]) + mask
                                      + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
                    self.pings += 1
                else:
                    self.frames.put((opcode, payload))
        except (AssertionError, OSError):
            pass

    def stop(self) -> None:
        self.sock.close()
        self._thread.join(10)


# -- Host and Origin --------------------------------------------------------------------------------------------

def test_a_foreign_origin_is_refused_before_the_upgrade(serve):
    srv = serve()
    port = srv.port
    for origin in ("http://evil.example", f"http://evil.example:{port}", f"http://127.0.0.1:{port + 1}",
                   f"https://127.0.0.1:{port}", "null", f"http://127.0.0.1:{port}/x"):
        s, head = upgrade(port, srv.host, origin)
        assert head.startswith(b"HTTP/1.1 403 "), (origin, head)
        assert b"Upgrade: websocket" not in head
        body = read_to_eof(s)
        assert json.loads(body)["error"]["code"] == "forbidden"
        s.close()
    assert srv.hub.clients == []  # no socket ever reached the hub
    for origin in (None, f"http://127.0.0.1:{port}", f"http://localhost:{port}", "http://frequi.example:3000"):
        host = f"localhost:{port}" if origin and "localhost" in origin else srv.host
        s, head = upgrade(port, host, origin)
        assert head.startswith(b"HTTP/1.1 101"), (origin, head)
        assert echo_works(s, f"from {origin}")
        s.close()


def test_a_foreign_host_is_refused_for_http_and_websocket(serve):
    srv = serve()
    port = srv.port
    for host in ("evil.example", f"evil.example:{port}", f"127.0.0.1:{port + 1}", "127.0.0.1", "",
                 f"127.0.0.1:{port}@evil.example", f"localhost.evil.example:{port}"):
        s = connect(port)
        status, body = http(s, host, extra="Connection: close\r\n")
        assert status == 403, host
        assert json.loads(body)["error"]["code"] == "forbidden"
        s.close()
        ws, head = upgrade(port, f"evil.example:{port}", f"http://evil.example:{port}")
        assert head.startswith(b"HTTP/1.1 403 "), head
        ws.close()
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"LOCALHOST:{port}"):
        s = connect(port)
        assert http(s, host)[0] == 200, host
        s.close()


def test_host_and_origin_rules():
    names = own_names(["0.0.0.0", "127.0.0.1", "192.168.1.5", None])
    assert names == {"localhost", "127.0.0.1", "::1", "192.168.1.5"}
    assert own_names(["0.0.0.0", "172.17.0.2"]) >= {"127.0.0.1", "::1"}  # in a container, behind -p
    assert split_host("[::1]:8090") == ("::1", 8090)
    assert split_host("[0:0::1]:8090") == ("::1", 8090)
    assert split_host("example") == ("example", 80)
    for bad in ("::1", "[::1", "[::1]x", "a:b", "a:1:2", ":8090", "a:99999999", "a:٣"):
        assert split_host(bad) is None, bad
    assert host_allowed("192.168.1.5:8090", names, 8090)
    assert not host_allowed("192.168.1.6:8090", names, 8090)
    assert not host_allowed(None, names, 8090)
    v6 = own_names(["::1"])
    assert host_allowed("[::1]:8090", v6, 8090)
    cors = frozenset({"http://frequi.example:3000"})
    assert origin_allowed(None, names, 8090, cors)
    assert origin_allowed("http://frequi.example:3000", names, 8090, cors)
    assert origin_allowed("http://localhost:8090", names, 8090, cors)
    assert not origin_allowed("http://frequi.example:3001", names, 8090, cors)
    assert not origin_allowed("ws://localhost:8090", names, 8090, cors)
