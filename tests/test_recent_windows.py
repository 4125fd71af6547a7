"""The recent windows in memory always agree with the store, on SQLite and PostgreSQL: the ordering rule
(unit), random writes, repairs and voids (hypothesis, against a window-less store on the same database),
a failed write, threads, other processes' writes (watcher and LISTEN), a writer killed mid-transaction."""
from __future__ import annotations

import itertools
import os
import signal
import threading

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import wait_for
from tests.test_coverage import candle, start_writer
from tradecanvas_ext.domain import CandleBatch, SeriesId
from tradecanvas_ext.store import open_store
from tradecanvas_ext.store.recent_windows import WHOLE, RecentWindows, merge_into

TF = 60
BIG = 10**12
_counter = itertools.count()


def fresh_series() -> SeriesId:
    return SeriesId.parse(f"binance:spot:W{next(_counter)}/USDT:1m")


def batch(times, base: float = 100.0) -> CandleBatch:
    return CandleBatch.from_rows([tuple(candle(int(t), base)) for t in times])


@pytest.fixture
def pair(db_url):
    """(windowed store, window-less store) on one database: the second always asks SQL."""
    w = open_store(db_url, origin="windowed", window_candles=20, watch_interval_s=3600)  # checked by hand
    plain = open_store(db_url, origin="plain", window_candles=0)
    yield w, plain
    w.close()
    plain.close()


def assert_window_exact(w, plain, sid: SeriesId) -> None:
    """The invariant itself: a loaded window holds every stored candle at or after its lo."""
    got = w.windows.get(sid)
    if got is not None:
        assert got.batch.rows() == plain.candles.read_between(sid, got.lo, BIG).rows()
        assert len(got.batch) <= w.windows.size
        assert got.lo == WHOLE or len(got.batch) == w.windows.size


def assert_reads_agree(w, plain, sid: SeriesId, probes: list[int]) -> None:
    a, b = w.candles, plain.candles
    for k in (1, 7, 20, 25):
        assert a.read_tail(sid, k).rows() == b.read_tail(sid, k).rows()
    times = [p * TF for p in probes]
    got = w.windows.get(sid)
    if got is not None and got.lo != WHOLE:  # the window's edge: the reads that must go to SQL
        times += [got.lo - 2 * TF, got.lo - TF, got.lo]
    for t in times:
        assert a.read_after(sid, t, 6).rows() == b.read_after(sid, t, 6).rows()
        assert a.read_after(sid, t - 1, 100).rows() == b.read_after(sid, t - 1, 100).rows()
        assert a.read_between(sid, t, t + 10 * TF).rows() == b.read_between(sid, t, t + 10 * TF).rows()
        assert a.read_between(sid, t + 1, BIG, 3).rows() == b.read_between(sid, t + 1, BIG, 3).rows()
        assert a.times_between(sid, t, BIG).tolist() == b.times_between(sid, t, BIG).tolist()
        assert a.holes(sid, t, t + 30 * TF) == b.holes(sid, t, t + 30 * TF)  # voids split, both sides
        assert a.raw_holes(sid, t - 1, t + 200 * TF) == b.raw_holes(sid, t - 1, t + 200 * TF)
    assert a.head_time(sid) == b.head_time(sid)
    assert a.first_time(sid) == b.first_time(sid)
    assert_window_exact(w, plain, sid)


# ---- the rule, without a database ---------------------------------------------------------------------

def test_writes_ending_out_of_order_drop_the_window():
    sid = fresh_series()
    ws = RecentWindows(10)
    ws.install(sid, ws.ticket(sid, 1), 5, batch([0, 60]), WHOLE)
    ws.wrote(sid, 1, 7, batch([120]))  # sequence 6 (another writer) has not been applied: drop
    assert ws.get(sid) is None
    ws.wrote(sid, 1, 6, batch([180]))
    assert ws.get(sid) is None


def test_a_write_at_the_next_sequence_applies_and_a_seen_one_is_ignored():
    sid = fresh_series()
    ws = RecentWindows(3)
    ws.install(sid, ws.ticket(sid, 1), 5, batch([0, 60]), WHOLE)
    ws.wrote(sid, 1, 6, batch([120, 180], base=200))
    got = ws.get(sid)
    assert got.batch.times.tolist() == [60, 120, 180] and got.lo == 60  # trimmed to 3
    ws.wrote(sid, 1, 6, batch([240]))  # its snapshot already had it
    assert ws.get(sid).batch.times.tolist() == [60, 120, 180]


