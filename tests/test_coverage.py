"""The coverage index (tc_coverage) always agrees with the candles, on SQLite and PostgreSQL: random
writes, repairs and voids (hypothesis), several series per transaction, several processes writing one
store, a writer SIGKILLed inside its transaction, a damaged or missing index found and rebuilt."""
from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, select, update

from tests.conftest import REPO, subprocess_env
from tradecanvas_ext.domain import SeriesId, list_holes, runs_of, split_by_voids
from tradecanvas_ext.store import open_store
from tradecanvas_ext.store.schema import coverage as R
from tradecanvas_ext.store.schema import store_state

TF = 60
BIG = 10**12
_counter = itertools.count()


@pytest.fixture
def storage(db_url):
    """Without recent windows: every answer here comes from the index (the windows have their tests)."""
    s = open_store(db_url, origin="test", window_candles=0)
    yield s
    s.close()


def fresh_series() -> SeriesId:
    return SeriesId.parse(f"binance:spot:C{next(_counter)}/USDT:1m")


def candle(t: int, base: float = 100.0) -> list:
    o = base + (t // 60) % 17
    c = o + 0.5
    return [t, o, c + 1.0, o - 1.0, c, 1.0 + (t // 60) % 5]


def index_runs(storage, sid: SeriesId) -> list[tuple[int, int]]:
    s, e = storage.coverage.runs(storage.candles.series_key(sid), -BIG, BIG)
    return list(zip(s.tolist(), e.tolist(), strict=True))


def truth_runs(times) -> list[tuple[int, int]]:
    s, e = runs_of(np.asarray(sorted(times), dtype=np.int64), TF)
    return list(zip(s.tolist(), e.tolist(), strict=True))


def assert_agrees(storage, sid: SeriesId, a: int, b: int) -> None:
    """Everything the index answers equals what the candles themselves say."""
    store = storage.candles
    times = store.read_between(sid, -BIG, BIG).times  # the candles, whatever wrote them
    assert index_runs(storage, sid) == truth_runs(times)
    assert store.raw_holes(sid, a, b) == list_holes(times, a, b, TF)
    voids = [(v.start, v.end) for v in store.voids(sid, a, b)]
    assert store.holes(sid, a, b) == split_by_voids(list_holes(times, a, b, TF), voids, TF)
    assert store.count_between(sid, a, b) == int(((times >= a) & (times <= b)).sum())
    expect = {"first_time": int(times[0]) if len(times) else None,
              "head_time": int(times[-1]) if len(times) else None, "candle_count": len(times)}
    assert store.stats(sid) == expect


_op = st.one_of(
    st.tuples(st.just("write"), st.sets(st.integers(0, 200), max_size=60), st.integers(0, 3)),
    st.tuples(st.just("repair"), st.integers(0, 50), st.integers(0, 3)),  # fill the k-th hole
    st.tuples(st.just("void"), st.integers(0, 200), st.integers(0, 20)),
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(_op, min_size=1, max_size=8), a=st.integers(-10, 210), b=st.integers(-10, 210))
def test_index_agrees_with_candles_after_random_writes_repairs_and_voids(storage, ops, a, b):
    sid, store = fresh_series(), storage.candles
    model: dict[int, float] = {}
    for op in ops:
        if op[0] == "write":
            _, idx, base = op
            rows = [candle(i * TF, 100 + base) for i in sorted(idx)]
        elif op[0] == "repair":
            holes = store.raw_holes(sid, 0, 200 * TF)
            if not holes:
                continue
            h = holes[op[1] % len(holes)]
            rows = [candle(t, 100 + op[2]) for t in range(h.start, h.end + 1, TF)]
        else:
            store.record_void(sid, op[1] * TF, (op[1] + op[2]) * TF, "test", 1.0)
            rows = []
        store.upsert_closed(sid, rows)
        model.update({r[0]: r[1] for r in rows})
        assert_agrees(storage, sid, a * TF, b * TF)
    assert store.read_between(sid, -BIG, BIG).times.tolist() == sorted(model)
    assert index_runs(storage, sid) == truth_runs(model)


def test_many_series_in_one_transaction_and_a_head_append(storage):
    sids = [fresh_series() for _ in range(4)]
    items = [(s, [candle(t * TF) for t in range(k, 50, k + 1)]) for k, s in enumerate(sids)]
    storage.candles.upsert_closed_many(items)
    for s in sids:
        storage.candles.upsert_closed(s, [candle(50 * TF), candle(51 * TF)])  # touches nothing or the head
        storage.candles.upsert_closed(s, [candle(t * TF) for t in range(0, 52, 2)])  # bridges some holes
        assert_agrees(storage, s, 0, 60 * TF)
    assert storage.coverage.verify() == []


def test_a_damaged_index_is_found_marked_and_rebuilt_on_open(db_url):
    sid = fresh_series()
    s = open_store(db_url, origin="test", window_candles=0)
    s.candles.upsert_closed(sid, [candle(t * TF) for t in (0, 1, 2, 5, 6, 9)])
    key = s.candles.series_key(sid)
    good = index_runs(s, sid)
    with s.dialect.write() as conn:  # damage: one run's end moved, as a buggy or old writer would
        conn.execute(update(R).where(R.c.series_key == key, R.c.run_start == 5 * TF).values(run_end=7 * TF))
    assert s.coverage.verify() == [key]
    with s.dialect.read() as conn:
        assert conn.execute(select(store_state.c.value)).scalar() == "mismatch"
    s.close()
    s = open_store(db_url, origin="test", window_candles=0)  # the mismatch marker makes the open rebuild
    assert index_runs(s, sid) == good and s.coverage.verify() == []
    assert_agrees(s, sid, 0, 10 * TF)
    s.close()


def test_verify_and_rebuild_on_demand_from_the_command_line(db_url, tmp_path):
    """`tradecanvas coverage verify|rebuild` in a real subprocess, while this process keeps the store open:
    verify names the damaged series (exit 1); rebuild repairs the index, moves every write sequence (so this
    process's window and kept answers are dropped) and verifies (exit 0)."""
    sid, other = fresh_series(), fresh_series()
    s = open_store(db_url, origin="test")
    s.candles.upsert_closed(sid, [candle(t * TF) for t in (0, 1, 2, 5, 6, 9)])
    s.candles.upsert_closed(other, [candle(t * TF) for t in range(4)])
    good = index_runs(s, sid)
    key = s.candles.series_key(sid)
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"user_data_dir": str(tmp_path), "tradecanvas": {"enabled": True, "db_url": db_url}}))

    def cli(action: str):
        return subprocess.run([sys.executable, "-m", "tradecanvas_ext.cli.main", "coverage", action, "--config",
                               str(cfg)], capture_output=True, text=True, timeout=120, cwd=REPO,
                              env=subprocess_env())

    ok = cli("verify")
    assert ok.returncode == 0 and "agrees" in ok.stdout, ok.stderr
    with s.dialect.write() as conn:  # damage one run, as a buggy or old writer would
        conn.execute(update(R).where(R.c.series_key == key, R.c.run_start == 5 * TF).values(run_end=7 * TF))
    assert s.candles.raw_holes(sid, 0, 9 * TF) != list_holes(np.array([0, 1, 2, 5, 6, 9]) * TF, 0, 9 * TF, TF)
    bad = cli("verify")
    assert bad.returncode == 1 and str(sid) in bad.stdout and str(other) not in bad.stdout, bad.stderr
    seqs = {x: s.candles.write_seq(x) for x in (sid, other)}
    fixed = cli("rebuild")
    assert fixed.returncode == 0 and "agrees" in fixed.stdout, fixed.stderr
    assert all(s.candles.write_seq(x) > seqs[x] for x in (sid, other))
    assert index_runs(s, sid) == good
    assert_agrees(s, sid, 0, 10 * TF)
    s.close()


