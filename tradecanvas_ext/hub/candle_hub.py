"""CandleHub: one ordered outgoing queue per socket, one serial event queue per subscription.

Guarantee (contract section 4): each subscription processes its events (catch-up pages, live batches,
forming candles) one at a time, in order, with a cursor; anything at or before the cursor is dropped,
a jump past `cursor + tf` is recovered (store, then the backfill service, off the publishing path) and
what stays missing is announced by one `gap`. Flow control: a client's unsent data is bounded in bytes
(MAX_PENDING_BYTES, then it is dropped), and a catch-up page is read only once the writer has sent the
previous one, so a client that keeps reading gets any catch-up; live candles never wait for a client.
Catch-up pages, all clients together, use at most CATCHUP_CPU_SHARE of a core after a burst (budget.py):
a page over budget parks its subscription, and one waker thread resumes them in turn. What fills a jump
(after its recovery) is read the same way, a page at a time under the same budget, when it is longer than
a page. The waker also ends recovery waits at their time bound (no thread per waiting subscription).

Recoveries share one budget per series: they run one at a time, in order; a jump whose range one of them
covers waits for it, one that overlaps or touches a queued one widens it; one for which no subscription
waits any more when its turn comes (gone, or past its time bound) does nothing. All series' recoveries
together take at most RECOVERY_TIME_SHARE of the wall clock after a burst (budget.py, in seconds of wall
time): past it a recovery waits its turn, and its subscriptions announce the gap at their time bound.
Both budgets also wait while the bot's loop holds client work back (`priority`, priority.py): catch-up
pages, long fills and recoveries start after the loop's analysis, never during it.
The backfill service fetches only what the store still misses and owns the cooldown (how soon the same
range may be fetched again).

Locks, and their order (a lock is only ever taken with the ones before it released, except as noted):
- `CandleHub._lock` guards `_clients`, `_by_series`, `_recoveries` (and each `_Repair` in it),
  `_last_forming`. Taken alone; inside it only the recovery pool's non-blocking `submit`.
- `Subscription._lock` (subscription.py) guards one subscription's queue and state. Inside it only
  `HubClient.offer` (serialise, a metrics counter, then `HubClient._out_cv` for the append): nothing that
  takes `CandleHub._lock` or another subscription's lock. A client that overflows is dropped after it is
  released (`_drain`), never from inside it.
- `HubClient._out_cv` guards the outgoing queue, its byte count and `_alive`; it is the innermost lock
  (after a `Subscription._lock` or alone). The writer releases it before each send and before it calls a
  page's "taken" callback (which takes a `Subscription._lock`). A client's bell (an Event) is set after
  `_out_cv` is released.
- `HubClient._lock` guards the client's subscription map. Taken alone.
- `CandleHub._paused_cv` guards `_paused` (catch-ups waiting for the budget) and `_deadlines` (the time
  bounds of recovery waits). Taken alone; inside it only `CatchUpBudget._lock` (budget.py), the innermost.
No lock is held during I/O (store reads, sends, closes, log lines) or while calling the backfill service.
Publishing (`publish_closed`, the bot loop's `ingest_closed`) takes only `CandleHub._lock` and
`Subscription._lock`, each held for a bounded, client-independent time: it never waits on a client. An
idle subscription's live event that needs no store read (the usual case) is handled on the publisher's
thread, straight into the client's queue; anything else goes to the worker pool.
"""
from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from typing import TYPE_CHECKING

import numpy as np

from ..domain import Candle, CandleBatch, SeriesId
from . import messages as m
from .budget import CatchUpBudget
from .ports import ActiveSeries, CandleReader, GapBackfill
from .priority import LoopPriority
from .subscription import Candles, CatchUp, Event, Forming, Subscription, SubState

if TYPE_CHECKING:
    from ..metrics import Metrics

log = logging.getLogger(__name__)

