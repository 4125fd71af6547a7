"""Shared fixtures. Network: pytest-socket (pyproject addopts) lets tests reach loopback only."""
from __future__ import annotations

import os

import pytest
from sqlalchemy import create_engine, text

from tradecanvas_ext.store import CandleStore

PG_URL_ENV = "TRADECANVAS_TEST_PG_URL"


def pg_url_or_skip() -> str:
    url = os.environ.get(PG_URL_ENV)
    if not url:
        if os.environ.get("TRADECANVAS_REQUIRE_PG"):
            pytest.fail(f"{PG_URL_ENV} is not set but TRADECANVAS_REQUIRE_PG is: CI must run PostgreSQL tests")
        pytest.skip(f"PostgreSQL not available: set {PG_URL_ENV} (.ci/run starts one)")
    return url


def reset_pg(url: str) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS tc_candles, tc_voids, tc_tracker, tc_series CASCADE"))
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
def store(db_url):
    s = CandleStore(db_url)
    yield s
    s.close()


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'store.sqlite'}"
