"""Hypothesis mixes normal WebSocket clients with hostile ones (stalled, slow, cut in the middle of a
catch-up, subscribe floods, frame floods, malformed and oversized frames, reconnect loops, half-sent HTTP
requests) on a real server and real sockets, while candles are ingested: contract section 4's delivery
guarantee holds for every normal client, no `ingest_closed` passes its bound, and no hostile client
outlives its socket."""
from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import struct
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from tests.conftest import NOW, wait_for
from tests.test_hub_flow_control import synthetic
from tests.wsclient import WS, check_guarantee, events, frame, read_up_to, stalled_client
from tradecanvas_ext import Runtime, Settings
from tradecanvas_ext.domain import SeriesId
from tradecanvas_ext.store import open_store
from tradecanvas_ext.testing import ManualClock

SID = "binance:spot:BTC/USDT:1m"  # the ingested series
BIG = "binance:spot:ETH/USDT:1m"  # a static series with a long store: a catch-up that fills any socket
FLOOD = "binance:spot:LTC/USDT:1m"  # only a stalled client follows it: bursts until the byte bound drops it
TF = 60
LAST_CLOSED = NOW // TF * TF - TF
SLOTS = 30_000
BASE = LAST_CLOSED - (SLOTS - 1) * TF  # ingest slot k is the candle at BASE + k * TF
BIG_CANDLES = 20_000  # ~2.2 MB as candle_closed messages
BARRIER = LAST_CLOSED + 10_000 * TF  # forming candles far after every closed one: sent to every subscription
INGEST_BOUND_S = 1.0  # a bound check (contract section 4, item 6), not a speed claim
SEND_TIMEOUT_S = 1.0  # the server's WS_SEND_TIMEOUT_S here: a stalled client is dropped in seconds
FRAME_BURST = 1000  # a socket's frame allowance here: above what a normal client sends in one example
PING_INTERVAL_S = 2.0  # the WebSocket ping period here: a client that sends no pong is closed in seconds
PENDING_BYTES = 512 * 1024  # the hub's MAX_PENDING_BYTES here: above a catch-up page plus a burst (~430 KB)
BURST = 1500  # candles in the largest ingest: ~255 KB as candle_closed messages
FLOOD_BURSTS = 40  # ~10 MB: past the kernel's socket buffers (up to 4 MB each way) and the byte bound
FLOOD_BASE = LAST_CLOSED - (FLOOD_BURSTS + 1) * BURST * TF
_BIG_DB: dict[str, Path] = {}


def big_store_file() -> Path:
    """A SQLite file with BIG's candles, written once per test process and copied for each example."""
    if "path" not in _BIG_DB:
        path = Path(tempfile.mkdtemp(prefix="tc-hostile-")) / "big.sqlite"
        storage = open_store(f"sqlite:///{path}", origin="test")
        storage.candles.upsert_closed(SeriesId.parse(BIG), synthetic(LAST_CLOSED - (BIG_CANDLES - 1) * TF,
                                                                      BIG_CANDLES))
        storage.close()
        _BIG_DB["path"] = path
    return _BIG_DB["path"]


