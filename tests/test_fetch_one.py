"""Dialect.fetch_one (the market read's write-sequence check) on its own driver connections: every read sees
the latest commit of any connection, leaves no transaction open between reads, and a connection that
failed is dropped, not reused (SQLite and PostgreSQL)."""
from __future__ import annotations

import pytest
from sqlalchemy import text

from tests.test_recent_windows import batch, fresh_series
from tradecanvas_ext.store import open_store

TF = 60
SEQ = "SELECT seq FROM tc_write_seq WHERE series_key = ?"


@pytest.fixture
def two(db_url):
    """A reader and a writer on one database, as two processes would be (separate engines)."""
    reader, writer = open_store(db_url, origin="reader"), open_store(db_url, origin="writer")
    yield reader, writer
    reader.close()
    writer.close()


def test_each_read_sees_the_latest_commit_of_another_connection(two):
    reader, writer = two
    sid = fresh_series()
    writer.candles.upsert_closed(sid, batch(range(0, 3 * TF, TF)))
    key = reader.candles.series_key(sid)
    seen = [reader.dialect.fetch_one(SEQ, (key,))[0]]
    for k in range(3, 8):  # the same (reused) connection, a new commit each time
        writer.candles.upsert_closed(sid, batch([k * TF]))
        seen.append(reader.dialect.fetch_one(SEQ, (key,))[0])
    assert seen == list(range(seen[0], seen[0] + 6))
    assert reader.candles.write_seq(sid) == seen[-1]


def test_no_transaction_is_left_open_between_reads(two, db_url):
    reader, writer = two
    sid = fresh_series()
    writer.candles.upsert_closed(sid, batch([0]))
    key = reader.candles.series_key(sid)
    reader.dialect.fetch_one(SEQ, (key,))
    if db_url.startswith("sqlite"):
        # a reader holding a snapshot would keep the WAL from being checkpointed whole
        with writer.dialect.engine.connect() as conn:
            busy, log, done = conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").one()
        assert busy == 0 and log == done
    else:
        with writer.dialect.engine.connect() as conn:
            open_tx = conn.execute(text("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                                        " AND state LIKE 'idle in transaction%'")).scalar_one()
        assert open_tx == 0


@pytest.mark.postgres
def test_a_connection_the_server_dropped_is_replaced(two, db_url):
    if db_url.startswith("sqlite"):
        pytest.skip("a SQLite connection has no server to lose")
    reader, writer = two
    sid = fresh_series()
    writer.candles.upsert_closed(sid, batch([0]))
    key = reader.candles.series_key(sid)
    (pid,) = reader.dialect.fetch_one("SELECT pg_backend_pid()", ())
    with writer.dialect.engine.connect() as conn:
        assert conn.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid}).scalar_one()
    import psycopg

    with pytest.raises(psycopg.OperationalError):  # the driver's own: fetch_one is past SQLAlchemy
        reader.dialect.fetch_one(SEQ, (key,))
    assert reader.dialect.fetch_one(SEQ, (key,)) == (reader.candles.write_seq(sid),)
    assert reader.dialect.fetch_one("SELECT pg_backend_pid()", ()) != (pid,)
