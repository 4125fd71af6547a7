"""A history file is rewritten atomically: SIGKILL at random points of a rewrite (many times) leaves the old
file or the new one, loadable, never torn; a `data repair` killed at random points is finished by the next.
"""
from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
from freqtrade.data.history.datahandlers import get_datahandler
from freqtrade.enums import CandleType

from tests.conftest import REPO, subprocess_env, wait_for
from tests.history_frames import frames
from tests.historykit import TRADECANVAS, secs, tree
from tradecanvas_ext.history.atomic import WORK_FOLDER
from tradecanvas_ext.history.files import HistoryFile, write_frame
from tradecanvas_ext.testing import ExchangeEmulator

KILLS = 15
ROWS = 150_000


def same(df: pd.DataFrame, want: pd.DataFrame) -> bool:
    return len(df) == len(want) and (secs(df).to_numpy() == secs(want).to_numpy()).all() and all(
        (df[c].to_numpy() == want[c].to_numpy()).all() for c in ("open", "high", "low", "close", "volume"))


@pytest.mark.parametrize("data_format", ["feather", pytest.param("jsongz", marks=pytest.mark.slow)])
def test_sigkill_in_the_middle_of_rewrites_leaves_the_old_or_the_new_file(tmp_path, data_format):
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    f = HistoryFile(tmp_path, data_format, "BTC/USDT", "1m", "spot", "binance")
    handler = get_datahandler(tmp_path, data_format)

    def load():
        return handler.ohlcv_load("BTC/USDT", "1m", CandleType.SPOT, fill_missing=False, warn_no_data=False)

    mem_a, mem_b = frames(ROWS)
    write_frame(f, mem_b)
    b = load()  # each version as the format stores it (json keeps 10 decimals)
    write_frame(f, mem_a)
    a = load()
    seen, mid_rewrite = {"old": 0, "new": 0}, 0
    for _ in range(KILLS):
        proc = subprocess.Popen([sys.executable, "-m", "tests.history_writer", str(tmp_path), data_format, str(ROWS)],
                                stdout=subprocess.PIPE, text=True, env=subprocess_env(), cwd=REPO)
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0, 1.5))
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        proc.stdout.close()
        mid_rewrite += bool(list((tmp_path / WORK_FOLDER).glob("tmp-*")))  # killed inside replace_atomically
        df = load()
        if same(df, a):
            seen["old"] += 1
        else:
            assert same(df, b), f"torn file after a SIGKILL (seed {seed}): {len(df)} rows"
            seen["new"] += 1
    assert mid_rewrite >= 1, f"no kill landed inside a rewrite (seed {seed}): the test proved nothing"
    write_frame(f, mem_a)  # the next write clears what the killed ones left
    assert list((tmp_path / WORK_FOLDER).glob("tmp-*")) == []
    assert [p.name for p in tmp_path.iterdir() if p.is_file()] == [f.path.name]
    print(f"\n[kills] seed {seed}: {seen}, {mid_rewrite} inside a rewrite")