class Normal:
    """A well-behaved client (websocket-client) whose reader thread takes every message as it comes."""

    def __init__(self, url: str):
        self.ws = WS(url)
        self.ws.ws.settimeout(None)
        self.msgs: list[dict] = []
        self.markers: list[tuple[int, int | None | str]] = []  # (index of the reply, since or "closed")
        self.cv = threading.Condition()
        self.open = True
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        while True:
            try:
                raw = self.ws.ws.recv()
            except Exception:
                raw = None
            with self.cv:
                if not raw:
                    self.open = False
                    self.cv.notify_all()
                    return
                self.msgs.append(json.loads(raw))
                self.cv.notify_all()

    def wait(self, pred, start: int = 0, timeout: float = 30.0) -> int:
        """Index of the first message from `start` on that satisfies `pred`."""
        deadline = time.monotonic() + timeout
        with self.cv:
            i = start
            while True:
                while i < len(self.msgs):
                    if pred(self.msgs[i]):
                        return i
                    i += 1
                assert self.open, f"the server closed a normal client; last: {self.msgs[-3:]}"
                left = deadline - time.monotonic()
                assert left > 0, f"timed out; last: {self.msgs[-3:]}"
                self.cv.wait(left)

    def send(self, obj) -> None:
        self.ws.send(obj)

    def send_binary(self, data: bytes) -> None:
        self.ws.ws.send_binary(data)

    def ping(self) -> int:
        start = len(self.msgs)
        self.send({"type": "ping"})
        return self.wait(lambda m: m["type"] == "pong", start)

    def subscribe(self, since: int | None, batch: bool) -> None:
        msg = {"type": "subscribe", "series_id": SID, "supports_batch": batch}
        if since is not None:
            msg["since"] = since
        start = len(self.msgs)
        self.send(msg)
        i = self.wait(lambda m: m["type"] == "subscribed" and m["series_id"] == SID, start)
        self.markers.append((i, since))

    @property
    def subscribed(self) -> bool:
        return bool(self.markers) and self.markers[-1][1] != "closed"

    def segments(self):
        """(since, that subscription's messages) for each subscription in turn."""
        with self.cv:
            msgs = list(self.msgs)
        bounds = self.markers + [(len(msgs), "end")]
        for (i, since), (j, _) in zip(bounds, bounds[1:], strict=False):
            yield since, msgs[i + 1:j]

    def cut(self, reset: bool = False) -> None:
        """Hang up without a close frame (with a reset: as a crash or a lost network does). SHUT_RD wakes
        the reader thread first; the close after it is the last reference, so the reset really goes."""
        sock = self.ws.ws.sock
        if reset:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        try:
            sock.shutdown(socket.SHUT_RD if reset else socket.SHUT_RDWR)
        except OSError:
            pass
        self.thread.join(10)
        sock.close()

    def close(self) -> None:
        self.cut()


def split_frames(buf: bytes) -> tuple[list[tuple[int, bytes]], int]:
    """Whole server frames (unmasked) at the start of `buf`: (opcode, payload) each, and the bytes they
    take. A frame cut off at the end (not all arrived, or the socket was dropped in the middle of it) is
    left."""
    out, i = [], 0
    while i + 2 <= len(buf):
        op, n, h = buf[i] & 0x0F, buf[i + 1] & 0x7F, 2
        if n == 126:
            if i + 4 > len(buf):
                break
            n, h = struct.unpack("!H", buf[i + 2:i + 4])[0], 4
        elif n == 127:
            if i + 10 > len(buf):
                break
            n, h = struct.unpack("!Q", buf[i + 2:i + 10])[0], 10
        if i + h + n > len(buf):
            break
        out.append((op, bytes(buf[i + h:i + h + n])))
        i += h + n
    return out, i


def frames_until_closed(s: socket.socket, timeout: float = 15.0) -> list[tuple[int, bytes]]:
    """Every whole frame the server sends on `s` until it closes it (within `timeout`, else TimeoutError)."""
    s.settimeout(timeout)
    data = b""
    try:
        while chunk := s.recv(1 << 16):
            data += chunk
    except ConnectionResetError:
        pass
    return split_frames(data)[0]


def control_frame(opcode: int, payload: bytes = b"") -> bytes:
    """A masked client control frame (a pong to the server's ping)."""
    mask = os.urandom(4)
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + bytes(b ^ mask[k % 4] for k, b in enumerate(payload))


def check_prefix(msgs: list[dict], since: int | None) -> list[int]:
    """The guarantee on what a dropped client received: the same rules, except that its last gap may
    have lost the candle after it with the connection."""
    evs = events(msgs, SID)
    if evs and evs[-1][0] == "gap":
        cut = max(i for i, m in enumerate(msgs) if m["type"] == "gap" and m["series_id"] == SID)
        msgs = msgs[:cut]
    return check_guarantee(msgs, SID, TF, since)


