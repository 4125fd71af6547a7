"""The server thread: real port for 0, clear busy-port error, a quick stop that closes every socket (open
WebSockets too) and joins threads, restart; and the WebSocket route's own duties against a stand-in hub."""
from __future__ import annotations

import errno
import json
import socket
import threading
import time
from types import SimpleNamespace
from urllib.parse import urlsplit

import pytest
import requests
import websocket

from tradecanvas_ext import create_app
from tradecanvas_ext.hub.priority import LoopPriority
from tradecanvas_ext.web.server import ServerError, WebServer

TOKEN = "ws-s3cret-token-value"


def port_of(url: str) -> int:
    return urlsplit(url).port


def get(url: str, path: str = "/api/market/health", **kw) -> requests.Response:
    with requests.Session() as s:
        s.trust_env = False
        return s.get(url + path, timeout=10, **kw)


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


_BASELINE: set[threading.Thread] = set()


@pytest.fixture(autouse=True)
def _thread_baseline():
    """Threads left by earlier tests (other modules' servers and clients) are not this test's business."""
    _BASELINE.clear()
    _BASELINE.update(threading.enumerate())
    yield


def web_threads(grace_s: float = 2.0) -> list[str]:
    """Web server and WebSocket threads this test started that are still alive after a short grace."""
    deadline = time.monotonic() + grace_s
    while True:
        alive = [t.name for t in threading.enumerate() if t.is_alive() and t not in _BASELINE and
                 (t.name.startswith("tc-web") or "simple_websocket" in t.name)]
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(0.05)


class FakeClient:
    def __init__(self, send, close):
        self.send, self.close = send, close
        self.texts: list[str] = []
        self.errors: list[tuple[str, str]] = []

    def handle_text(self, text):
        self.texts.append(text)
        self.send(json.dumps({"type": "echo", "text": text}))

    def send_error(self, code, message, series_id=None):
        self.errors.append((code, message))
        self.send(json.dumps({"type": "error", "code": code, "message": message}))

    def write_queued(self):
        return True  # it sends at once


class FakeHub:
    """Stands in for the hub: the route's side of the interface only."""

    def __init__(self):
        self.clients: list[FakeClient] = []
        self.disconnected: list[FakeClient] = []
        self.lock = threading.Lock()
        self.priority = LoopPriority()  # never entered: the bot's loop holds nothing back here

    def connect(self, send, close=None, bell=None):
        client = FakeClient(send, close)
        with self.lock:
            self.clients.append(client)
        return client

    def disconnect(self, client):
        with self.lock:
            if client not in self.disconnected:
                self.disconnected.append(client)

    def close(self):
        pass

    def wait_clients(self, n: int, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.clients) < n and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(self.clients) >= n


class StubRuntime:
    """Just what create_app and the /ws/market route read of a runtime: its settings and its hub."""

    def __init__(self, settings, hub):
        self.settings, self.hub = settings, hub


_NO_HUB = object()


@pytest.fixture
def fake_hub_server(make_runtime):
    """The real app and server around a stand-in hub (or none), with a real runtime's settings."""
    servers = []

    def make(hub=_NO_HUB, **section):
        settings = make_runtime(**section).settings
        hub = FakeHub() if hub is _NO_HUB else hub
        server = WebServer(create_app(StubRuntime(settings, hub)), "127.0.0.1", 0)
        server.start()
        servers.append(server)
        return SimpleNamespace(url=server.url, hub=hub, stop=server.stop)

    yield make
    for server in servers:
        server.stop()


def ws_url(rt, query: str = "") -> str:
    return rt.url.replace("http://", "ws://") + "/ws/market" + query


def raw_websocket(port: int) -> socket.socket:
    """A WebSocket client that completes the handshake and then never reads or answers anything."""
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(b"GET /ws/market HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n" % port)
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(1)
    assert head.startswith(b"HTTP/1.1 101")
    return s


# ---- life cycle -----------------------------------------------------------------------------------------

def test_server_starts_on_port_0_and_reports_the_real_port(make_runtime):
    rt = make_runtime(serve=True)
    assert rt.settings.listen_port == 0
    port = port_of(rt.url)
    assert rt.url == f"http://127.0.0.1:{port}" and port > 0
    assert get(rt.url).status_code == 200


def test_start_freezes_what_start_up_built_out_of_the_collectors_sight(make_runtime):
    import gc

    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    make_runtime(serve=True)
    assert gc.get_freeze_count() > 0


def test_a_busy_port_is_a_clear_error_naming_host_and_port(make_runtime):
    rt = make_runtime(serve=False)
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    port = busy.getsockname()[1]
    try:
        with pytest.raises(ServerError) as info:  # not SystemExit, as werkzeug's own bind would do
            WebServer(create_app(rt), "127.0.0.1", port).start()
        assert isinstance(info.value, OSError) and info.value.errno == errno.EADDRINUSE
        assert f"127.0.0.1:{port}" in str(info.value) and "listen_port" in str(info.value)
        with pytest.raises(OSError, match=f"127.0.0.1:{port}"):
            make_runtime(serve=True, listen_port=port)
    finally:
        busy.close()


def test_a_second_runtime_on_the_same_port_is_refused_and_the_first_keeps_serving(make_runtime, tmp_path):
    first = make_runtime(serve=True)
    port = port_of(first.url)
    with pytest.raises(ServerError, match=f"cannot listen on 127.0.0.1:{port}"):
        make_runtime(serve=True, listen_port=port, db_url=f"sqlite:///{tmp_path / 'other.sqlite'}")
    assert get(first.url).status_code == 200


