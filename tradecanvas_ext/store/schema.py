"""Table definitions shared by SQLite and PostgreSQL (SQLAlchemy Core)."""
from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

series = Table(
    "tc_series", metadata,
    Column("series_key", Integer, primary_key=True, autoincrement=True),
    Column("series_id", String(200), nullable=False),
    Column("tf_seconds", Integer, nullable=False),
    UniqueConstraint("series_id", name="uq_tc_series_id"),
)

candles = Table(
    "tc_candles", metadata,
    Column("series_key", Integer, primary_key=True),
    Column("candle_time", BigInteger, primary_key=True),
    Column("open", Float, nullable=False),
    Column("high", Float, nullable=False),
    Column("low", Float, nullable=False),
    Column("close", Float, nullable=False),
    Column("volume", Float, nullable=False),
    sqlite_with_rowid=False,
)

voids = Table(
    "tc_voids", metadata,
    Column("series_key", Integer, primary_key=True),
    Column("start_time", BigInteger, primary_key=True),
    Column("end_time", BigInteger, nullable=False),
    Column("source", String(50), nullable=False),
    Column("checked_at", Float, nullable=False),
)

tracker = Table(
    "tc_tracker", metadata,
    Column("series_key", Integer, primary_key=True),
    Column("state", String(20), nullable=False, server_default="idle"),
    Column("run_id", String(64)),
    Column("owner", String(200)),
    Column("started_at", Float),
    Column("updated_at", Float),
    Column("finished_at", Float),
    Column("start_missing_seconds", BigInteger),
    Column("start_missing_candles", BigInteger),
    Column("current_missing_seconds", BigInteger),
    Column("current_missing_candles", BigInteger),
    Column("progress_pct", Float),
    Column("ran_levels", Integer),
    Column("reason", Text),
    Column("note", Text),
    Column("error", Text),
)

# The coverage index: the runs of consecutive candles of each series (run_start..run_end inclusive, both
# stored candle times), maintained in every candle write's transaction (store/coverage.py).
coverage = Table(
    "tc_coverage", metadata,
    Column("series_key", Integer, primary_key=True),
    Column("run_start", BigInteger, primary_key=True),
    Column("run_end", BigInteger, nullable=False),
    sqlite_with_rowid=False,
)

# One row per store-wide marker; ("coverage", "ok") says tc_coverage matches tc_candles. A store without
# it (older, or marked after a failed verify) has its index rebuilt on open.
store_state = Table(
    "tc_store_state", metadata,
    Column("name", String(50), primary_key=True),
    Column("value", String(200), nullable=False),
)

# Each series' write sequence, bumped by every candle write transaction (store/write_seq.py): how a
# process tells that another one changed a series whose recent window it holds in memory.
write_seq = Table(
    "tc_write_seq", metadata,
    Column("series_key", Integer, primary_key=True),
    Column("seq", BigInteger, nullable=False),
)