class SlowReader:
    """A raw socket with a tiny receive buffer whose thread reads 512 bytes every 20 ms (answering the
    server's pings when it comes to them)."""

    def __init__(self, url: str, since: int | None, batch: bool):
        sub = {"type": "subscribe", "series_id": SID, "supports_batch": batch}
        if since is not None:
            sub["since"] = since
        self.since = since
        self.sock = stalled_client(url, sub)
        self.msgs: list[dict] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        self.sock.settimeout(0.02)
        buf = bytearray()
        while not self.stop.is_set():
            try:
                chunk = self.sock.recv(512)
            except TimeoutError:
                continue
            except OSError:
                return
            if not chunk:
                return
            buf += chunk
            frames, used = split_frames(buf)
            del buf[:used]
            for op, payload in frames:
                if op == 0x1:
                    self.msgs.append(json.loads(payload))
                elif op == 0x9:
                    try:
                        self.sock.sendall(control_frame(0xA, payload))
                    except OSError:
                        return
                elif op == 0x8:
                    return
            self.stop.wait(0.02)  # what makes it slow (the client's behaviour, not a wait for the server)

    def check(self) -> None:
        """What it got (all of it, or up to its drop) keeps the guarantee."""
        self.stop.set()
        self.thread.join(10)
        i = next((k for k, m in enumerate(self.msgs) if m["type"] == "subscribed"), None)
        if i is not None:
            check_prefix(self.msgs[i + 1:], self.since)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)
        self.sock.close()


class _DropCounter(logging.Handler):
    """Counts the hub's "dropping a client with over N bytes unsent" warnings: the byte bound at work."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record):
        if record.getMessage().startswith("dropping a WebSocket client with over"):
            self.count += 1


DROPS = _DropCounter()


def assert_closed_soon(s: socket.socket, after: str, timeout: float = 15.0) -> None:
    """Read `s` until the server closes it, which it must do within `timeout` (pings do not count)."""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            s.settimeout(max(0.01, deadline - time.monotonic()))
            if not s.recv(1 << 16):
                return
    except ConnectionResetError:
        return
    except TimeoutError:
        pass
    raise AssertionError(f"the server kept a socket open {timeout}s after {after}")


def rst_close(sock: socket.socket) -> None:
    """Close with a reset (SO_LINGER 0), as a crashed client or a dropped network does."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


MALFORMED = [
    "not json", "{", "[]", '"subscribe"', '{"type": "subscribe"}', '{"type": "nope"}',
    json.dumps({"type": "subscribe", "series_id": SID, "since": 10**30}),
    json.dumps({"type": "subscribe", "series_id": SID, "since": -1}),
    json.dumps({"type": "subscribe", "series_id": SID, "since": True}),
    json.dumps({"type": "subscribe", "series_id": SID, "since": 1.5}),
    json.dumps({"type": "subscribe", "series_id": SID, "since": "0"}),
    json.dumps({"type": "subscribe", "series_id": "binance:spot:NOPE/USDT:1m"}),
    json.dumps({"type": "subscribe", "series_id": "garbage"}),
    json.dumps({"type": "unsubscribe"}),
    "[" * 20_000 + "]" * 20_000,  # deep nesting, inside the size cap
    "\u0000" * 100,
]