MAX_SUBSCRIPTIONS = 64
MAX_PENDING_BYTES = 16 * 1024 * 1024  # unsent JSON past this: the client is dropped, never waited for
CATCHUP_TAIL = 500
CATCHUP_PAGE = 1000
FORMING_MIN_INTERVAL_S = 0.25  # wall-clock throttle of candle_forming per series (not candle time)
# Catch-up pages, hub-wide, may use this share of one core (after a burst): the bot's loop shares the
# interpreter with the hub, and a client can subscribe again and again. A page's cost is the CPU its drain
# spent, times COST_FACTOR for what the writer then spends framing and sending it.
CATCHUP_CPU_SHARE = 0.05
CATCHUP_BURST_S = 1.0
CATCHUP_COST_FACTOR = 2.0
# Client-triggered recoveries, all series together, may take this share of the wall clock (after a burst):
# inside the bot they fetch through the bot's own exchange (its request lock, its rate limit), so a client
# that subscribes from 0 again and again would otherwise keep the bot's exchange busy walking history back.
RECOVERY_TIME_SHARE = 0.1
RECOVERY_BURST_S = 10.0


class HubClient:
    """One WebSocket. Messages go out through one byte-bounded queue, in order, written by one thread:
    without a `bell`, a writer thread of its own; with one (an Event that the socket's reader sets when a
    frame arrives), the socket's own thread, which calls `write_queued()` whenever the bell rings (every
    queued message rings it too). `send(text)` may block (the socket's send timeout bounds it) and raises
    when the socket is broken; `close()` must not block: it cuts the socket, so that a send blocked on it
    returns."""

    def __init__(self, hub: CandleHub, metrics: Metrics, send: Callable[[str], None],
                 close: Callable[[], None] | None = None, bell: threading.Event | None = None):
        self.hub = hub
        self._metrics = metrics
        self._send, self._close = send, close
        self._bell = bell
        self._out_cv = threading.Condition(threading.Lock())
        self._out: deque[str | Callable[[], None]] = deque()  # texts, and "taken" callbacks between them
        self._out_bytes = 0
        self._alive = True  # only ever set to False (overflow or shutdown)
        self._lock = threading.Lock()
        self._subs: dict[SeriesId, Subscription] = {}
        if bell is None:
            threading.Thread(target=self._write_loop, name="tc-ws-writer", daemon=True).start()

    # ---- outgoing ---------------------------------------------------------------------------------
    def offer(self, message: m.Text) -> bool:
        """Queue one serialised message without blocking or calling out (safe under a subscription's
        lock). Returns True when the unsent data would pass MAX_PENDING_BYTES: the caller must then drop
        this client (`CandleHub.drop`), holding no lock."""
        if not self._alive:
            return False
        self._metrics.ws_messages.labels(message.type).inc()
        if message.gap is not None:
            self._metrics.ws_gaps.labels(*message.gap).inc()
        text = message.text  # ASCII: its length is its size in bytes
        with self._out_cv:
            if not self._alive:
                return False
            if self._out_bytes + len(text) > MAX_PENDING_BYTES:
                self._stop_writer()
                return True
            self._out.append(text)
            self._out_bytes += len(text)
            self._out_cv.notify()
        if self._bell is not None:
            self._bell.set()
        return False

    def when_sent(self, callback: Callable[[], None]) -> None:
        """Call `callback` (from the writer, holding no lock) once everything queued so far is sent.
        Never called when the client is dropped first."""
        with self._out_cv:
            if self._alive:
                self._out.append(callback)
                self._out_cv.notify()
        if self._bell is not None:
            self._bell.set()

    def send(self, message: dict) -> None:
        """`offer`, dropping the client when it overflows. Never call it while holding a lock."""
        if self.offer(m.encode(message)):
            self.hub.drop(self)

    def send_error(self, code: str, message: str, series_id: str | None = None) -> None:
        self.send(m.error(code, message, series_id))

    def _write_loop(self) -> None:
        while (item := self._next(wait=True)) is not None:
            if not self._write(item):
                return

    def write_queued(self) -> bool:
        """Send what is queued, in the caller's thread (a client with a bell); False once the client is
        dropped or its socket failed: the caller stops serving it."""
        while (item := self._next(wait=False)) is not None:
            if not self._write(item):
                return False
        return self._alive

    def _next(self, wait: bool) -> str | Callable[[], None] | None:
        """The next queued item; None when the client is dropped, or (not `wait`) nothing is queued."""
        with self._out_cv:
            while wait and self._alive and not self._out:
                self._out_cv.wait()
            if not self._alive or not self._out:
                return None
            item = self._out.popleft()
            if isinstance(item, str):
                self._out_bytes -= len(item)
            return item

    def _write(self, item: str | Callable[[], None]) -> bool:
        if not isinstance(item, str):
            item()  # a catch-up page was taken: the next one may be read
            return True
        try:
            self._send(item)
        except Exception:  # a dead, broken or stalled (send timeout) socket: drop this client only
            log.debug("WebSocket send failed; dropping the client", exc_info=True)
            self.hub.disconnect(self)
            return False
        return True

    def _stop_writer(self) -> None:  # with _out_cv held
        self._alive = False
        self._out.clear()
        self._out_bytes = 0
        self._out_cv.notify()

    def shutdown(self) -> None:
        """Stop the writer (what is unsent is dropped) and cut the socket."""
        with self._out_cv:
            self._stop_writer()
        if self._bell is not None:
            self._bell.set()  # the socket's thread sees it is dropped
        if self._close is not None:
            try:
                self._close()
            except Exception:
                log.debug("closing a WebSocket failed", exc_info=True)

    # ---- its subscriptions ------------------------------------------------------------------------
    def attach(self, sub: Subscription) -> tuple[bool, Subscription | None]:
        """Add `sub`, replacing one on the same series: (True, the replaced one or None), or (False, None)
        when the socket already has MAX_SUBSCRIPTIONS others."""
        with self._lock:
            old = self._subs.get(sub.series)
            if old is None and len(self._subs) >= MAX_SUBSCRIPTIONS:
                return False, None
            self._subs[sub.series] = sub
        return True, old

    def detach(self, series: SeriesId) -> Subscription | None:
        with self._lock:
            return self._subs.pop(series, None)

    def detach_all(self) -> list[Subscription]:
        with self._lock:
            subs, self._subs = list(self._subs.values()), {}
        return subs

    # ---- incoming ---------------------------------------------------------------------------------
    def handle_text(self, text) -> None:
        """One client frame. Bad input answers with an error and never disturbs other subscriptions.
        Frames of one socket are handled one at a time, in order: a pong follows all earlier frames' effects."""
        try:
            cmd = m.parse_frame(text)
            if isinstance(cmd, m.Ping):
                self.send({"type": "pong"})
            elif isinstance(cmd, m.Subscribe):
                self.hub.subscribe(self, cmd)
            else:
                self.hub.unsubscribe(self, cmd.series)
        except m.FrameError as exc:
            self.send_error(exc.code, exc.message, exc.series_id)
        except Exception as exc:  # a bug must not kill the socket
            log.exception("WebSocket frame handling failed")
            self.send_error("bad_request", f"could not handle the frame: {type(exc).__name__}")