def test_a_load_is_refused_when_a_write_ended_meanwhile():
    sid = fresh_series()
    ws = RecentWindows(10)
    ticket = ws.ticket(sid, 1)
    ws.wrote(sid, 1, 1, batch([0]))  # not loaded: nothing to apply, but the load below predates it
    ws.install(sid, ticket, 0, CandleBatch.empty(), WHOLE)
    assert ws.get(sid) is None
    ws.install(sid, ws.ticket(sid, 1), 1, batch([0]), WHOLE)
    assert ws.get(sid) is not None
    assert ws.drop_stale({1: 1}) == 0 and ws.drop_stale({1: 2}) == 1 and ws.get(sid) is None


@given(writes=st.lists(st.tuples(st.sets(st.integers(0, 60), max_size=15), st.integers(0, 5)), max_size=8),
       size=st.integers(1, 12))
def test_merge_into_equals_last_write_wins_then_newest(writes, size):
    model: dict[int, tuple] = {}
    got, lo = CandleBatch.empty(), WHOLE
    for idx, base in writes:
        b = batch(sorted(i * TF for i in idx), 100 + base)
        got, lo = merge_into(got, lo, b, size)
        model.update({r[0]: r for r in b.rows() if r[0] >= lo})
        expect = [model[t] for t in sorted(model) if t >= lo]
        assert got.rows() == expect[-size:]
        assert lo == WHOLE or len(got) == size


# ---- against the database -----------------------------------------------------------------------------

_op = st.one_of(
    st.tuples(st.just("write"), st.sets(st.integers(0, 80), max_size=30), st.integers(0, 3)),
    st.tuples(st.just("repair"), st.integers(0, 30), st.integers(0, 3)),
    st.tuples(st.just("void"), st.integers(0, 80), st.integers(0, 10)),
    st.tuples(st.just("read"), st.integers(0, 80), st.integers(0, 0)),
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(_op, min_size=1, max_size=10), probes=st.lists(st.integers(-2, 85), min_size=1, max_size=3))
def test_window_reads_equal_sql_reads_after_random_writes_repairs_and_voids(pair, ops, probes):
    w, plain = pair
    sid = fresh_series()
    for kind, x, y in ops:
        if kind == "write":
            w.candles.upsert_closed(sid, batch(sorted(i * TF for i in x), 100 + y))
        elif kind == "repair":
            holes = w.candles.raw_holes(sid, 0, 80 * TF)
            if holes:
                h = holes[x % len(holes)]
                w.candles.upsert_closed(sid, batch(range(h.start, h.end + 1, TF), 100 + y))
        elif kind == "void":
            w.candles.record_void(sid, x * TF, (x + y) * TF, "test", 1.0)
        else:
            w.candles.read_tail(sid, 5)  # loads the window if it is not
        assert_reads_agree(w, plain, sid, probes)


def test_a_failed_write_leaves_the_window_equal_to_the_store(pair, monkeypatch):
    w, plain = pair
    sid = fresh_series()
    w.candles.upsert_closed(sid, batch(range(0, 30 * TF, TF)))
    w.candles.read_tail(sid, 5)
    assert w.windows.get(sid) is not None

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(w.coverage, "record", boom)
    with pytest.raises(RuntimeError):
        w.candles.upsert_closed(sid, batch(range(30 * TF, 33 * TF, TF), 150))
    assert w.windows.get(sid) is None  # outcome unknown to the window: dropped, the next read reloads
    assert_reads_agree(w, plain, sid, [25, 29, 31])
    assert w.candles.head_time(sid) == 29 * TF


def test_threads_writing_and_reading_one_series(pair):
    w, plain = pair
    sid = fresh_series()
    errors: list[BaseException] = []
    stop = threading.Event()

    def writer(seed: int):
        rng = np.random.default_rng(seed)
        try:
            for _ in range(40):
                lo = int(rng.integers(0, 200))
                w.candles.upsert_closed(sid, batch(range(lo * TF, (lo + int(rng.integers(1, 15))) * TF, TF),
                                                   100 + seed))
        except BaseException as exc:  # reported below
            errors.append(exc)

    def reader():
        try:
            while not stop.is_set():
                t = w.candles.read_tail(sid, 20).times
                assert np.all(np.diff(t) > 0)
                w.candles.read_after(sid, int(t[0]) if len(t) else 0, 10)
        except BaseException as exc:
            errors.append(exc)

    readers = [threading.Thread(target=reader) for _ in range(2)]
    writers = [threading.Thread(target=writer, args=(k,)) for k in range(3)]
    for t in readers + writers:
        t.start()
    for t in writers:
        t.join()
    stop.set()
    for t in readers:
        t.join()
    assert errors == []
    assert_reads_agree(w, plain, sid, [0, 100, 190, 205])


