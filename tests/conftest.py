"""Shared fixtures. Network: pytest-socket (pyproject addopts) lets tests reach loopback only."""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, make_url, text

from tradecanvas_ext.store import open_store

PG_URL_ENV = "TRADECANVAS_TEST_PG_URL"
REPO = Path(__file__).resolve().parents[1]


_config: pytest.Config | None = None


def pytest_configure(config: pytest.Config) -> None:
    global _config
    _config = config


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """In CI a failure is printed when it happens, not only in the summary at the end: a run cut off by
    its time limit still shows what failed and why."""
    if not report.failed or not os.environ.get("CI") or _config is None:
        return
    if os.environ.get("PYTEST_XDIST_WORKER"):
        return  # the xdist controller prints it
    tr = _config.pluginmanager.get_plugin("terminalreporter")
    if tr is not None:
        tr.write_line("")
        tr.write_sep("!", f"FAILED {report.nodeid} ({report.when}, {report.duration:.1f} s)")
        tr.write_line(report.longreprtext[-6000:])


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Files with slow tests (real bots, killed processes) first, each file's tests in their own order:
    under xdist the long files then start at once and the short ones fill in around them, instead of a
    long file starting last and running on alone."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)  # stable: the rest keeps its order


def wait_for(pred, timeout: float, interval: float = 0.2, what: str = "condition"):
    """Poll `pred` until it returns something true. Other exceptions mean "not yet"; an AssertionError
    inside it (e.g. "the bot process exited") fails at once."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = pred()
        except AssertionError:
            raise
        except Exception as exc:  # not there yet
            last = exc
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")


def subprocess_env(**extra: str) -> dict:
    """The environment for a child process (freqtrade, our CLI) that must import THIS checkout's
    tradecanvas_ext, not whichever one the virtualenv has installed (a worktree, another clone)."""
    # freqtrade logs through rich, which wraps at the terminal's width (80 without one, as in an xdist
    # worker): a log line the tests look for must stay one line
    env = {**os.environ, "COLUMNS": "1000", **extra}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    return env


_worker_db: dict[str, str] = {}


def _worker_database(url: str) -> str:
    """Under pytest-xdist each worker gets a database of its own on the same server (`<db>_<worker>`,
    created on first use): the tests drop and recreate the tc_* tables, which workers sharing one
    database would do under each other's feet."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if not worker:
        return url
    if url not in _worker_db:
        base = make_url(url)
        name = f"{base.database or 'postgres'}_{worker}"
        admin = create_engine(base, isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as conn:  # one worker at a time copies template1
                conn.execute(text("SELECT pg_advisory_lock(7719999)"))
                if conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}).first() is None:
                    conn.execute(text(f'CREATE DATABASE "{name}"'))
        finally:
            admin.dispose()
        _worker_db[url] = base.set(database=name).render_as_string(hide_password=False)
    return _worker_db[url]


def pg_url_or_skip() -> str:
    url = os.environ.get(PG_URL_ENV)
    if not url:
        if os.environ.get("TRADECANVAS_REQUIRE_PG"):
            pytest.fail(f"{PG_URL_ENV} is not set but TRADECANVAS_REQUIRE_PG is: CI must run PostgreSQL tests")
        pytest.skip(f"PostgreSQL not available: set {PG_URL_ENV} (.ci/run starts one)")
    return _worker_database(url)


def reset_pg(url: str) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS tc_candles, tc_voids, tc_tracker, tc_series, tc_coverage, tc_store_state, tc_write_seq, tc_unavailable, tc_reach CASCADE"))
    engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request, tmp_path) -> str:
    """The same store tests run on a real SQLite file and on a real PostgreSQL server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.sqlite'}"
    url = pg_url_or_skip()
    reset_pg(url)
    return url


@pytest.fixture
def storage(db_url):
    """The whole store of `db_url` (candles, tracker rows, leases), closed after the test."""
    s = open_store(db_url, origin="test")
    yield s
    s.close()


@pytest.fixture
def store(storage):
    return storage.candles


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'store.sqlite'}"



# ---- a runtime on a real SQLite file, real ccxt and the emulator on 127.0.0.1 ------------------------------
NOW = 1_700_006_400 + 30  # aligned for every timeframe up to 1d; the 1m candle at NOW - 30 is forming


@pytest.fixture
def clock():
    from tradecanvas_ext.testing import ManualClock

    return ManualClock(NOW)


@pytest.fixture
def glue(clock):
    """The process's bot glue replaced by a fresh one on the test's clock (put back afterwards), so a strategy
    built in the test starts its own runtime and nothing leaks into the next test."""
    from tradecanvas_ext.bot.glue import BotGlue, replace_process_glue

    g = BotGlue(clock=clock)
    old = replace_process_glue(g)
    yield g
    g.shutdown()
    replace_process_glue(old)


@pytest.fixture
def exchange(clock):
    """The exchange emulator on 127.0.0.1 sharing the test's clock."""
    from tradecanvas_ext.testing import ExchangeEmulator

    emu = ExchangeEmulator(seed=1, symbols=("BTC/USDT", "ETH/USDT", "LTC/USDT"), clock=clock)
    emu.start()
    yield emu
    emu.stop()


@pytest.fixture
def make_runtime(tmp_path, clock, exchange):
    """Build and start runtimes (serve=False and no background startup sync unless asked; startup_sync=None:
    the settings decide); all are stopped at teardown."""
    from tradecanvas_ext import Runtime, Settings

    made = []

    def make(serve: bool = False, env: dict | None = None, db_url: str | None = None, sources=None,
             time_bound_s: float | None = None, startup_sync: bool | None = False, **section):
        tc = {"enabled": True, "listen_port": 0, "ccxt_config": exchange.ccxt_config(),
              "ccxt_timeout_ms": 2000, "series": ["binance:spot:BTC/USDT:1m"],
              "db_url": db_url or f"sqlite:///{tmp_path / 'tc.sqlite'}"}
        tc.update(section)
        if tc.get("series"):  # the section is JSON: tests may list SeriesId values
            tc["series"] = [str(s) for s in tc["series"]]
        settings = Settings.from_config({"tradecanvas": tc, "user_data_dir": str(tmp_path)}, env=env or {})
        extra = {} if sources is None else {"sources": sources}
        rt = Runtime(settings, clock=clock, time_bound_s=time_bound_s, **extra)
        rt.start(serve=serve, startup_sync=startup_sync)  # tests run the sync themselves
        made.append(rt)
        return rt

    yield make
    for rt in made:
        rt.stop()