def test_stop_closes_the_listening_socket_and_joins_the_threads(make_runtime):
    rt = make_runtime(serve=True)
    port = port_of(rt.url)
    assert get(rt.url).status_code == 200
    rt.stop()
    assert rt.url is None
    assert refused(port)
    assert web_threads() == []


def test_stop_is_idempotent(make_runtime):
    rt = make_runtime(serve=True)
    server = rt.server
    rt.stop()
    rt.stop()
    server.stop()
    assert not server.running


def test_start_and_stop_twice(make_runtime):
    rt = make_runtime(serve=False)
    server = WebServer(create_app(rt), "127.0.0.1", 0)
    first = port_of(server.start().url)
    assert get(server.url).status_code == 200
    server.stop()
    assert refused(first)
    server.start()
    assert get(server.url).status_code == 200
    server.stop()
    assert web_threads() == []

    rt = make_runtime(serve=True)
    rt.stop()
    rt.start(serve=True)
    assert get(rt.url).status_code == 200
    rt.stop()
    assert rt.url is None and web_threads() == []


def test_the_app_factory_serves_without_our_server(make_runtime):
    rt = make_runtime(serve=False)
    client = create_app(rt).test_client()
    assert client.get("/api/market/health").status_code == 200
    assert client.get("/api/market/nope").get_json()["error"]["code"] == "not_found"


def test_stop_finishes_quickly_with_clients_still_connected(fake_hub_server):
    rt = fake_hub_server()
    hub = rt.hub
    port = port_of(rt.url)
    polite = websocket.create_connection(ws_url(rt), timeout=5)  # answers a close frame when it reads
    deaf = raw_websocket(port)  # never reads, never answers
    idle = socket.create_connection(("127.0.0.1", port), timeout=5)  # connected, no request yet
    half = socket.create_connection(("127.0.0.1", port), timeout=5)
    half.sendall(b"GET /api/market/health HTTP/1.1\r\nHost: x\r\n")  # a request cut in the middle
    hub.wait_clients(2)
    reader = threading.Thread(target=lambda: polite.recv_data_frame(True), daemon=True)
    reader.start()  # the polite client reads, so it sees the close frame and answers it
    t0 = time.monotonic()
    rt.stop()
    took = time.monotonic() - t0
    assert took < 10, took  # not held by the deaf or half-sent clients (their timeouts are far longer)
    assert refused(port)
    assert web_threads() == []
    assert len(hub.disconnected) == 2  # the route handed every socket back to the hub
    reader.join(5)
    deaf.settimeout(5)
    data = b""
    while chunk := deaf.recv(4096):
        data += chunk
    assert data[:1] == b"\x88"  # the deaf client got a close frame, then EOF
    assert int.from_bytes(data[2:4], "big") == 1001  # going away
    for s in (polite, deaf, idle, half):
        s.close()


# ---- the WebSocket route's own duties -------------------------------------------------------------------

def test_ws_route_hands_text_frames_to_the_hub_and_answers_binary_with_bad_request(fake_hub_server):
    rt = fake_hub_server()
    hub = rt.hub
    ws = websocket.create_connection(ws_url(rt), timeout=5)
    ws.send('{"type": "ping"}')
    assert json.loads(ws.recv()) == {"type": "echo", "text": '{"type": "ping"}'}
    ws.send_binary(b"\x00\x01")
    assert json.loads(ws.recv())["code"] == "bad_request"
    ws.send("after")
    assert json.loads(ws.recv())["text"] == "after"  # a binary frame does not close the socket
    client = hub.clients[0]
    assert client.texts == ['{"type": "ping"}', "after"]
    assert client.errors == [("bad_request", "binary frames are not supported; send JSON text frames")]
    ws.close()
    deadline = time.monotonic() + 5
    while not hub.disconnected and time.monotonic() < deadline:
        time.sleep(0.01)
    assert hub.disconnected == [client]


def test_ws_route_without_a_hub_closes_the_socket(fake_hub_server):
    rt = fake_hub_server(hub=None)
    ws = websocket.create_connection(ws_url(rt), timeout=5)
    opcode, frame = ws.recv_data_frame(True)
    assert opcode == websocket.ABNF.OPCODE_CLOSE
    assert int.from_bytes(frame.data[:2], "big") == 1011
    ws.close()


@pytest.mark.parametrize("query,headers,ok", [
    ("", [], False),
    ("?token=wrong", [], False),
    ("", ["Authorization: Bearer wrong"], False),
    (f"?token={TOKEN}", [], True),
    ("", [f"Authorization: Bearer {TOKEN}"], True),
])
def test_ws_route_checks_the_token_from_the_query_or_the_header(fake_hub_server, query, headers, ok):
    rt = fake_hub_server(api_token=TOKEN)
    hub = rt.hub
    ws = websocket.create_connection(ws_url(rt, query), header=headers, timeout=5)
    if ok:
        ws.send("hello")
        assert json.loads(ws.recv()) == {"type": "echo", "text": "hello"}
    else:
        assert json.loads(ws.recv())["code"] == "unauthorized"
        opcode, frame = ws.recv_data_frame(True)
        assert opcode == websocket.ABNF.OPCODE_CLOSE and int.from_bytes(frame.data[:2], "big") == 1008
        assert hub.clients == []
    ws.close()
