"""Contract section 7: tracker states, progress_pct, persistence, and a `running` row left by a process
killed with SIGKILL reads failed / interrupted after restart."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

from hypothesis import given
from hypothesis import strategies as st

from tradecanvas_ext.backfill.tracker import ProgressTracker, progress_pct
from tradecanvas_ext.domain import SeriesId
from tradecanvas_ext.store import open_store

SID = SeriesId.parse("binance:spot:BTC/USDT:1m")


@given(start=st.integers(0, 10**6), current=st.integers(0, 10**6))
def test_progress_pct_bounds(start, current):
    p = progress_pct(start, current)
    assert 0.0 <= p <= 100.0
    if start > 0 and current <= start:
        assert abs(p - 100.0 * (start - current) / start) < 0.01


def test_states_begin_progress_finish(storage):
    t = [100.0]
    tr = ProgressTracker(storage.tracker_rows, lambda: t[0])
    assert tr.get(SID)["state"] == "idle"
    tr.begin(SID, 600, 10, "tail_coverage")
    row = tr.get(SID)
    assert row["state"] == "running" and row["progress_pct"] == 0.0 and row["started_at"] == 100.0
    t[0] = 101.0
    tr.progress(SID, 240, 4, ran_levels=1)
    row = tr.get(SID)
    assert row["progress_pct"] == 60.0 and row["current_missing_candles"] == 4 and row["updated_at"] == 101.0
    tr.finish(SID, True, "tail_coverage_done", 0, 0, 1)
    row = tr.get(SID)
    assert row["state"] == "succeeded" and row["progress_pct"] == 100.0 and row["note"] == "tail_coverage_done"
    tr.begin(SID, 60, 1, "gap_backfill")
    tr.finish(SID, False, "tail_coverage_best_effort_failed", 60, 1, 1, error="boom")
    row = tr.get(SID)
    assert row["state"] == "failed" and row["error"] == "boom" and row["progress_pct"] == 0.0


def test_running_row_of_this_process_is_running(storage):
    tr = ProgressTracker(storage.tracker_rows, lambda: 1.0)
    tr.begin(SID, 60, 1, "x")
    assert tr.get(SID)["state"] == "running"
    assert tr.recover_interrupted() == []


_CHILD = textwrap.dedent("""
    import sys, time
    from tradecanvas_ext.backfill.tracker import ProgressTracker, this_owner
    from tradecanvas_ext.domain import SeriesId
    from tradecanvas_ext.store import open_store
    owner = this_owner()
    store = open_store(sys.argv[1], origin=owner)
    tr = ProgressTracker(store.tracker_rows, time.time, owner)
    sid = SeriesId.parse("binance:spot:BTC/USDT:1m")
    tr.begin(sid, 6000, 100, "tail_coverage")
    tr.progress(sid, 3000, 50, 1)
    print("running", flush=True)
    time.sleep(600)
""")


def test_killed_process_leaves_interrupted(db_url):
    proc = subprocess.Popen([sys.executable, "-c", _CHILD, db_url], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "running"
        store = open_store(db_url, origin="test")
        tr = ProgressTracker(store.tracker_rows, time.time)
        assert tr.get(SID)["state"] == "running"  # the owner is alive
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        row = tr.get(SID)
        assert row["state"] == "failed" and row["error"] == "interrupted" and row["progress_pct"] == 50.0
        # a restart persists it
        assert tr.recover_interrupted() == [SID]
        assert store.tracker_rows.tracker_get(SID)["state"] == "failed"
        store.close()
    finally:
        if proc.poll() is None:
            proc.kill()
