"""The `/ws/market` WebSocket route (flask-sock): token check, then frames in to the hub and the hub's
messages out, both on the request's own thread (two threads per socket: this one and simple_websocket's
reader), until either side closes; a socket past its frame allowance is told (`rate_limited`) and closed.
While the bot's loop holds client work back (hub/priority.py), handshakes and frames wait for it: what the
hub already queued (live candles) is still written. It never parses protocol messages itself (the hub
does) and never logs the token."""
from __future__ import annotations

import json
import logging
import socket
import threading

from flask import Flask, current_app, request
from flask_sock import Sock
from simple_websocket import ConnectionClosed

from ..hub.budget import CatchUpBudget
from .errors import token_ok

log = logging.getLogger(__name__)

EXTENSION_KEY = "tradecanvas.websockets"
ENDPOINT = "market_ws"  # the route's Flask endpoint name (the app's Origin check and open endpoints)
CLOSE_GOING_AWAY = 1001
CLOSE_POLICY_VIOLATION = 1008
CLOSE_INTERNAL_ERROR = 1011
# flask-sock hands these to simple_websocket.Server: pings find dead peers, a size cap bounds memory.
SERVER_OPTIONS = {"ping_interval": 25, "max_message_size": 64 * 1024}
# The route's thread looks again this often even when its bell never rang. simple_websocket (1.x) rings
# before it marks the socket closed when its reader refuses a frame over max_message_size, so a thread
# that only waited for the bell could wait forever, holding its place under max_connections.
_IDLE_WAKE_S = 5.0
_FRAMES_PER_TURN = 64  # frames handled before what is queued is written: a flood cannot starve its own writes
# A socket may send FRAME_BURST frames at once, then FRAME_RATE_PER_S a second (ours, beyond the contract):
# past that it gets an error `rate_limited` and is closed (1008). A chart sends a few frames a minute; each
# frame (a subscribe above all) costs the bot's interpreter, so a flood must not go on for good.
FRAME_BURST = 256
FRAME_RATE_PER_S = 10.0


class OpenWebSockets:
    """The app's open WebSockets, so that a server stop can close them instead of waiting on them."""

    def __init__(self):
        self._lock = threading.Lock()
        self._open: set = set()

    def add(self, ws) -> None:
        with self._lock:
            self._open.add(ws)

    def discard(self, ws) -> None:
        with self._lock:
            self._open.discard(ws)

    def __len__(self) -> int:
        with self._lock:
            return len(self._open)

    def close_all(self, code: int = CLOSE_GOING_AWAY, message: str = "server shutting down") -> int:
        with self._lock:
            sockets = list(self._open)
        for ws in sockets:
            try:
                ws.close(reason=code, message=message)
            except Exception:  # already closed, or the peer is gone
                pass
        return len(sockets)


def _close(ws, code: int, message: str) -> None:
    try:
        ws.close(reason=code, message=message)
    except Exception:
        pass


def _cut(ws) -> None:
    """How the hub closes a client it drops: shut the socket down, no close frame. It cannot block (a
    close frame could, behind a full send buffer), and a send blocked on the socket returns at once."""
    try:
        ws.sock.shutdown(socket.SHUT_RDWR)
    except OSError:  # already gone
        pass


def _refuse_flood(ws, client) -> None:
    """A socket past its frame allowance: an error saying why, then the close."""
    client.send_error("rate_limited", f"more than {FRAME_BURST} frames at once or {FRAME_RATE_PER_S:g} a second "
                                      "on this socket: closing it")
    client.write_queued()
    _close(ws, CLOSE_POLICY_VIOLATION, "rate limited")


def market_ws(ws) -> None:
    runtime = current_app.extensions["tradecanvas.runtime"]
    registry: OpenWebSockets = current_app.extensions[EXTENSION_KEY]
    registry.add(ws)
    try:
        if not token_ok(runtime.settings.api_token, request, allow_query=True):
            ws.send(json.dumps({"type": "error", "code": "unauthorized",
                                "message": "missing or wrong API token: pass ?token=... or "
                                           "'Authorization: Bearer <token>'"}))
            _close(ws, CLOSE_POLICY_VIOLATION, "unauthorized")
            return
        hub = runtime.hub
        if hub is None:
            _close(ws, CLOSE_INTERNAL_ERROR, "live candles are not available")
            return
        # simple_websocket's reader sets ws.event when a frame (or the close) arrives; the hub sets it
        # when it queues a message: this thread wakes for either
        bell = ws.event
        client = hub.connect(send=ws.send, close=lambda: _cut(ws), bell=bell)
        # the frame allowance as a budget in seconds: one frame costs 1 / FRAME_RATE_PER_S of it
        allowance = CatchUpBudget(1.0, FRAME_BURST / FRAME_RATE_PER_S)
        try:
            while True:
                bell.clear()  # before looking: whatever comes after rings it again
                taken = 0
                while taken < _FRAMES_PER_TURN and (text := ws.receive(timeout=0)) is not None:
                    taken += 1
                    if allowance.wait_s() > 0:
                        _refuse_flood(ws, client)
                        return
                    allowance.charge(1.0 / FRAME_RATE_PER_S)
                    hub.priority.wait()  # the bot's loop first: the frame is handled after its analysis
                    if isinstance(text, (bytes, bytearray)):
                        client.send_error("bad_request", "binary frames are not supported; send JSON text frames")
                    else:
                        client.handle_text(text)
                if not client.write_queued() or not ws.connected:
                    break
                if taken < _FRAMES_PER_TURN:  # else frames may be waiting that rang before the clear
                    bell.wait(_IDLE_WAKE_S)
        except ConnectionClosed:
            pass
        finally:
            hub.disconnect(client)
    finally:
        registry.discard(ws)


def bot_loop_first() -> None:
    """A `before_request` hook, after the access checks: a WebSocket handshake waits while the bot's loop
    holds client work back (hub/priority.py); anything else goes on."""
    if request.endpoint == ENDPOINT:
        hub = current_app.extensions["tradecanvas.runtime"].hub
        if hub is not None:
            hub.priority.wait()


def init_websocket(app: Flask) -> Sock:
    app.config.setdefault("SOCK_SERVER_OPTIONS", dict(SERVER_OPTIONS))
    app.extensions[EXTENSION_KEY] = OpenWebSockets()
    sock = Sock(app)
    sock.route("/ws/market", endpoint=ENDPOINT)(market_ws)
    return sock