def test_another_process_write_is_seen_after_one_watcher_check(pair, db_url):
    w, plain = pair
    sid = fresh_series()
    w.candles.upsert_closed(sid, batch(range(0, 30 * TF, TF)))
    assert w.candles.read_tail(sid, 10).times[-1] == 29 * TF  # window loaded
    p = start_writer(db_url, {"origin": "other", "batches": [
        [[str(sid), [candle(t, 300) for t in range(25 * TF, 40 * TF, TF)]]]]})
    out, _ = p.communicate(timeout=120)
    assert p.returncode == 0, out
    assert w.watcher.check() == 1  # the window was behind the series' write sequence
    assert_reads_agree(w, plain, sid, [20, 26, 35])
    assert w.candles.head_time(sid) == 39 * TF


def test_the_watcher_thread_catches_up_by_itself(db_url):
    w = open_store(db_url, origin="windowed", window_candles=20, watch_interval_s=0.05)
    plain = open_store(db_url, origin="plain", window_candles=0)
    sid = fresh_series()
    try:
        w.candles.upsert_closed(sid, batch(range(0, 10 * TF, TF)))
        w.candles.read_tail(sid, 5)
        plain.candles.upsert_closed(sid, batch(range(10 * TF, 12 * TF, TF)))  # another "process"
        wait_for(lambda: w.candles.read_tail(sid, 3).times.tolist() == [540, 600, 660], 10, 0.02,
                 "the windowed store to see the other store's write")
        assert_reads_agree(w, plain, sid, [5, 9])
    finally:
        w.close()
        plain.close()


@pytest.mark.postgres
def test_listen_drops_the_window_before_the_callback_reads(tmp_path):
    from tests.conftest import pg_url_or_skip, reset_pg

    url = pg_url_or_skip()
    reset_pg(url)
    w = open_store(url, origin="windowed", window_candles=20, watch_interval_s=3600)  # only LISTEN
    sid = fresh_series()
    w.candles.upsert_closed(sid, batch(range(0, 10 * TF, TF)))
    w.candles.read_tail(sid, 5)
    seen: list = []
    got = threading.Event()

    def on_write(series_id: str, first: int, last: int) -> None:
        seen.append(w.candles.read_between(SeriesId.parse(series_id), first, last).rows())
        got.set()

    listener = w.listen(on_write).start()
    try:
        written = [candle(t, 300) for t in range(8 * TF, 14 * TF, TF)]
        p = start_writer(url, {"origin": "other", "batches": [[[str(sid), written]]]})
        out, _ = p.communicate(timeout=120)
        assert p.returncode == 0, out
        assert got.wait(30), "no notification"
        assert seen[0] == [tuple(r) for r in written]
        assert w.candles.read_tail(sid, 3).times.tolist() == [660, 720, 780]
    finally:
        listener.stop()
        w.close()


def test_a_writer_killed_mid_transaction_changes_no_window(pair, db_url):
    w, plain = pair
    sid = fresh_series()
    w.candles.upsert_closed(sid, batch(range(0, 30 * TF, TF)))
    w.candles.read_tail(sid, 10)
    p = start_writer(db_url, {"origin": "victim", "hang_in": 0, "batches": [
        [[str(sid), [candle(t, 300) for t in range(20 * TF, 50 * TF, TF)]]]]})
    try:
        assert p.stdout.readline().strip() == "mid"
        os.kill(p.pid, signal.SIGKILL)
        p.wait(30)
    finally:
        if p.poll() is None:
            p.kill()
    w.watcher.check()
    assert_reads_agree(w, plain, sid, [15, 25, 29])
    assert w.candles.head_time(sid) == 29 * TF
    w.candles.upsert_closed(sid, batch(range(30 * TF, 32 * TF, TF)))  # the series still writes
    assert_reads_agree(w, plain, sid, [28, 30])


def test_a_caller_changing_what_it_read_changes_no_window(pair):
    w, plain = pair
    sid = fresh_series()
    w.candles.upsert_closed(sid, batch(range(0, 10 * TF, TF)))
    got = w.candles.read_tail(sid, 5)
    got.close[:] = -1.0
    got.times[:] = 0
    w.candles.times_between(sid, 0, BIG)[:] = 0
    assert_reads_agree(w, plain, sid, [3, 7])