class HostileMachine(RuleBasedStateMachine):
    @initialize()
    def start(self):
        self.tmp = tempfile.TemporaryDirectory()
        db = Path(self.tmp.name) / "h.sqlite"
        shutil.copy(big_store_file(), db)
        self.clock = ManualClock(NOW)
        cfg = {"tradecanvas": {"enabled": True, "listen_port": 0, "series": [SID, BIG, FLOOD],
                               "ccxt_config": {"urls": {"api": {"public": "http://127.0.0.1:9/api/v3"}}},
                               "ccxt_timeout_ms": 1000, "db_url": f"sqlite:///{db}",
                               "enable_market_gap_backfill": False, "enable_market_auto_tail_backfill": False,
                               "enable_ccxt_backfill": False, "enable_startup_kline_sync": False}}
        self.rt = Runtime(Settings.from_config(cfg, env={}), clock=self.clock).start(serve=True)
        self.url = self.rt.url
        self.next_slot = 0
        self.normal: dict[int, Normal] = {}
        self.stalled: list[socket.socket] = []
        self.slow: list[SlowReader] = []
        self.other: list[socket.socket] = []  # hostile sockets that only need closing (half-sent requests)
        self.barriers = 0
        self.ingest_times: list[float] = []
        self.flooded = False

    def teardown(self):
        if not hasattr(self, "rt"):
            return
        for c in self.normal.values():
            c.close()
        for s in self.slow:
            s.close()
        for s in self.stalled + self.other:
            s.close()
        self.rt.stop()
        self.tmp.cleanup()

    # ---- the bot: ingest ------------------------------------------------------------------------------
    @rule(skip=st.integers(0, 2), n=st.sampled_from([1, 1, 2, 5, 60, 400, BURST]))
    def ingest(self, skip, n):
        first = self.next_slot + skip
        last = min(SLOTS, first + n)
        if first >= SLOTS:
            return
        self.next_slot = last
        self._timed_ingest(synthetic(BASE + first * TF, last - first))

    @rule(back=st.integers(1, 50))
    def reingest_old(self, back):
        slot = self.next_slot - back
        if slot >= 0:
            self._timed_ingest(synthetic(BASE + slot * TF, 1))

    def _timed_ingest(self, batch, series: str = SID) -> None:
        """On a thread, so that a hung ingest fails the test instead of hanging it."""
        box: dict = {}

        def run():
            t0 = time.monotonic()
            try:
                self.rt.ingest_closed(series, batch)
            except BaseException as exc:
                box["error"] = exc
            box["took"] = time.monotonic() - t0

        t = threading.Thread(target=run, daemon=True)
        t.start()
        t.join(INGEST_BOUND_S * 20)
        assert not t.is_alive(), f"ingest_closed of {len(batch)} candles did not return in {INGEST_BOUND_S * 20}s"
        assert "error" not in box, box.get("error")
        self.ingest_times.append(box["took"])
        assert box["took"] < INGEST_BOUND_S, f"ingest_closed of {len(batch)} candles took {box['took']:.2f}s"

    # ---- normal clients -------------------------------------------------------------------------------
    @rule(cid=st.integers(0, 2), since=st.one_of(st.none(), st.integers(-3, SLOTS)), batch=st.booleans())
    def subscribe(self, cid, since, batch):
        c = self._normal(cid)
        c.subscribe(self._since(since), batch)

    @rule(cid=st.integers(0, 2))
    def unsubscribe(self, cid):
        c = self.normal.get(cid)
        if c is None:
            return
        c.send({"type": "unsubscribe", "series_id": SID})
        c.markers.append((c.ping(), "closed"))

    @rule(cid=st.integers(0, 2), which=st.lists(st.sampled_from(range(len(MALFORMED) + 1)), min_size=1,
                                                max_size=6))
    def malformed_frames(self, cid, which):
        """Bad input on a normal client's socket: error replies, its subscription undisturbed."""
        c = self.normal.get(cid)
        if c is None:
            return
        start = len(c.msgs)
        for k in which:
            if k == len(MALFORMED):
                c.send_binary(b"\x00\x01binary")
            else:
                c.send(MALFORMED[k])
        c.ping()
        with c.cv:
            replies = [m for m in c.msgs[start:] if m["type"] == "error"]
        assert len(replies) == len(which), replies
        assert all(m["code"] in ("bad_request", "unknown_series") for m in replies), replies

    @rule(cid=st.integers(0, 2), sinces=st.lists(st.one_of(st.none(), st.integers(-3, SLOTS)), min_size=2,
                                                 max_size=12), batch=st.booleans())
    def subscribe_flood(self, cid, sinces, batch):
        """Many subscribes to one series at once, each replacing the one before, and to the big series."""
        c = self._normal(cid)
        for s in sinces:
            c.send({"type": "subscribe", "series_id": BIG, "since": LAST_CLOSED - 20 * TF, "supports_batch": batch})
            c.send({"type": "unsubscribe", "series_id": BIG})
            msg = {"type": "subscribe", "series_id": SID, "supports_batch": batch}
            if self._since(s) is not None:
                msg["since"] = self._since(s)
            c.send(msg)
        i = c.ping()
        with c.cv:
            replies = [k for k in range(len(c.msgs[:i])) if c.msgs[k]["type"] == "subscribed"
                       and c.msgs[k]["series_id"] == SID and k > (c.markers[-1][0] if c.markers else -1)]
        assert len(replies) == len(sinces)
        for k, s in zip(replies, sinces, strict=True):
            c.markers.append((k, self._since(s)))

    @rule(cid=st.integers(0, 2))
    def resume_after_cut(self, cid):
        """A normal client that loses its connection (reset) resumes with `since` = the last candle it got."""
        c = self.normal.get(cid)
        if c is None or not c.subscribed:
            return
        self._check_normal(c)
        last_since, msgs = list(c.segments())[-1]
        seen = [e[1] for e in events(msgs, SID) if e[0] == "c"]
        c.cut(reset=True)
        fresh = self.normal[cid] = Normal(self.url)
        fresh.subscribe(seen[-1] if seen else last_since, False)

    # ---- hostile clients ------------------------------------------------------------------------------
    @rule(since=st.one_of(st.none(), st.integers(0, SLOTS)), batch=st.booleans())
    def stall(self, since, batch):
        """Subscribes to both series (the big one from 0) and never reads a byte."""
        live = {"type": "subscribe", "series_id": SID, "supports_batch": batch}
        if since is not None:
            live["since"] = self._since(since)
        self.stalled.append(stalled_client(self.url, {"type": "subscribe", "series_id": BIG, "since": 0,
                                                      "supports_batch": batch}, live))

    @rule()
    def stall_past_the_byte_bound(self):
        """A stalled client whose sends never time out, on a series of its own taking bursts until its
        unsent data passes the byte bound (after the kernel's socket buffers, which take megabytes): the
        hub drops it, from outside any lock, and every ingest call stays bounded, the next one too."""
        if self.flooded:
            return
        self.flooded = True
        from tradecanvas_ext.web import server

        server.WS_SEND_TIMEOUT_S = 600.0  # read at each upgrade: only the byte bound can drop this one
        try:
            s = stalled_client(self.url, {"type": "subscribe", "series_id": FLOOD},
                               {"type": "subscribe", "series_id": SID, "since": BASE + (self.next_slot - 1) * TF})
        finally:
            server.WS_SEND_TIMEOUT_S = SEND_TIMEOUT_S
        self.stalled.append(s)
        wait_for(lambda: self.rt.hub.subscription_count(SeriesId.parse(FLOOD)) == 1, 10, interval=0.01,
                 what="the stalled client's subscription")
        drops = DROPS.count
        for k in range(FLOOD_BURSTS):  # ~255 KB each
            self._timed_ingest(synthetic(FLOOD_BASE + k * BURST * TF, BURST), FLOOD)
            if DROPS.count > drops:
                break
        wait_for(lambda: DROPS.count > drops, 30, interval=0.02, what="the byte bound to drop a stalled client")
        self._timed_ingest(synthetic(FLOOD_BASE + FLOOD_BURSTS * BURST * TF, 1), FLOOD)

    @rule(since=st.one_of(st.none(), st.integers(0, SLOTS)), batch=st.booleans())
    def slow_read(self, since, batch):
        if len(self.slow) < 3:
            self.slow.append(SlowReader(self.url, self._since(since), batch))

    @rule(n=st.integers(1, 6), read=st.integers(0, 20_000), reset=st.booleans())
    def reconnect_loop(self, n, read, reset):
        """Connect, subscribe to the big series from 0, read a little of the catch-up, hang up; again."""
        for _ in range(n):
            s = stalled_client(self.url, {"type": "subscribe", "series_id": BIG, "since": 0},
                               {"type": "subscribe", "series_id": SID, "since": 0}, rcvbuf=65536)
            read_up_to(s, read)
            (rst_close if reset else socket.socket.close)(s)

    @rule(kind=st.sampled_from(["oversized", "unmasked", "bad_opcode", "garbage"]))
    def broken_frames(self, kind):
        """Frames no client may send: the server closes that socket (and only that one)."""
        s = stalled_client(self.url, {"type": "subscribe", "series_id": SID, "since": 0}, rcvbuf=1 << 20)
        if kind == "oversized":
            s.sendall(frame(json.dumps({"type": "ping", "pad": "x" * 70_000})))
        elif kind == "unmasked":
            s.sendall(bytes([0x81, 2]) + b"{}")
        elif kind == "bad_opcode":
            s.sendall(bytes([0x83, 0x80]) + b"\0\0\0\0")
        else:
            s.sendall(b"GET / HTTP/1.1\r\n\r\n" * 10)
        try:
            assert_closed_soon(s, f"{kind} frames")
        finally:
            s.close()

    @rule()
    def frame_flood(self):
        """More frames than a socket's allowance at once: an error `rate_limited`, then the close (1008)."""
        s = stalled_client(self.url, rcvbuf=1 << 20)
        try:
            s.sendall(b"".join(frame({"type": "ping"}) for _ in range(FRAME_BURST + 100)))
            frames = frames_until_closed(s)
        finally:
            s.close()
        texts = [json.loads(p) for op, p in frames if op == 0x1]
        assert [m.get("code") for m in texts if m["type"] == "error"] == ["rate_limited"]
        assert any(op == 0x8 and int.from_bytes(p[:2], "big") == 1008 for op, p in frames)

    @rule()
    def half_sent_request(self):
        s = socket.create_connection(("127.0.0.1", int(self.url.rsplit(":", 1)[1])), timeout=10)
        s.sendall(b"GET /api/market/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        self.other.append(s)

    # ---- checks ---------------------------------------------------------------------------------------
    @invariant()
    def delivery_guarantee_so_far(self):
        if not hasattr(self, "rt"):
            return
        self._barrier()
        for c in self.normal.values():
            self._check_normal(c)

    def check_final(self):
        self._barrier()
        stored = self.rt.store.read_between(SeriesId.parse(SID), 0, 10**10).times.tolist()
        for c in self.normal.values():
            times = self._check_normal(c)
            if not c.subscribed:
                continue
            since, msgs = list(c.segments())[-1]
            gaps = [e for e in events(msgs, SID) if e[0] == "gap"]
            start = -1 if since is None else since // TF * TF
            for t in stored:
                if t <= start or (since is None and (not times or t < times[0])):
                    continue
                assert t in times or any(g[1] <= t < g[2] for g in gaps), f"stored {t} never delivered"
            if stored and stored[-1] > start:
                assert times and times[-1] == stored[-1], "the newest stored candle never delivered"
        with urllib.request.urlopen(self.url + "/api/market/health", timeout=10) as r:
            assert r.status == 200  # the half-sent requests hold nothing the others need
        for s in self.slow:
            s.check()
            s.close()
        for s in self.other:
            s.close()
        # every hostile socket we closed left the hub, and the stalled ones (still open on our side) were
        # dropped by the server: only the normal clients remain
        wait_for(lambda: self.rt.hub.client_count == len(self.normal), 30, interval=0.05,
                 what=f"the hub to keep only the {len(self.normal)} normal clients "
                      f"({len(self.stalled)} stalled)")
        wait_for(lambda: self.rt.server.connection_count() == len(self.normal), 30, interval=0.05,
                 what="the server to hold only the normal clients' connections (threads, max_connections)")

    def _barrier(self):
        """A forming candle that every normal subscription must send: a subscription handles its events in
        order, so everything published before it has been handled by then."""
        self.barriers += 1
        t = BARRIER + self.barriers * TF
        self.rt.ingest_forming(SID, {"candle_time": t, "open": 1.0, "high": 1.0, "low": 1.0, "close": 1.0,
                                     "volume": 1.0})
        for c in self.normal.values():
            if c.subscribed:
                c.wait(lambda m: m["type"] == "candle_forming" and m["candle"]["candle_time"] == t,
                       c.markers[-1][0], timeout=60)

    def _check_normal(self, c: Normal) -> list[int]:
        times: list[int] = []
        for since, msgs in c.segments():
            if since == "closed":
                assert events(msgs, SID) == [], "candles after an unsubscribe"
                times = []
            else:
                times = check_guarantee(msgs, SID, TF, since)
        return times

    def _normal(self, cid: int) -> Normal:
        if cid not in self.normal:
            self.normal[cid] = Normal(self.url)
        return self.normal[cid]

    @staticmethod
    def _since(slot: int | None) -> int | None:
        """A slot to a `since`: unaligned for some, before the first stored candle for the negative ones."""
        if slot is None:
            return None
        return BASE + slot * TF + (7 if slot % 3 == 0 else 0)


def test_hostile_clients_never_break_the_guarantee_or_hold_ingest_back(monkeypatch):
    import hypothesis.stateful as hs

    from tradecanvas_ext.hub import candle_hub
    from tradecanvas_ext.web import server, ws

    monkeypatch.setattr(server, "WS_SEND_TIMEOUT_S", SEND_TIMEOUT_S)
    candle_hub.log.addHandler(DROPS)
    monkeypatch.setattr(candle_hub, "MAX_PENDING_BYTES", PENDING_BYTES)
    monkeypatch.setitem(ws.SERVER_OPTIONS, "ping_interval", PING_INTERVAL_S)  # copied by each app
    monkeypatch.setattr(ws, "FRAME_BURST", FRAME_BURST)  # read at each connection

    class Final(HostileMachine):
        def teardown(self):
            try:
                if hasattr(self, "rt"):
                    self.check_final()
            finally:
                super().teardown()

    try:
        hs.run_state_machine_as_test(Final, settings=settings(
            max_examples=6, stateful_step_count=12, deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]))
    finally:
        candle_hub.log.removeHandler(DROPS)


