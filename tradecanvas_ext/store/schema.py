"""Table definitions shared by SQLite and PostgreSQL (SQLAlchemy Core), and the upgrade of an older store."""
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
    inspect,
    update,
)
from sqlalchemy.engine import Connection

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

def _range_table(name: str) -> Table:
    """Inclusive [start_time, end_time] ranges of one series, with the source and when it was checked."""
    return Table(
        name, metadata,
        Column("series_key", Integer, primary_key=True),
        Column("start_time", BigInteger, primary_key=True),
        Column("end_time", BigInteger, nullable=False),
        Column("source", String(50), nullable=False),
        Column("checked_at", Float, nullable=False),
    )


voids = _range_table("tc_voids")
# Ranges older than what the exchange serves (its history reach): never voids; re-checked like them.
unavailable = _range_table("tc_unavailable")

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

# The history reach of each exchange, market and timeframe that an answer showed (latest N candles).
reach = Table(
    "tc_reach", metadata,
    Column("exchange", String(64), primary_key=True),
    Column("market", String(16), primary_key=True),
    Column("timeframe", String(16), primary_key=True),
    Column("candles", BigInteger, nullable=False),
    Column("learned_at", Float, nullable=False),
)


def upgrade(conn: Connection) -> None:
    """Create what is missing, keeping every row. A store from before the history reach (it has tc_voids but
    no tc_unavailable) may hold voids recorded from a short or empty exchange page, which proves nothing:
    they are marked unchecked (checked_at 0), so the first repair that passes over them asks the exchange
    again and keeps only what the new answers prove (contract section 5)."""
    present = set(inspect(conn).get_table_names())
    metadata.create_all(conn, checkfirst=True)
    if voids.name in present and unavailable.name not in present:
        conn.execute(update(voids).where(voids.c.source == "ccxt").values(checked_at=0.0))


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
