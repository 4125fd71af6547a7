"""CandleHub: one ordered outgoing queue per socket, one serial event queue per subscription.

Guarantee (contract section 4): each subscription processes its events (catch-up pages, live batches,
forming candles) one at a time, in order, with a cursor; anything at or before the cursor is dropped,
a jump past `cursor + tf` is recovered (store, then the backfill service, off the publishing path) and
what stays missing is announced by one `gap`. Locks: `CandleHub._lock` guards the series -> subscriptions
registry and the recovery table; `Subscription.lock` guards one subscription's queue, cursor and flags;
`HubClient._lock` guards its subscription map. A drain never holds a lock while doing I/O.
"""
from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor

from ..domain import Candle, CandleBatch, SeriesId, align_down
from . import messages as m

log = logging.getLogger(__name__)

MAX_SUBSCRIPTIONS = 64
MAX_PENDING_MESSAGES = 20_000  # a client this far behind is dropped, never waited for
CATCHUP_TAIL = 500
CATCHUP_PAGE = 1000
FORMING_MIN_INTERVAL_S = 0.25  # wall-clock throttle of candle_forming per series (not candle time)
RECENT_RECOVERY_S = 5.0  # a finished recovery of the same range is not started again this soon


class HubClient:
    """One WebSocket. Messages go out through one bounded queue and one writer thread, in order."""

    def __init__(self, hub: CandleHub, send, close=None):
        self.hub = hub
        self._send, self._close = send, close
        self._out: queue.Queue = queue.Queue(maxsize=MAX_PENDING_MESSAGES)
        self._lock = threading.Lock()
        self.subs: dict[str, Subscription] = {}
        self.alive = True
        self.sent = 0
        self._writer = threading.Thread(target=self._write_loop, name="tc-ws-writer", daemon=True)
        self._writer.start()

    # ---- outgoing ---------------------------------------------------------------------------------
    def enqueue(self, message: dict) -> None:
        if not self.alive:
            return
        metrics = self.hub.metrics
        metrics.ws_messages.labels(message["type"]).inc()
        if message["type"] == "gap":
            metrics.ws_gaps.labels(message["series_id"], message["reason"]).inc()
        try:
            self._out.put_nowait(json.dumps(message, separators=(",", ":")))
        except queue.Full:
            log.warning("dropping a WebSocket client that is %d messages behind", MAX_PENDING_MESSAGES)
            self.hub.disconnect(self)

    def send_error(self, code: str, message: str, series_id: str | None = None) -> None:
        self.enqueue(m.error(code, message, series_id))

    def _write_loop(self) -> None:
        while True:
            item = self._out.get()
            if item is None:
                return
            try:
                self._send(item)
                self.sent += 1
            except Exception:  # a dead or broken socket: drop this client only
                log.debug("WebSocket send failed; dropping the client", exc_info=True)
                self.hub.disconnect(self)
                return

    def shutdown(self) -> None:
        self.alive = False
        try:
            self._out.put_nowait(None)
        except queue.Full:
            while True:  # a stuck client: empty its queue so the writer can see the stop
                try:
                    self._out.get_nowait()
                except queue.Empty:
                    break
            self._out.put_nowait(None)
        if self._close is not None:
            try:
                self._close()
            except Exception:
                log.debug("closing a WebSocket failed", exc_info=True)

    # ---- incoming ---------------------------------------------------------------------------------
    def handle_text(self, text) -> None:
        """One client frame. Bad input answers with an error and never disturbs other subscriptions."""
        try:
            cmd = m.parse_frame(text)
            if isinstance(cmd, m.Ping):
                self.enqueue({"type": "pong"})
            elif isinstance(cmd, m.Subscribe):
                self.hub.subscribe(self, cmd)
            else:
                self.hub.unsubscribe(self, cmd.series)
        except m.FrameError as exc:
            self.send_error(exc.code, exc.message, exc.series_id)
        except Exception as exc:  # a bug must not kill the socket
            log.exception("WebSocket frame handling failed")
            self.send_error("bad_request", f"could not handle the frame: {type(exc).__name__}")


class Subscription:
    def __init__(self, client: HubClient, series: SeriesId, since: int | None, supports_batch: bool):
        self.client, self.series, self.key = client, series, str(series)
        self.tf = series.tf_seconds
        self.since = since
        self.cursor: int | None = None if since is None else align_down(since, self.tf)
        self.out = m.Outbox(self.key, self.tf, supports_batch)
        self.lock = threading.Lock()
        self.queue: deque = deque()
        self.busy = True  # not drained until the subscribe reply is out
        self.waiting = False
        self.wait_token: object | None = None
        self.active = True
        self.attempted: set[tuple[int, int]] = set()