def emulator_files(tmp_path, emu, holes_every: int, hours: int = 96) -> tuple[dict, list[int], object]:
    """Two 1m files of the last `hours` from the emulator, one-candle holes cut every `holes_every` rows, and
    a config pointing the repair at the emulator (Binance: a page is 1000 candles, holes that fit in one
    share a request)."""
    datadir = tmp_path / "user_data" / "data" / "binance"
    datadir.mkdir(parents=True)
    handler = get_datahandler(datadir, "feather")
    end = int(time.time() // 3600) * 3600 - 3600
    full = {}
    drop: list[int] = []
    for pair in ("BTC/USDT", "ETH/USDT"):
        rows = emu.candles(pair, "1m", end - hours * 3600, end)
        df = pd.DataFrame(rows, columns=["t", "open", "high", "low", "close", "volume"])
        df.insert(0, "date", pd.to_datetime(df.pop("t"), unit="s", utc=True))
        full[pair] = df
        drop = [i for i in range(5, len(df) - 5) if i % holes_every == 0]
        handler.ohlcv_store(pair, "1m", df.drop(index=drop).reset_index(drop=True), CandleType.SPOT)
    cfg = json.loads((REPO / "config.json").read_text())
    cfg["exchange"]["ccxt_config"] = emu.ccxt_config()
    cfg["user_data_dir"] = str(tmp_path / "user_data")
    cfg["tradecanvas"].update({"ccxt_config": emu.ccxt_config(), "db_url": f"sqlite:///{tmp_path / 'tc.sqlite'}"})
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    return full, drop, handler


def default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # a suite started without job control ignores SIGINT


@pytest.fixture
def emu():
    e = ExchangeEmulator(seed=5, symbols=("BTC/USDT", "ETH/USDT")).start()
    yield e
    e.stop()


def test_a_repair_killed_at_random_points_is_finished_by_the_next(tmp_path, emu):
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    full, drop, handler = emulator_files(tmp_path, emu, holes_every=97)  # 6 fetch calls (pages) per file
    datadir = tmp_path / "user_data" / "data" / "binance"
    cmd = [TRADECANVAS, "data", "repair", "--config", str(tmp_path / "config.json")]
    emu.faults.slow(0.15, n=None)
    for _ in range(3):
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=subprocess_env(),
                                cwd=tmp_path)
        time.sleep(rng.uniform(2.0, 7.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        for pair in full:  # loadable, never torn: each file the cut one or a repaired one
            df = handler.ohlcv_load(pair, "1m", CandleType.SPOT, fill_missing=False, warn_no_data=False)
            assert df["date"].is_unique and len(df) in (len(full[pair]) - len(drop), len(full[pair])), seed
    emu.faults.clear()
    done = subprocess.run(cmd + ["--json"], capture_output=True, text=True, timeout=180, env=subprocess_env(),
                          cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    for pair, want in full.items():
        got = handler.ohlcv_load(pair, "1m", CandleType.SPOT, fill_missing=False, warn_no_data=False)
        assert same(got, want), pair
    assert not [p for p in tree(datadir) if "tmp-" in p]


def test_ctrl_c_stops_between_requests_and_writes_what_was_fetched(tmp_path, emu):
    full, drop, handler = emulator_files(tmp_path, emu, holes_every=1100)  # 5 holes, one page each
    emu.faults.slow(0.2, n=None)
    cmd = [TRADECANVAS, "data", "repair", "--config", str(tmp_path / "config.json"), "--json"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=subprocess_env(),
                            cwd=tmp_path, preexec_fn=default_sigint)
    wait_for(lambda: emu.request_count("klines") >= 2, 60, interval=0.02, what="the repair's first requests")
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    doc = json.loads(out)
    assert doc["interrupted"] and doc["files"]
    first = doc["files"][0]
    assert first["interrupted"] and 0 < first["filled"]["ccxt"] < len(drop)
    got = handler.ohlcv_load("BTC/USDT", "1m", CandleType.SPOT, fill_missing=False, warn_no_data=False)
    assert len(got) == len(full["BTC/USDT"]) - len(drop) + first["filled"]["ccxt"]  # what was fetched is written
    emu.faults.clear()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=subprocess_env(), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    for pair, want in full.items():
        assert same(handler.ohlcv_load(pair, "1m", CandleType.SPOT, fill_missing=False, warn_no_data=False), want)


def test_only_abandoned_scratch_is_removed(tmp_path):
    """A scratch folder whose writer still holds its lock is kept; one nobody holds is removed."""
    import fcntl
    import os

    from tradecanvas_ext.history.atomic import remove_stale_scratch

    base = tmp_path / WORK_FOLDER
    live, dead = base / "tmp-1-live", base / "tmp-2-dead"
    for p in (live, dead):
        p.mkdir(parents=True)
        (p / ".lock").touch()
        (p / "BTC_USDT-1m.feather").write_bytes(b"partial")
    fd = os.open(live / ".lock", os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        assert remove_stale_scratch(tmp_path) == [dead]
        assert live.is_dir() and not dead.exists()
    finally:
        os.close(fd)
    assert remove_stale_scratch(tmp_path) == [live]
