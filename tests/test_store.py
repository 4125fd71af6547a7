"""CandleStore on SQLite and PostgreSQL (same test code): upsert, reads, holes in SQL, voids, tracker rows,
idempotence, threads and processes."""
from __future__ import annotations

import itertools
import multiprocessing as mp
import threading

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tradecanvas_ext.domain import Candle, CandleBatch, Hole, InvalidCandle, SeriesId, list_holes
from tradecanvas_ext.store import open_store
from tradecanvas_ext.store.dialect import dialect_for
from tradecanvas_ext.store.leases import LeaseTimeout, NoLeases
from tradecanvas_ext.store.series_keys import SeriesKeys

SID = SeriesId.parse("binance:spot:BTC/USDT:1m")
_counter = itertools.count()


def candle(t: int, base: float = 100.0) -> tuple:
    """A deterministic valid candle for time t (same t -> same values)."""
    o = base + (t // 60) % 17
    c = o + 0.5
    return (t, o, c + 1.0, o - 1.0, c, 1.0 + (t // 60) % 5)


def fresh_series(tf: str = "1m") -> SeriesId:
    return SeriesId.parse(f"binance:spot:S{next(_counter)}/USDT:{tf}")


def test_upsert_and_reads(store):
    res = store.upsert_closed(SID, [candle(t) for t in (60, 120, 180, 300)])
    assert res.accepted == 4 and res.rejected == []
    assert store.read_tail(SID, 2).times.tolist() == [180, 300]
    assert store.read_after(SID, 60, 2).times.tolist() == [120, 180]
    assert store.read_after(SID, 300, 10).times.tolist() == []
    assert store.read_between(SID, 100, 300).times.tolist() == [120, 180, 300]
    assert store.head_time(SID) == 300 and store.first_time(SID) == 60
    assert store.count_between(SID, 60, 180) == 3
    assert store.stats(SID) == {"first_time": 60, "head_time": 300, "candle_count": 4}
    got = store.read_between(SID, 60, 60).to_candles()[0]
    assert got == Candle(*candle(60))


def test_empty_series(store):
    assert store.head_time(SID) is None and store.first_time(SID) is None
    assert len(store.read_tail(SID, 10)) == 0
    assert store.raw_holes(SID, 0, 120) == [Hole(0, 120, 3)]


def test_last_write_wins(store):
    store.upsert_closed(SID, [candle(60)])
    newer = (60, 10.0, 12.0, 9.0, 11.0, 5.0)
    store.upsert_closed(SID, [newer])
    assert store.read_tail(SID, 5).rows() == [newer]
    # inside one batch the last row for a time wins too
    store.upsert_closed(SID, [candle(120), (120, 1.0, 1.0, 1.0, 1.0, 1.0)])
    assert store.read_between(SID, 120, 120).rows() == [(120, 1.0, 1.0, 1.0, 1.0, 1.0)]


def test_rejects_invalid_and_keeps_the_rest(store):
    store.upsert_closed(SID, [candle(60)])
    rows = [candle(120), (121, 1, 1, 1, 1, 1), (180, float("nan"), 1, 1, 1, 1), (240, -1, 1, 1, 1, 1),
            (300, 1, 2, 0.5, 1, -3), (360, 1, 1.5, 1.2, 1.1, 1), candle(420), candle(480)]
    res = store.upsert_closed(SID, rows, now=480)  # 480 is still forming at now=480
    assert res.accepted == 2
    assert dict(res.rejected) == {121: "unaligned", 180: "non_finite", 240: "non_positive_price",
                                  300: "negative_volume", 360: "low_above_body", 480: "not_closed"}
    assert store.read_tail(SID, 100).times.tolist() == [60, 120, 420]


def test_malformed_rows_raise_before_anything_is_written(store):
    store.upsert_closed(SID, [candle(60)])
    with pytest.raises(InvalidCandle):
        store.upsert_closed(SID, [candle(120), {"candle_time": 180, "open": 1}])
    with pytest.raises(InvalidCandle):
        store.upsert_closed(SID, [candle(120), ("x",)])
    assert store.read_tail(SID, 10).times.tolist() == [60]


def test_holes_computed_in_sql(store):
    store.upsert_closed(SID, [candle(t) for t in (120, 180, 360, 420, 600)])
    assert store.raw_holes(SID, 0, 720) == [Hole(0, 60, 2), Hole(240, 300, 2), Hole(480, 540, 2),
                                            Hole(660, 720, 2)]
    assert store.raw_holes(SID, 121, 419) == [Hole(240, 300, 2)]  # unaligned window edges
    assert store.raw_holes(SID, 360, 420) == []


def test_voids_mark_holes(store):
    store.upsert_closed(SID, [candle(t) for t in (0, 600)])
    store.record_void(SID, 120, 240, "ccxt", checked_at=1000.0)
    holes = store.holes(SID, 0, 600)
    assert holes == [Hole(60, 60, 1), Hole(120, 240, 3, void=True), Hole(300, 540, 5)]
    [v] = store.voids(SID, 0, 600)
    assert (v.start, v.end, v.source, v.checked_at) == (120, 240, "ccxt", 1000.0)
    assert store.voids(SID, 300, 600) == []
    store.record_void(SID, 120, 240, "ccxt", checked_at=2000.0)  # re-check refreshes, no duplicate
    assert [x.checked_at for x in store.voids(SID)] == [2000.0]
    # a candle that later appears inside a void wins: it is no longer part of any hole
    store.upsert_closed(SID, [candle(180)])
    assert [h for h in store.holes(SID, 0, 600) if h.void] == [Hole(120, 120, 1, True), Hole(240, 240, 1, True)]


def test_tracker_rows_persist(storage, db_url):
    rows = storage.tracker_rows
    rows.tracker_put(SID, {"state": "running", "started_at": 10.0, "note": "x"})
    rows.tracker_put(SID, {"progress_pct": 50.0})
    row = rows.tracker_get(SID)
    assert row["state"] == "running" and row["progress_pct"] == 50.0 and row["note"] == "x"
    other = open_store(db_url, origin="other")  # a new process would see the same row
    assert other.tracker_rows.tracker_get(SID)["started_at"] == 10.0
    assert SID in other.tracker_rows.tracker_all()
    other.close()
    with pytest.raises(ValueError, match="unknown field"):
        rows.tracker_put(SID, {"nope": 1})


def test_series_are_isolated(store):
    other = SeriesId.parse("binance:spot:ETH/USDT:1m")
    store.upsert_closed(SID, [candle(60)])
    store.upsert_closed(other, [candle(120)])
    assert store.read_tail(SID, 10).times.tolist() == [60]
    assert store.read_tail(other, 10).times.tolist() == [120]
    assert set(store.known_series()) >= {str(SID), str(other)}


def test_the_store_takes_a_series_id_not_its_text(store):
    store.upsert_closed(SID, [candle(60)])  # the key of SID is cached now
    for call in (lambda: store.head_time(str(SID)), lambda: store.upsert_closed(str(SID), [candle(120)])):
        with pytest.raises((TypeError, AttributeError)):
            call()
    with pytest.raises(TypeError, match="SeriesId"):
        store.series_key(str(SID))
    assert store.read_tail(SID, 10).times.tolist() == [60]


def test_the_dialect_is_chosen_once_from_the_url():
    memory = dialect_for("sqlite://")
    assert memory.name == "sqlite" and isinstance(memory.leases(SeriesKeys(memory)), NoLeases)  # nobody to arbitrate with
    memory.close()
    with pytest.raises(ValueError, match="unsupported database"):
        dialect_for("mysql://u@localhost/x")


def _hold_lease(url: str, ready, release) -> None:
    s = open_store(url, origin="holder")
    with s.leases.repair_lease(SID, 30):
        ready.set()
        release.wait(60)
    s.close()


def test_a_repair_lease_is_held_against_other_processes(storage, db_url):
    ctx = mp.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold_lease, args=(db_url, ready, release))
    holder.start()
    try:
        assert ready.wait(60), "the holder process never took the lease"
        with pytest.raises(LeaseTimeout):
            with storage.leases.repair_lease(SID, 0.2):
                pass
        release.set()
        with storage.leases.repair_lease(SID, 30):  # free once the holder lets go
            pass
    finally:
        release.set()
        holder.join(60)
    assert holder.exitcode == 0


# ---- properties (hypothesis) on the real database -----------------------------------------------------

@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(idx=st.sets(st.integers(0, 300), max_size=200), a=st.integers(-10, 310), b=st.integers(-10, 310))
def test_sql_holes_equal_reference(store, idx, a, b):
    sid = fresh_series()
    times = sorted(i * 60 for i in idx)
    store.upsert_closed(sid, [candle(t) for t in times])
    assert store.raw_holes(sid, a * 60, b * 60) == list_holes(times, a * 60, b * 60, 60)
    assert store.count_between(sid, a * 60, b * 60) == len([t for t in times if a * 60 <= t <= b * 60])


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=st.lists(st.sets(st.integers(0, 100), max_size=40), min_size=1, max_size=5),
       order=st.randoms())
def test_upsert_idempotent_and_order_independent(store, batches, order):
    a, b = fresh_series(), fresh_series()
    rows = [[candle(i * 60) for i in sorted(batch)] for batch in batches]
    for r in rows:
        store.upsert_closed(a, r)
    snapshot = store.read_between(a, 0, 10**9).rows()
    for r in rows:  # the same batches again change nothing
        store.upsert_closed(a, r)
    assert store.read_between(a, 0, 10**9).rows() == snapshot
    shuffled = list(rows)
    order.shuffle(shuffled)
    for r in shuffled:
        store.upsert_closed(b, r)
    assert store.read_between(b, 0, 10**9).rows() == snapshot
    assert len(snapshot) == len(set().union(*batches))


# ---- concurrency --------------------------------------------------------------------------------------

def test_two_threads_write_and_read_one_series(store):
    n = 3000
    errors: list[BaseException] = []

    def writer(offset: int):
        try:
            for lo in range(offset, n, 200):
                store.upsert_closed(SID, [candle(i * 60) for i in range(lo, min(lo + 100, n))])
        except BaseException as exc:  # reported below
            errors.append(exc)

    def reader(stop: threading.Event):
        try:
            while not stop.is_set():
                t = store.read_tail(SID, 500).times
                assert np.all(np.diff(t) > 0)
                store.raw_holes(SID, 0, n * 60)
        except BaseException as exc:
            errors.append(exc)

    stop = threading.Event()
    threads = [threading.Thread(target=writer, args=(0,)), threading.Thread(target=writer, args=(100,))]
    r = threading.Thread(target=reader, args=(stop,))
    r.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    r.join()
    assert errors == []
    assert store.read_between(SID, 0, 10**9).times.tolist() == [i * 60 for i in range(n)]


def _process_writer(url: str, offset: int, n: int) -> None:
    s = open_store(url, origin=f"writer-{offset}")
    for lo in range(offset, n, 100):
        s.candles.upsert_closed(SID, [candle(i * 60) for i in range(lo, min(lo + 50, n))])
        s.candles.read_tail(SID, 100)
    s.close()


def test_two_processes_on_one_sqlite_file(sqlite_url):
    open_store(sqlite_url, origin="test").close()  # schema exists before the race
    ctx = mp.get_context("spawn")
    n = 2000
    procs = [ctx.Process(target=_process_writer, args=(sqlite_url, off, n)) for off in (0, 50)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    s = open_store(sqlite_url, origin="test")
    assert s.candles.read_between(SID, 0, 10**9).times.tolist() == [i * 60 for i in range(n)]
    s.close()


def test_batch_input_forms(store):
    batch = CandleBatch.from_rows([candle(60), candle(120)])
    dicts = [Candle(*candle(180)).to_dict()]
    objs = [Candle(*candle(240))]
    for form in (batch, dicts, objs):
        store.upsert_closed(SID, form)
    assert store.read_tail(SID, 10).times.tolist() == [60, 120, 180, 240]
