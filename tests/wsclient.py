"""A small real WebSocket client (websocket-client library) for the hub tests, with ordering checks."""
from __future__ import annotations

import base64
import fcntl
import json
import os
import socket
import struct
import termios
import time
from urllib.parse import urlsplit

import websocket


class WS:
    def __init__(self, url: str, token: str | None = None):
        ws_url = url.replace("http://", "ws://") + "/ws/market" + (f"?token={token}" if token else "")
        self.ws = websocket.create_connection(ws_url, timeout=10)
        self.received: list[dict] = []

    def send(self, obj) -> None:
        self.ws.send(obj if isinstance(obj, str) else json.dumps(obj))

    def subscribe(self, series_id: str, since=None, supports_batch=False) -> dict:
        msg = {"type": "subscribe", "series_id": series_id, "supports_batch": supports_batch}
        if since is not None:
            msg["since"] = since
        self.send(msg)
        return self.until(lambda m: m["type"] in ("subscribed", "error"))

    def recv(self, timeout: float = 5.0) -> dict | None:
        self.ws.settimeout(timeout)
        try:
            raw = self.ws.recv()
        except websocket.WebSocketTimeoutException:
            return None
        msg = json.loads(raw)
        self.received.append(msg)
        return msg

    def until(self, pred, timeout: float = 10.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            # a few seconds at most per read: the server's pings (every 25 s) would restart a longer one
            msg = self.recv(min(5.0, max(0.05, deadline - time.monotonic())))
            if msg is not None and pred(msg):
                return msg
        raise AssertionError(f"timed out; received {self.received[-5:]}")

    def drain(self, quiet: float = 0.5) -> list[dict]:
        """Everything that arrives until the socket is quiet for `quiet` seconds."""
        out = []
        while True:
            msg = self.recv(quiet)
            if msg is None:
                return out
            out.append(msg)

    def close(self) -> None:
        try:
            self.ws.close()
        except Exception:
            pass


def events(msgs: list[dict], series_id: str | None = None) -> list[tuple]:
    """Flatten to ('c', t) for each candle sent and ('gap', expected, actual, missing, reason)."""
    out = []
    for m in msgs:
        if series_id is not None and m.get("series_id") != series_id:
            continue
        if m["type"] == "candle_closed":
            out.append(("c", m["candle"]["candle_time"]))
        elif m["type"] == "candles_batch":
            out.extend(("c", c["candle_time"]) for c in m["candles"])
        elif m["type"] == "gap":
            out.append(("gap", m["expected_next_time"], m["actual_time"], m["missing_candles"], m["reason"]))
    return out


def check_guarantee(msgs: list[dict], series_id: str, tf: int, since: int | None) -> list[int]:
    """Contract section 4 on one subscription's received messages; returns the candle times."""
    cursor = None if since is None else since // tf * tf
    pending_gap = None
    times = []
    for ev in events(msgs, series_id):
        if ev[0] == "gap":
            assert pending_gap is None, f"two gaps in a row: {ev}"
            assert cursor is not None and ev[1] == cursor + tf, f"gap does not start at the cursor: {ev}"
            assert ev[3] == (ev[2] - ev[1]) // tf and ev[3] >= 1
            pending_gap = ev
            continue
        t = ev[1]
        assert t % tf == 0, f"unaligned {t}"
        assert cursor is None or t > cursor, f"not strictly increasing: {t} after {cursor}"
        if cursor is not None and t > cursor + tf:
            assert pending_gap is not None and pending_gap[2] == t, f"silent jump {cursor} -> {t}"
        else:
            assert pending_gap is None, f"gap {pending_gap} before a consecutive candle {t}"
        pending_gap = None
        cursor = t
        times.append(t)
    assert pending_gap is None, "a gap with no candle after it"
    return times


def frame(obj) -> bytes:
    """One masked client text frame (RFC 6455 section 5.2), as a raw socket must send it."""
    payload = (obj if isinstance(obj, str) else json.dumps(obj)).encode()
    n = len(payload)
    head = bytes([0x81]) + (bytes([0x80 | n]) if n < 126 else
                            bytes([0x80 | 126]) + struct.pack("!H", n) if n < 65536 else
                            bytes([0x80 | 127]) + struct.pack("!Q", n))
    mask = os.urandom(4)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def stalled_client(url: str, *frames, rcvbuf: int = 4096) -> socket.socket:
    """A raw socket that completes the WebSocket handshake, sends `frames`, then never reads again: no
    library reads for it, and its small receive buffer makes the server's sends block soon."""
    parts = urlsplit(url)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)  # before connect: the window is set then
    sock.settimeout(10)
    sock.connect((parts.hostname, parts.port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(f"GET /ws/market HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\n"
                 f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
    head = b""
    while not head.endswith(b"\r\n\r\n"):  # byte by byte: nothing after the handshake is read
        byte = sock.recv(1)
        assert byte, f"closed during the handshake: {head!r}"
        head += byte
    assert head.startswith(b"HTTP/1.1 101"), head
    for f in frames:
        sock.sendall(frame(f))
    return sock


def read_up_to(sock: socket.socket, n: int) -> int:
    """Read and drop up to `n` bytes (fewer when the server closes first); returns how many came."""
    got = 0
    while got < n:
        chunk = sock.recv(n - got)
        if not chunk:
            break
        got += len(chunk)
    return got


def unread_bytes(sock: socket.socket) -> int:
    """What has arrived in `sock`'s receive buffer and was not read (FIONREAD), without reading it."""
    return struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0"))[0]