def test_one_series_twice_in_one_transaction(pair):
    w, plain = pair
    sid, other = fresh_series(), fresh_series()
    w.candles.upsert_closed(sid, batch(range(0, 5 * TF, TF)))
    w.candles.read_tail(sid, 5)
    w.candles.upsert_closed_many([(sid, batch([5 * TF, 6 * TF], 200)), (other, batch([0])),
                                  (sid, batch([6 * TF, 7 * TF], 300))])
    assert_reads_agree(w, plain, sid, [0, 5])
    assert w.candles.read_tail(sid, 3).close.tolist() == plain.candles.read_tail(sid, 3).close.tolist()


def test_other_processes_and_this_one_writing_at_once(pair, db_url):
    """Three writer processes and this process write the same series at the same time; this process's
    own writes keep applying to its window only while no other write came in between."""
    from tests.test_coverage import random_plan

    w, plain = pair
    sid = fresh_series()
    w.candles.upsert_closed(sid, batch(range(0, 30 * TF, TF)))
    rng = np.random.default_rng(11)
    procs = [start_writer(db_url, random_plan(rng, [str(sid)], f"w{k}", 25, 200 + k)) for k in range(3)]

    def write_and_read():
        lo = int(rng.integers(0, 460))
        w.candles.upsert_closed(sid, batch(range(lo * TF, (lo + int(rng.integers(1, 8))) * TF, TF), 150))
        w.candles.read_tail(sid, 20)  # keeps a window loaded while the others write

    rounds = 0
    while any(p.poll() is None for p in procs) or rounds < 20:  # until every other writer is done
        write_and_read()
        rounds += 1
    for p in procs:
        out, _ = p.communicate(timeout=180)
        assert p.returncode == 0 and out.strip().endswith("done"), out
    write_and_read()  # the last write is ours: only the sequence rule can have dropped a stale window
    w.watcher.check()
    assert_reads_agree(w, plain, sid, [0, 100, 300, 455])


def test_only_a_store_other_processes_can_open_is_watched(tmp_path):
    """An in-memory SQLite database is private to its process (and to each thread's connection: a
    watcher there could only fail and drop every window): nothing to watch."""
    memory = open_store("sqlite://", origin="memory")
    on_file = open_store(f"sqlite:///{tmp_path / 'w.sqlite'}", origin="file")
    off = open_store(f"sqlite:///{tmp_path / 'w.sqlite'}", origin="off", window_candles=0)
    try:
        assert (memory.watcher.running, on_file.watcher.running, off.watcher.running) == (False, True, False)
        sid = fresh_series()
        memory.candles.upsert_closed(sid, batch([0, 60]))
        assert memory.candles.read_tail(sid, 5).times.tolist() == [0, 60]
        assert memory.windows.get(sid) is not None
    finally:
        for s in (memory, on_file, off):
            s.close()
    assert not on_file.watcher.running


def test_write_seq_is_the_stored_sequence_and_a_window_behind_it_goes(pair, db_url):
    """`write_seq` (the market read's freshness check): moved by every candle and void write, in this
    process or another, read from the store itself; a window behind it is dropped before any read."""
    w, plain = pair
    sid = fresh_series()
    assert w.candles.write_seq(sid) == 0  # never written
    w.candles.upsert_closed(sid, batch(range(0, 30 * TF, TF)))
    assert w.candles.write_seq(sid) == 1
    assert w.candles.read_tail(sid, 5).times[-1] == 29 * TF  # window loaded
    w.candles.record_void(sid, 40 * TF, 41 * TF, "ccxt", checked_at=1.0)
    assert w.candles.write_seq(sid) == 2 == plain.candles.write_seq(sid)
    assert w.windows.get(sid) is not None  # a void leaves the candles, and this process's window, as they are
    p = start_writer(db_url, {"origin": "other", "batches": [
        [[str(sid), [candle(t, 300) for t in range(28 * TF, 35 * TF, TF)]]]]})
    out, _ = p.communicate(timeout=120)
    assert p.returncode == 0, out
    assert w.candles.write_seq(sid) == 3  # no watcher step, no notice: the store says so
    assert w.windows.get(sid) is None  # and the stale window is gone before the next read
    assert_reads_agree(w, plain, sid, [20, 28, 34])