class _Repair:
    """One recovery of [a, last] of a series and the subscriptions waiting for it (under the hub's lock)."""

    __slots__ = ("a", "last", "future", "waiters", "started")

    def __init__(self, a: int, last: int, sub: Subscription):
        self.a, self.last = a, last
        self.future: Future = Future()
        self.waiters: set[Subscription] = {sub}
        self.started = False


class _Pause:
    """What `_handle` returns when the catch-up budget says the next page must wait."""

    __slots__ = ()


_PAUSE = _Pause()


class CandleHub:
    """`recovery_bound_s`: the longest a subscription waits for one recovery before it announces the gap
    and goes on (the runtime passes the backfill service's time bound plus a margin)."""

    def __init__(self, store: CandleReader, backfill: GapBackfill, registry: ActiveSeries, *,
                 gap_backfill: bool, metrics: Metrics, recovery_bound_s: float,
                 workers: int = 8, recovery_workers: int = 4, priority: LoopPriority | None = None):
        self._store, self._backfill, self._registry = store, backfill, registry
        self.priority = LoopPriority() if priority is None else priority  # the bot's loop goes first
        self._gap_backfill = gap_backfill
        self._metrics = metrics
        self.recovery_bound_s = recovery_bound_s
        self._lock = threading.Lock()
        self._by_series: dict[SeriesId, set[Subscription]] = {}
        self._clients: set[HubClient] = set()
        self._recoveries: dict[SeriesId, deque[_Repair]] = {}  # per series: the running one first
        self._last_forming: dict[SeriesId, tuple[float, int]] = {}
        self._budget = CatchUpBudget(CATCHUP_CPU_SHARE, CATCHUP_BURST_S, priority=self.priority)
        self._paused_cv = threading.Condition(threading.Lock())
        self._paused: deque[tuple[Subscription, object]] = deque()  # catch-ups waiting for the budget
        self._deadlines: list[tuple[float, int, Subscription, object]] = []  # heap: recovery waits' bounds
        self._seq = itertools.count()  # ties in the heap never compare subscriptions
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="tc-hub")
        self._recovery_pool = ThreadPoolExecutor(recovery_workers, thread_name_prefix="tc-hub-recovery")
        self._recovery_budget = CatchUpBudget(RECOVERY_TIME_SHARE, RECOVERY_BURST_S, priority=self.priority)
        self._closing = threading.Event()
        self.recoveries_started = 0
        self.recoveries_run = 0  # those that called the backfill service (someone still waited)
        self.catchups_paused = 0  # catch-up pages that waited for the budget
        self._closed = False
        self._waker = threading.Thread(target=self._wake_paused, name="tc-hub-waker", daemon=True)
        self._waker.start()

    # ---- clients ----------------------------------------------------------------------------------
    def connect(self, send, close=None, bell: threading.Event | None = None) -> HubClient:
        """A new client; with `bell`, its socket's thread writes (see HubClient)."""
        client = HubClient(self, self._metrics, send, close, bell)
        with self._lock:
            self._clients.add(client)
        return client

    def drop(self, client: HubClient) -> None:
        """A client whose unsent data passed MAX_PENDING_BYTES: cut it (it resumes with `since`)."""
        log.warning("dropping a WebSocket client with over %d bytes unsent", MAX_PENDING_BYTES)
        self.disconnect(client)

    def disconnect(self, client: HubClient) -> None:
        with self._lock:
            if client not in self._clients:
                return
            self._clients.discard(client)
        for sub in client.detach_all():
            self._remove(sub)
        client.shutdown()

    @property
    def client_count(self) -> int:
        with self._lock:
            return len(self._clients)

    def subscription_count(self, series: SeriesId) -> int:
        with self._lock:
            return len(self._by_series.get(series, ()))

    def close(self) -> None:
        with self._lock:
            clients = list(self._clients)
            self._closed = True
        self._closing.set()
        with self._paused_cv:
            self._paused.clear()
            self._deadlines.clear()
            self._paused_cv.notify()
        for c in clients:
            self.disconnect(c)
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._recovery_pool.shutdown(wait=False, cancel_futures=True)

    # ---- subscriptions ----------------------------------------------------------------------------
    def subscribe(self, client: HubClient, cmd: m.Subscribe) -> None:
        key = str(cmd.series)
        if not self._registry.is_active(cmd.series):
            client.send_error("unknown_series", f"series {key} is not configured", key)
            return
        sub = Subscription(client, cmd.series, cmd.since, cmd.supports_batch)
        accepted, old = client.attach(sub)
        if not accepted:
            client.send_error("too_many_subscriptions", f"at most {MAX_SUBSCRIPTIONS} subscriptions per socket",
                              key)
            return
        if old is not None:
            self._remove(old)  # a second subscribe replaces the first: its queue is dropped
        with self._lock:
            connected = client in self._clients
            if connected:
                self._by_series.setdefault(sub.series, set()).add(sub)
        if not connected:  # its writer failed while frames were still being handled: disconnect is done
            client.detach(sub.series)
            sub.close()
            return
        # registered first, read after: a candle stored from here on is in the catch-up read or queued
        client.send(m.subscribed(key, cmd.since, self._store.head_time(cmd.series)))
        self._start_drain(sub)  # the subscription was created DRAINING: its catch-up goes to the pool

    def unsubscribe(self, client: HubClient, series: SeriesId) -> None:
        sub = client.detach(series)
        if sub is not None:
            self._remove(sub)

    def _remove(self, sub: Subscription) -> None:
        sub.close()
        with self._lock:
            subs = self._by_series.get(sub.series)
            if subs is not None:
                subs.discard(sub)

    # ---- publishing -------------------------------------------------------------------------------
    def publish_closed(self, series: SeriesId, candles) -> None:
        """Newly stored closed candles (ingest or repair). Never blocks on a client."""
        b = CandleBatch.coerce(candles).dedupe_sorted()
        if len(b) == 0:
            return
        self._fan_out(series, Candles(m.CandleTexts(str(series), b)))  # serialised once for all

    def publish_forming(self, series: SeriesId, candle) -> None:
        c = candle if isinstance(candle, Candle) else Candle.from_dict(candle)
        now = time.monotonic()
        with self._lock:
            last = self._last_forming.get(series)
            if last is not None and last[1] == c.candle_time and now - last[0] < FORMING_MIN_INTERVAL_S:
                return
            self._last_forming[series] = (now, c.candle_time)
        self._fan_out(series, Forming(c))

    def _fan_out(self, series: SeriesId, event: Event) -> None:
        with self._lock:
            subs = list(self._by_series.get(series, ()))
        for sub in subs:
            if sub.push(event):  # it was idle: the publisher hands the event over itself, no pool hop
                self._drain(sub, inline=True)

    # ---- the per-subscription serial drain --------------------------------------------------------
    def _start_drain(self, sub: Subscription) -> None:
        """`sub` is DRAINING and owned by the caller: hand it to a pool thread."""
        if self._closed:
            return
        try:
            self._pool.submit(self._drain, sub)
        except RuntimeError:  # the hub is closing
            pass

    def _drain(self, sub: Subscription, inline: bool = False) -> None:
        """Process `sub`'s events in order (the caller owns its DRAINING state). `inline` (the publisher's
        thread): only while each event is one that needs no store read (`_needs_no_io`); the first
        that does goes back to the front of the queue and the drain moves to the pool."""
        while (event := sub.next_event()) is not None:
            if inline and not self._needs_no_io(sub, event):
                sub.push_front(event)
                self._start_drain(sub)
                return
            page = not inline and isinstance(event, CatchUp | Candles)  # store pages and fills: budgeted
            cpu = time.thread_time() if page else 0.0
            try:
                recovery = self._handle(sub, event)
            except Exception:
                log.exception("%s: hub failed to process an event", sub.key)
                recovery = None
            page_sent = None
            if recovery is None and sub.next_page_queued:  # read the next page once this one is sent
                token = sub.park(SubState.WAITING_CLIENT)
                page_sent = partial(self._resume, sub, token)
            sub.next_page_queued = False
            messages = sub.out.take()
            if page and not isinstance(recovery, _Pause):  # before the hand-over: the next page may start
                self._budget.charge((time.thread_time() - cpu) * CATCHUP_COST_FACTOR)  # as soon as it is sent
            overflowed = sub.hand_over(messages, page_sent)
            if overflowed:
                self.drop(sub.client)  # overflowed: dropped here, with no lock held
                return
            if isinstance(recovery, _Pause):
                self._pause(sub)
                return
            if recovery is not None:
                self._wait_for(sub, recovery)
                return
            if page_sent is not None:
                return

    @staticmethod
    def _needs_no_io(sub: Subscription, event: Event) -> bool:
        """A forming candle, or closed candles that go on from the cursor without a jump (the live
        case): handling them reads nothing, so the publisher may do it without waiting on anything."""
        match event:
            case Forming():
                return True
            case Candles(texts):
                if sub.cursor is None:
                    return True
                times = texts.times
                i = int(np.searchsorted(times, sub.cursor, side="right"))
                n = len(times)
                return i == n or (int(times[i]) == sub.cursor + sub.tf
                                  and int(times[-1]) - int(times[i]) == (n - 1 - i) * sub.tf)
        return False

    def _handle(self, sub: Subscription, event: Event) -> Future | _Pause | None:
        """Process one event into `sub.out`; returns the recovery to wait for, if a jump started one, or
        the pause the catch-up budget asks for."""
        match event:
            case CatchUp():
                return self._catch_up(sub)
            case Candles(texts):
                return self._deliver(sub, texts)
            case Forming(candle):
                if sub.cursor is None or candle.candle_time > sub.cursor:
                    sub.out.add(m.forming(sub.key, candle.to_dict()))
                return None
        raise TypeError(f"not a hub event: {event!r}")

    def _catch_up(self, sub: Subscription) -> Future | _Pause | None:
        if self._budget.wait_s() > 0:
            self.catchups_paused += 1
            sub.push_front(CatchUp())  # read once the budget allows; live events queue behind it
            return _PAUSE
        if sub.since is None and sub.cursor is None:
            page = self._store.read_tail(sub.series, CATCHUP_TAIL)
        else:
            page = self._store.read_after(sub.series, sub.cursor, CATCHUP_PAGE)
            if len(page) == CATCHUP_PAGE:
                sub.push_front(CatchUp())
                sub.next_page_queued = True
        return self._deliver(sub, m.CandleTexts(sub.key, page))

    def _wait_for(self, sub: Subscription, recovery: Future) -> None:
        """Pause `sub` until the recovery ends, or `recovery_bound_s` passes, whichever comes first (the
        waker keeps the deadline: no thread per wait, however many clients wait)."""
        token = sub.park()
        with self._paused_cv:
            heapq.heappush(self._deadlines, (time.monotonic() + self.recovery_bound_s, next(self._seq), sub, token))
            self._paused_cv.notify()
        recovery.add_done_callback(lambda _f: self._resume(sub, token))  # at once when it already ended

    def _pause(self, sub: Subscription) -> None:
        """Park `sub` until the catch-up budget lets the waker resume it (first paused, first resumed)."""
        token = sub.park()
        with self._paused_cv:
            self._paused.append((sub, token))
            self._paused_cv.notify()

    def _wake_paused(self) -> None:
        """The waker thread: resumes paused catch-ups one at a time, each once the budget has credit, and
        recovery waits whose time bound has passed (a wait that already ended ignores it)."""
        while True:
            due: list[tuple[Subscription, object]] = []
            with self._paused_cv:
                while not due:
                    if self._closed:
                        return
                    now = time.monotonic()
                    while self._deadlines and self._deadlines[0][0] <= now:
                        _, _, sub, token = heapq.heappop(self._deadlines)
                        due.append((sub, token))
                    if due:
                        break
                    timeout = self._deadlines[0][0] - now if self._deadlines else None
                    if self._paused:
                        wait = self._budget.wait_s()
                        if wait <= 0:
                            due.append(self._paused.popleft())
                            break
                        timeout = wait if timeout is None else min(timeout, wait)
                    self._paused_cv.wait(timeout)
            for sub, token in due:
                self._resume(sub, token)

    def _resume(self, sub: Subscription, token: object) -> None:
        if sub.resume(token):
            self._start_drain(sub)

    def _deliver(self, sub: Subscription, texts: m.CandleTexts) -> Future | _Pause | None:
        """Send the candles after the cursor in order; at a jump, recover then announce what is still
        missing. Returns the recovery when one started: the batch is queued first again, to go on after
        the cursor when it ends. What fills a long jump goes a page at a time, like a catch-up: the batch
        is queued first again after each page (and waits for the budget, or for the page to be sent)."""
        tf = sub.tf
        times = texts.times
        i = 0 if sub.cursor is None else int(np.searchsorted(times, sub.cursor, side="right"))
        while i < len(times):
            t = int(times[i])
            if sub.cursor is not None and t > sub.cursor + tf:
                a, last = sub.cursor + tf, t - tf
                recovery = self._start_recovery(sub, a, last)
                if recovery is not None:
                    sub.push_front(Candles(texts))
                    return recovery
                if (last - a) // tf >= CATCHUP_PAGE and self._budget.wait_s() > 0:  # a catch-up in disguise
                    self.catchups_paused += 1
                    sub.push_front(Candles(texts))
                    return _PAUSE
                if self._send_range_with_gaps(sub, a, last):  # a page of it: the rest once it is sent
                    sub.push_front(Candles(texts))
                    sub.next_page_queued = True
                    return None
                if sub.cursor is not None and t <= sub.cursor:
                    i += 1
                    continue
                if t > sub.cursor + tf:
                    self._announce_gap(sub, sub.cursor + tf, t)
            j = i + 1  # a run of consecutive candles goes out as is
            while j < len(times) and int(times[j]) == int(times[j - 1]) + tf:
                j += 1
            sub.out.candles(texts, i, j)
            sub.cursor = int(times[j - 1])
            i = j
        return None

    def _start_recovery(self, sub: Subscription, a: int, last: int) -> Future | None:
        """None when [a, last] can be sent now (the store has it, or a recovery was tried or is not
        allowed); else the recovery to wait for: one that covers the range, a queued one widened to
        take it, or a new one queued behind the series' others."""
        if (not self._gap_backfill or any(x <= a and last <= y for x, y in sub.attempted)
                or not self._missing(sub.series, a, last)):
            return None  # tried already (a later page of the same jump is part of it), or nothing to try
        sub.attempted.add((a, last))
        with self._lock:
            return self._join_repair(sub, a, last)

    def _join_repair(self, sub: Subscription, a: int, last: int) -> Future | None:  # with _lock held
        line = self._recoveries.setdefault(sub.series, deque())
        for r in line:
            if r.a <= a and last <= r.last:  # running or queued, it fetches this range too
                r.waiters.add(sub)
                return r.future
        for r in line:  # a queued one that overlaps or touches it: one fetch for both
            if not r.started and a <= r.last + sub.tf and r.a <= last + sub.tf:
                r.a, r.last = min(r.a, a), max(r.last, last)
                r.waiters.add(sub)
                return r.future
        repair = _Repair(a, last, sub)
        line.append(repair)
        if len(line) == 1:  # no runner for this series: start one
            try:
                self._recovery_pool.submit(self._run_repairs, sub.series)
            except RuntimeError:  # the hub is closing
                line.pop()
                del self._recoveries[sub.series]
                return None
        self.recoveries_started += 1
        return repair.future

    def _run_repairs(self, series: SeriesId) -> None:
        """The series' recoveries, one at a time in order, each once the recovery budget has credit. Each
        does nothing when, at its turn, no subscription waits for it any more (gone, or past its time
        bound); the service fetches only what the store still misses."""
        while True:
            while (wait := self._recovery_budget.wait_s()) > 0 and not self._closing.wait(wait):
                pass  # meanwhile a queued recovery may still widen: one fetch for more subscriptions
            with self._lock:
                repair = self._recoveries[series][0]
                repair.started = True
                waiters = list(repair.waiters)
            t0 = time.monotonic()
            ran = not self._closing.is_set() and any(s.waits_for_recovery for s in waiters)
            try:
                if ran:
                    self._backfill.backfill_gap(series, repair.a, repair.last + series.tf_seconds)
            except Exception:
                log.exception("%s: gap recovery [%d, %d] failed", series, repair.a, repair.last)
            finally:
                self._recovery_budget.charge(time.monotonic() - t0)
                with self._lock:
                    self.recoveries_run += ran
                    line = self._recoveries[series]
                    line.popleft()
                    if not line:
                        del self._recoveries[series]
                repair.future.set_result(None)
            if not line:
                return

    def recovery_queue(self, series: SeriesId) -> list[tuple[int, int, int]]:
        """The series' recoveries in order, running one first: (first time, last time, waiters)."""
        with self._lock:
            return [(r.a, r.last, len(r.waiters)) for r in self._recoveries.get(series, ())]

    def _missing(self, series: SeriesId, a: int, last: int) -> bool:
        """The store lacks a candle of [a, last] that is neither a confirmed void nor unavailable."""
        return any(not h.settled for h in self._store.holes(series, a, last))

    def _send_range_with_gaps(self, sub: Subscription, a: int, last: int) -> bool:
        """What the store now has in [a, last], in order, each remaining hole announced before its candle:
        one page of it (CATCHUP_PAGE candles). True when the page was full and more of the range may
        follow: the caller sends the rest later, like a catch-up (flow control, budget)."""
        fill = m.CandleTexts(sub.key, self._store.read_between(sub.series, a, last, limit=CATCHUP_PAGE))
        tf = sub.tf
        for k, t in enumerate(fill.times.tolist()):
            if t > sub.cursor + tf:
                self._announce_gap(sub, sub.cursor + tf, t)
            sub.out.candles(fill, k, k + 1)
            sub.cursor = t
        return len(fill) == CATCHUP_PAGE and sub.cursor < last

    def _announce_gap(self, sub: Subscription, start: int, actual: int) -> None:
        """The hole [start, actual) before the candle at `actual`: one `gap` per kind (void, unavailable,
        still missing), in time order (contract section 4)."""
        tf = sub.tf
        runs: list[list] = []  # [first, last, reason]
        for h in self._store.holes(sub.series, start, actual - tf):
            reason = self._reason(h)
            if runs and runs[-1][2] == reason and runs[-1][1] + tf == h.start:
                runs[-1][1] = h.end
            else:
                runs.append([h.start, h.end, reason])
        if not runs or runs[0][0] != start or runs[-1][1] != actual - tf:  # the store moved meanwhile
            runs = [[start, actual - tf, self._reason(None)]]
        for k, (first, last, reason) in enumerate(runs):
            nxt = actual if k + 1 == len(runs) else last + tf
            sub.out.add(m.gap(sub.key, first, nxt, tf, reason))

    def _reason(self, hole) -> str:
        if hole is not None and hole.void:
            return "void"
        if hole is not None and hole.unavailable:
            return "unavailable"
        if not self._gap_backfill:
            return "backfill_disabled"
        return "unrecovered"
