"""The market tail read's kept answers (web/tail_answers.py): a write of candles or voids, in this process
or in another one sharing the store, is in the very next read; a kept answer is byte for byte the one a
fresh build gives."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import requests

from tests.conftest import NOW
from tradecanvas_ext.domain import SeriesId, expected_latest_closed_time
from tradecanvas_ext.web.app import create_app
from tradecanvas_ext.web.tail_answers import TailAnswers

SID = "binance:spot:BTC/USDT:1m"
BTC = SeriesId.parse(SID)
TF = 60
LAST = expected_latest_closed_time(NOW, TF)
LIMIT = 40


def row(t: int, base: float = 100.0) -> tuple:
    return (t, base, base + 2, base - 1, base + 1, 5.0)


@pytest.fixture
def rt(make_runtime):
    # no exchange: the tail check finds what is stored and never fills a hole itself
    runtime = make_runtime(serve=True, enable_ccxt_backfill=False)
    runtime.core.storage.watcher.stop()  # only the read's own check may notice another process
    return runtime


def read(rt, limit: int = LIMIT) -> requests.Response:
    r = requests.get(f"{rt.url}/api/market/candles", params={"series_id": SID, "limit": limit}, timeout=30)
    assert r.status_code == 200, r.text
    return r


def fresh(rt, limit: int = LIMIT) -> bytes:
    """The same read built by an app with nothing kept."""
    r = create_app(rt).test_client().get("/api/market/candles", query_string={"series_id": SID, "limit": limit},
                                         headers={"Host": "127.0.0.1"})
    assert r.status_code == 200, r.data
    return r.data


def times(resp) -> list[int]:
    return [c["candle_time"] for c in resp.json()["candles"]]


def test_a_write_in_this_process_is_in_the_next_read(rt):
    base = LAST - 60 * TF
    rt.store.upsert_closed(BTC, [row(base + i * TF) for i in range(50) if i not in (30, 31)])
    first = read(rt)
    assert read(rt).content == first.content  # kept
    assert first.json()["holes"] == [{"start": base + 30 * TF, "end": base + 31 * TF, "missing_candles": 2,
                                      "void": False, "unavailable": False}]
    for k in range(50, 61):  # one new head candle at a time, each read right after the write
        rt.store.upsert_closed(BTC, [row(base + k * TF)])
        r = read(rt)
        assert times(r)[-1] == base + k * TF and r.json()["server_head_time"] == base + k * TF
        assert r.content == fresh(rt)
    rt.store.upsert_closed(BTC, [row(base + 30 * TF), row(base + 31 * TF)])  # the hole filled
    assert read(rt).json()["holes"] == []
    rt.store.upsert_closed(BTC, [row(LAST, base=300.0)])
    rt.store.upsert_closed(BTC, [row(LAST, base=400.0)])  # a rewrite of the head: last write wins
    r = read(rt)
    assert r.json()["candles"][-1]["open"] == 400.0 and r.content == fresh(rt)


def test_a_void_is_in_the_next_read(rt):
    base = LAST - 30 * TF
    rt.store.upsert_closed(BTC, [row(base + i * TF) for i in range(31) if i != 10])
    assert read(rt).json()["holes"][0]["void"] is False
    rt.store.record_void(BTC, base + 10 * TF, base + 10 * TF, "ccxt", checked_at=NOW)
    r = read(rt)
    assert r.json()["holes"] == [{"start": base + 10 * TF, "end": base + 10 * TF, "missing_candles": 1,
                                  "void": True, "unavailable": False}]
    assert r.content == fresh(rt)


def write_elsewhere(db_url: str, rows: list[tuple]) -> None:
    """One write transaction by another process on the same store."""
    plan = {"origin": "other-process", "batches": [[[SID, [list(r) for r in rows]]]]}
    out = subprocess.run([sys.executable, "-m", "tests.store_writer", db_url, json.dumps(plan)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "done" in out.stdout, out.stderr


def test_another_process_write_is_in_the_next_read(rt):
    base = LAST - 50 * TF
    rt.store.upsert_closed(BTC, [row(base + i * TF) for i in range(45) if i != 20])
    db_url = rt.settings.db_url
    assert read(rt).content == read(rt).content
    for k in range(45, 48):  # the head moved by another process, read at once (no watcher, no notice)
        write_elsewhere(db_url, [row(base + k * TF)])
        assert times(read(rt))[-1] == base + k * TF
    write_elsewhere(db_url, [row(base + 20 * TF)])  # a hole filled inside the window by another process
    r = read(rt)
    assert r.json()["holes"] == [] and base + 20 * TF in times(r)
    write_elsewhere(db_url, [row(base + 47 * TF, base=500.0)])  # a rewrite of a kept candle
    r = read(rt)
    assert r.json()["candles"][-1]["open"] == 500.0 and r.content == fresh(rt)


def test_kept_per_limit_and_never_at_another_sequence():
    answers = TailAnswers(max_answers=2)
    answers.put(BTC, 10, 3, b"a")
    assert answers.get(BTC, 10, 3) == b"a"
    assert answers.get(BTC, 10, 4) is None and answers.get(BTC, 11, 3) is None
    answers.put(BTC, 10, 2, b"older")  # a slow reader of an older state does not replace a newer one
    assert answers.get(BTC, 10, 3) == b"a"
    answers.put(BTC, 11, 3, b"b")
    answers.put(BTC, 12, 3, b"c")  # past max_answers: the least recently used goes
    assert answers.get(BTC, 10, 3) is None and answers.get(BTC, 12, 3) == b"c"


def test_a_whole_window_skips_the_check_until_its_newest_closed_time_moves(make_runtime, exchange, clock,
                                                                           monkeypatch):
    rt = make_runtime(serve=True, enable_ccxt_backfill_on_read=True, backfill_cooldown_s=0)
    checks = []
    check = rt.backfill.ensure_tail_coverage
    monkeypatch.setattr(rt.backfill, "ensure_tail_coverage", lambda *a, **k: checks.append(1) or check(*a, **k))
    first = read(rt)  # the check fills the whole window from the exchange
    assert times(first) == [LAST - (LIMIT - 1 - i) * TF for i in range(LIMIT)] and len(checks) == 1
    assert read(rt).content == first.content and len(checks) == 1  # same window, no write: no check
    clock.advance(TF)  # a new closed candle is due: the next read checks again and fetches it
    r = read(rt)
    assert len(checks) == 2 and times(r)[-1] == LAST + TF
    assert r.json()["candles"][-1] == dict(zip(("candle_time", "open", "high", "low", "close", "volume"),
                                               exchange.candles("BTC/USDT", "1m", LAST + TF, LAST + TF)[0], strict=True))
    assert read(rt).content == r.content and len(checks) == 2


def test_a_window_with_a_hole_is_checked_on_every_read(rt, monkeypatch):
    base = LAST - 60 * TF
    rt.store.upsert_closed(BTC, [row(base + i * TF) for i in range(61) if i != 40])
    checks = []
    check = rt.backfill.ensure_tail_coverage
    monkeypatch.setattr(rt.backfill, "ensure_tail_coverage", lambda *a, **k: checks.append(1) or check(*a, **k))
    for n in range(1, 4):  # kept bytes, but the hole may be repaired by the check: it runs each time
        assert read(rt).json()["holes"][0]["start"] == base + 40 * TF and len(checks) == n


def test_whole_is_kept_only_at_its_sequence_and_newest_time():
    answers = TailAnswers()
    answers.put(BTC, 10, 3, b"a", whole_at=600)
    assert answers.get_whole(BTC, 10, 3, 600) == b"a"
    assert answers.get_whole(BTC, 10, 3, 660) is None and answers.get_whole(BTC, 10, 4, 600) is None
    answers.put(BTC, 10, 4, b"b")
    assert answers.get_whole(BTC, 10, 4, 600) is None and answers.get(BTC, 10, 4) == b"b"
    answers.mark_whole(BTC, 10, 3, 600)  # a mark for an older sequence changes nothing
    assert answers.get_whole(BTC, 10, 4, 600) is None
    answers.mark_whole(BTC, 10, 4, 660)
    assert answers.get_whole(BTC, 10, 4, 660) == b"b"