class CandleHub:
    def __init__(self, store, backfill, settings, registry, metrics, *, recovery_bound_s: float,
                 workers: int = 8, recovery_workers: int = 4):
        self.store, self.backfill, self.settings = store, backfill, settings
        self.registry = registry
        self._lock = threading.Lock()
        self._by_series: dict[str, set[Subscription]] = {}
        self._clients: set[HubClient] = set()
        self._recoveries: dict[tuple, Future] = {}
        self._recent: dict[tuple, float] = {}
        self._last_forming: dict[str, tuple[float, int]] = {}
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="tc-hub")
        self._recovery_pool = ThreadPoolExecutor(recovery_workers, thread_name_prefix="tc-hub-recovery")
        self.recovery_bound_s = recovery_bound_s
        self.recoveries_started = 0
        self.metrics = metrics
        self._closed = False

    # ---- clients ----------------------------------------------------------------------------------
    def connect(self, send, close=None) -> HubClient:
        client = HubClient(self, send, close)
        with self._lock:
            self._clients.add(client)
        return client

    def disconnect(self, client: HubClient) -> None:
        with self._lock:
            if client not in self._clients:
                return
            self._clients.discard(client)
        with client._lock:
            subs, client.subs = list(client.subs.values()), {}
        for sub in subs:
            self._remove(sub)
        client.shutdown()

    @property
    def client_count(self) -> int:
        with self._lock:
            return len(self._clients)

    def close(self) -> None:
        with self._lock:
            clients = list(self._clients)
            self._closed = True
        for c in clients:
            self.disconnect(c)
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._recovery_pool.shutdown(wait=False, cancel_futures=True)

    # ---- subscriptions ----------------------------------------------------------------------------
    def subscribe(self, client: HubClient, cmd: m.Subscribe) -> None:
        key = str(cmd.series)
        if not self.registry.is_active(cmd.series):
            client.send_error("unknown_series", f"series {key} is not configured", key)
            return
        with client._lock:
            old = client.subs.get(key)
            if old is None and len(client.subs) >= MAX_SUBSCRIPTIONS:
                client.send_error("too_many_subscriptions",
                                  f"at most {MAX_SUBSCRIPTIONS} subscriptions per socket", key)
                return
            sub = Subscription(client, cmd.series, cmd.since, cmd.supports_batch)
            sub.queue.append(("catchup",))
            client.subs[key] = sub
        if old is not None:
            self._remove(old)  # a second subscribe replaces the first: its queue is dropped
        with self._lock:
            self._by_series.setdefault(key, set()).add(sub)
        # registered first, read after: a candle stored from here on is in the catch-up read or queued
        client.enqueue(m.subscribed(key, cmd.since, self.store.head_time(cmd.series)))
        with sub.lock:
            sub.busy = False
        self._kick(sub)

    def unsubscribe(self, client: HubClient, series: SeriesId) -> None:
        with client._lock:
            sub = client.subs.pop(str(series), None)
        if sub is not None:
            self._remove(sub)

    def _remove(self, sub: Subscription) -> None:
        with sub.lock:
            sub.active = False
            sub.queue.clear()
        with self._lock:
            subs = self._by_series.get(sub.key)
            if subs is not None:
                subs.discard(sub)

    # ---- publishing -------------------------------------------------------------------------------
    def publish_closed(self, series: SeriesId, candles) -> None:
        """Newly stored closed candles (ingest or repair). Never blocks on a client."""
        b = CandleBatch.coerce(candles).dedupe_sorted()
        if len(b) == 0:
            return
        self._fan_out(str(series), ("candles", b))

    def publish_forming(self, series: SeriesId, candle) -> None:
        c = candle if isinstance(candle, Candle) else Candle.from_dict(candle)
        key = str(series)
        now = time.monotonic()
        with self._lock:
            last = self._last_forming.get(key)
            if last is not None and last[1] == c.candle_time and now - last[0] < FORMING_MIN_INTERVAL_S:
                return
            self._last_forming[key] = (now, c.candle_time)
        self._fan_out(key, ("forming", c))

    def _fan_out(self, key: str, event: tuple) -> None:
        with self._lock:
            subs = list(self._by_series.get(key, ()))
        for sub in subs:
            with sub.lock:
                if not sub.active:
                    continue
                if event[0] == "forming":  # only the newest forming candle matters
                    for i, ev in enumerate(sub.queue):
                        if ev[0] == "forming":
                            del sub.queue[i]
                            break
                sub.queue.append(event)
            self._kick(sub)

    # ---- the per-subscription serial drain --------------------------------------------------------
    def _kick(self, sub: Subscription) -> None:
        with sub.lock:
            if sub.busy or sub.waiting or not sub.active or not sub.queue or self._closed:
                return
            sub.busy = True
        try:
            self._pool.submit(self._drain, sub)
        except RuntimeError:  # the hub is closing
            pass

    def _drain(self, sub: Subscription) -> None:
        while True:
            with sub.lock:
                if not sub.active or sub.waiting or not sub.queue:
                    sub.busy = False
                    return
                event = sub.queue.popleft()
            try:
                self._handle(sub, event)
            except Exception:
                log.exception("%s: hub failed to process an event", sub.key)
            self._emit(sub)

    def _emit(self, sub: Subscription) -> None:
        msgs = sub.out.take()
        if not msgs:
            return
        with sub.lock:  # an unsubscribed or replaced subscription sends nothing more
            if not sub.active:
                return
            for msg in msgs:
                sub.client.enqueue(msg)

    def _handle(self, sub: Subscription, event: tuple) -> None:
        kind = event[0]
        if kind == "catchup":
            if sub.since is None and sub.cursor is None:
                page = self.store.read_tail(sub.series, CATCHUP_TAIL)
            else:
                page = self.store.read_after(sub.series, sub.cursor, CATCHUP_PAGE)
                if len(page) == CATCHUP_PAGE:
                    with sub.lock:
                        sub.queue.appendleft(("catchup",))
            self._deliver(sub, page)
        elif kind == "candles":
            self._deliver(sub, event[1])
        elif kind == "forming":
            c = event[1]
            if sub.cursor is None or c.candle_time > sub.cursor:
                sub.out.add(m.forming(sub.key, c.to_dict()))

    def _deliver(self, sub: Subscription, b: CandleBatch) -> None:
        """Send `b` after the cursor in order; at a jump, recover then announce what is still missing."""
        tf = sub.tf
        if sub.cursor is not None:
            b = b.take(b.times > sub.cursor)
        times = b.times
        i = 0
        while i < len(times):
            t = int(times[i])
            if sub.cursor is not None and t > sub.cursor + tf:
                a, last = sub.cursor + tf, t - tf
                if not self._fill_from_store_or_recover(sub, a, last):
                    with sub.lock:  # paused for a recovery: the rest of this batch goes first when it ends
                        sub.queue.appendleft(("candles", b.take(slice(i, None))))
                    return
                self._send_range_with_gaps(sub, a, last)
                if sub.cursor is not None and t <= sub.cursor:
                    i += 1
                    continue
                if t > sub.cursor + tf:
                    sub.out.add(m.gap(sub.key, sub.cursor + tf, t, tf, self._reason(sub, sub.cursor + tf, t - tf)))
            j = i + 1  # a run of consecutive candles goes out as is
            while j < len(times) and int(times[j]) == int(times[j - 1]) + tf:
                j += 1
            sub.out.candles(b.take(slice(i, j)))
            sub.cursor = int(times[j - 1])
            i = j

    def _fill_from_store_or_recover(self, sub: Subscription, a: int, last: int) -> bool:
        """True when [a, last] can be sent now (from the store, or recovery already tried / not allowed);
        False when a recovery was started and the subscription now waits for it."""
        if (a, last) in sub.attempted or not self.settings.enable_market_gap_backfill:
            return True
        holes = self.store.holes(sub.series, a, last)
        if not holes or all(h.void for h in holes):
            return True  # the store has it all (or the exchange confirmed there is nothing)
        key = (sub.key, a, last)
        now = time.monotonic()
        with self._lock:
            done_at = self._recent.get(key)
            if done_at is not None and now - done_at < RECENT_RECOVERY_S:
                sub.attempted.add((a, last))
                return True
            fut = self._recoveries.get(key)
            if fut is None:
                fut = self._recovery_pool.submit(self._recover, sub.series, a, last + sub.tf)
                self._recoveries[key] = fut
                self.recoveries_started += 1
        sub.attempted.add((a, last))
        token = object()
        with sub.lock:
            sub.waiting, sub.wait_token = True, token

        def resume(_f=None):
            with sub.lock:
                if sub.wait_token is not token:
                    return
                sub.waiting, sub.wait_token = False, None
            self._kick(sub)

        fut.add_done_callback(lambda f, key=key: self._recovery_done(key) or resume())
        timer = threading.Timer(self.recovery_bound_s, resume)  # never wait past the time bound
        timer.daemon = True
        timer.start()
        return False

    def _recover(self, series: SeriesId, expected_next: int, actual: int):
        try:
            return self.backfill.backfill_gap(series, expected_next, actual)
        except Exception:
            log.exception("%s: gap recovery [%d, %d) failed", series, expected_next, actual)
            return None

    def _recovery_done(self, key: tuple) -> None:
        with self._lock:
            self._recoveries.pop(key, None)
            self._recent[key] = time.monotonic()
            if len(self._recent) > 10_000:
                cutoff = time.monotonic() - RECENT_RECOVERY_S
                self._recent = {k: v for k, v in self._recent.items() if v >= cutoff}

    def _send_range_with_gaps(self, sub: Subscription, a: int, last: int) -> None:
        """What the store now has in [a, last], in order, each remaining hole announced before its candle."""
        fill = self.store.read_between(sub.series, a, last)
        tf = sub.tf
        for k, t in enumerate(fill.times.tolist()):
            if t > sub.cursor + tf:
                sub.out.add(m.gap(sub.key, sub.cursor + tf, t, tf, self._reason(sub, sub.cursor + tf, t - tf)))
            sub.out.candles(fill.take(slice(k, k + 1)))
            sub.cursor = t

    def _reason(self, sub: Subscription, start: int, end: int) -> str:
        holes = self.store.holes(sub.series, start, end)
        if holes and all(h.void for h in holes):
            return "void"
        if not self.settings.enable_market_gap_backfill:
            return "backfill_disabled"
        return "unrecovered"