def test_a_store_without_the_index_is_rebuilt_on_open(db_url):
    """A store written before the index existed: candles, no runs, no marker."""
    sid = fresh_series()
    s = open_store(db_url, origin="test", window_candles=0)
    s.candles.upsert_closed(sid, [candle(t * TF) for t in (3, 4, 8, 10, 11, 12)])
    with s.dialect.write() as conn:
        conn.execute(delete(R))
        conn.execute(delete(store_state))
    assert index_runs(s, sid) == []
    s.close()
    s = open_store(db_url, origin="test", window_candles=0)
    assert index_runs(s, sid) == [(180, 240), (480, 480), (600, 720)]
    assert_agrees(s, sid, 0, 15 * TF)
    s.close()


# ---- other processes ----------------------------------------------------------------------------------

def start_writer(db_url: str, plan: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tests.store_writer", db_url, json.dumps(plan)],
                            stdout=subprocess.PIPE, text=True, cwd=REPO, env=subprocess_env())


def random_plan(rng: np.random.Generator, series: list[str], origin: str, n_batches: int, base: float) -> dict:
    batches = []
    for _ in range(n_batches):
        batch = []
        for sid in series:
            lo = int(rng.integers(0, 400))
            idx = np.unique(rng.integers(lo, lo + 60, size=int(rng.integers(1, 40))))
            batch.append([sid, [candle(int(i) * TF, base) for i in idx]])
        batches.append(batch)
    return {"origin": origin, "batches": batches}


def test_processes_writing_one_store_keep_the_index_exact(db_url):
    storage = open_store(db_url, origin="test", window_candles=0)  # schema and index marker exist before the race
    sids = [fresh_series(), fresh_series()]
    names = [str(s) for s in sids]
    rng = np.random.default_rng(3)
    procs = [start_writer(db_url, random_plan(rng, names[::1 if k % 2 else -1], f"w{k}", 30, 100 + k))
             for k in range(3)]
    for p in procs:
        out, _ = p.communicate(timeout=180)
        assert p.returncode == 0 and out.strip().endswith("done"), out
    for s in sids:
        assert_agrees(storage, s, 0, 500 * TF)
    assert storage.coverage.verify() == []
    storage.close()


def test_a_writer_killed_inside_its_transaction_leaves_index_and_candles_in_step(db_url):
    storage = open_store(db_url, origin="test", window_candles=0)
    sid = fresh_series()
    first = [[str(sid), [candle(t * TF) for t in range(0, 40) if t % 7]]]
    second = [[str(sid), [candle(t * TF, 200) for t in range(35, 90)]]]  # overlaps and extends
    p = start_writer(db_url, {"origin": "victim", "batches": [first, second], "hang_in": 1})
    try:
        assert p.stdout.readline().strip() == "mid"  # inside batch 1's transaction, candles inserted
        os.kill(p.pid, signal.SIGKILL)
        p.wait(30)
    finally:
        if p.poll() is None:
            p.kill()
    committed = [r[0] for r in first[0][1]]
    after = open_store(db_url, origin="test-after", window_candles=0)  # a new process's view (SQLite recovers the WAL)
    for s in (storage, after):
        assert s.candles.read_between(sid, -BIG, BIG).times.tolist() == committed
        assert_agrees(s, sid, 0, 100 * TF)
    assert after.coverage.verify() == []
    before = index_runs(after, sid)
    after.coverage.rebuild()
    assert index_runs(after, sid) == before == truth_runs(committed)
    after.candles.upsert_closed(sid, [candle(t * TF) for t in range(35, 90)])  # the store still writes
    assert_agrees(after, sid, 0, 100 * TF)
    after.close()
    storage.close()