def test_oversized_frames_never_hold_a_connection(make_runtime):
    """A frame over the size cap closes its socket, and its connection's thread and place under
    max_connections are given back (simple_websocket alone can leave the route's receive() waiting)."""
    rt = make_runtime(serve=True, enable_market_gap_backfill=False)
    socks = []
    try:  # 20 at once: each close takes the server's close handshake (~2 s), so they overlap
        for _ in range(20):
            socks.append(stalled_client(rt.url, {"type": "subscribe", "series_id": "binance:spot:BTC/USDT:1m"},
                                        rcvbuf=1 << 20))
        wait_for(lambda: rt.hub.client_count == 20, 15, interval=0.05, what="20 clients connected")
        for s in socks:
            s.sendall(frame(json.dumps({"type": "ping", "pad": "x" * 70_000})))
        for s in socks:
            assert_closed_soon(s, "an oversized frame")
    finally:
        for s in socks:
            s.close()
    wait_for(lambda: rt.server.connection_count() == 0, 15, interval=0.05, what="every connection to end")
    assert rt.hub.client_count == 0


def test_a_subscribe_handled_after_the_disconnect_leaves_nothing_behind(make_runtime):
    """A client that sends its subscribes and hangs up at once: its writer fails and disconnects it while
    the route still handles the frames it had read. Those subscriptions must not stay registered (they
    would take every live candle, and their memory, for good) — found by the chaos bench."""
    rt = make_runtime()
    btc = SeriesId.parse("binance:spot:BTC/USDT:1m")
    client = rt.hub.connect(send=lambda text: None)
    rt.hub.disconnect(client)  # what the writer does when a send fails
    client.handle_text(json.dumps({"type": "subscribe", "series_id": str(btc), "since": 0}))
    assert rt.hub.subscription_count(btc) == 0
    assert rt.hub.client_count == 0
