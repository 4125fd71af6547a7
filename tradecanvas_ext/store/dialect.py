"""Every SQLite / PostgreSQL difference of the store, behind one interface chosen once from the URL
(`dialect_for`, like freqtrade's `get_datahandler` over `IDataHandler`). No other store module branches
on the database; this one holds no data and knows no table but what schema creation needs.

Locks: SQLAlchemy's pool gives each thread its own connection; `fetch_one` takes a driver connection of
its own from `_spare` (a SimpleQueue: one caller holds each connection at a time, no lock of ours). On
SQLite, `SqliteDialect._write_lock` serialises this process's write transactions (held for the whole
transaction, I/O included: that is its job) and `BEGIN IMMEDIATE` + busy_timeout serialise them across
processes on one file (WAL lets readers run alongside). PostgreSQL needs no lock of ours: row locks, a schema-creation advisory lock, and
transaction advisory locks that order the coverage index's read-modify-write: a candle write takes the
store lock shared, then each of its series exclusively in ascending key order; a rebuild / verify takes
the store lock exclusively (so the lock order is always store, then series ascending; no deadlock).
"""
from __future__ import annotations

import queue
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, event, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine, make_url

from ..domain import SeriesId
from . import schema
from .leases import FileLeases, Leases, NoLeases, PostgresLeases
from .listener import NOTIFY_CHANNEL, CandleListener, NoListener, OnWrite, notification_payload
from .series_keys import SeriesKeys

_SCHEMA_LOCK = 7710001  # pg_advisory_xact_lock key: one process creates the tables at a time
_STORE_LOCK = 7710002  # shared by candle writes, exclusive for a coverage rebuild / verify
_SERIES_LOCK = 7711  # pg_advisory_xact_lock(7711, series_key): one writer of a series' coverage at a time


class Dialect(ABC):
    """One database kind: its engine, transactions, upsert construct, leases and notifications."""

    name: str
    shared: bool = True  # other processes can open this database (not an in-memory SQLite)

    def __init__(self, db_url: str, engine: Engine):
        self.url, self.engine = db_url, engine
        self._spare: queue.SimpleQueue = queue.SimpleQueue()  # fetch_one's idle driver connections

    @contextmanager
    def read(self) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            yield conn

    def fetch_one(self, sql: str, params: tuple) -> tuple | None:
        """The first row of ONE statement (`?` placeholders) on a driver connection detached from the pool
        and in autocommit, past SQLAlchemy's statement, transaction and pool handling (checkout, pre-ping,
        the rollback at checkin): a hot one-row read at a fraction of the cost. One statement sees one
        committed state on both databases. A connection that failed is closed, not kept."""
        if self.engine.dialect.paramstyle != "qmark":
            sql = sql.replace("?", "%s")
        try:
            raw = self._spare.get_nowait()
        except queue.Empty:
            raw = self._statement_connection()
        try:
            cur = raw.cursor()
            try:
                cur.execute(sql, params)
                row = cur.fetchone()
            finally:
                cur.close()
        except BaseException:
            raw.close()
            raise
        self._spare.put(raw)
        return row

    def _statement_connection(self):
        """A driver connection set up like the pool's (its connect events ran), then ours alone."""
        proxied = self.engine.raw_connection()
        raw = proxied.dbapi_connection
        proxied.detach()  # the pool forgets it; close() closes it
        self._autocommit(raw)
        return raw

    @abstractmethod
    def _autocommit(self, raw) -> None:
        """Each statement its own transaction on this driver connection (none left open between reads)."""

    @contextmanager
    def snapshot(self) -> Iterator[Connection]:
        """A read whose statements all see one committed state (SQLite's read transaction already
        does: its snapshot is taken at the first read and held until the end)."""
        with self.read() as conn:
            yield conn

    @abstractmethod
    def write(self):
        """A connection in a write transaction, committed on exit (a context manager)."""

    @abstractmethod
    def lock_series(self, conn: Connection, keys: list[int]) -> None:
        """Inside a write transaction, before it reads coverage runs: no other writer of these series
        (in any process) runs until it commits."""

    @abstractmethod
    def lock_store(self, conn: Connection) -> None:
        """Inside a write transaction: no candle write of any process runs until it commits."""

    @abstractmethod
    def insert(self, table):
        """The dialect's INSERT construct (it has `on_conflict_do_update` / `on_conflict_do_nothing`)."""

    def create_schema(self) -> None:
        with self.write() as conn:
            schema.upgrade(conn)

    @abstractmethod
    def notify(self, conn: Connection, sid: SeriesId, first_time: int, last_time: int, origin: str) -> None:
        """Tell other processes about a write, inside its transaction (delivered at commit)."""

    @abstractmethod
    def leases(self, keys: SeriesKeys) -> Leases: ...

    def listener(self, origin: str, on_write: OnWrite) -> CandleListener | NoListener:
        """What hears other processes' writes (a no-op where nobody notifies)."""
        return NoListener()

    def close(self) -> None:
        while True:
            try:
                self._spare.get_nowait().close()
            except queue.Empty:
                break
        self.engine.dispose()


def _sqlite_path(db_url: str) -> str:
    """The database file, or "" for an in-memory database."""
    path = make_url(db_url).database or ""
    return "" if path == ":memory:" else path


class SqliteDialect(Dialect):
    name = "sqlite"

    def __init__(self, db_url: str):
        self.path = _sqlite_path(db_url)
        if self.path:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(db_url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn, _record):
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (below)
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn):
            write = conn.get_execution_options().get("tc_write", False)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

        super().__init__(db_url, engine)
        self.shared = bool(self.path)
        self._write_lock = threading.Lock()

    @contextmanager
    def write(self) -> Iterator[Connection]:
        with self._write_lock, self.engine.connect() as conn:
            conn.execution_options(tc_write=True)
            with conn.begin():
                yield conn

    def _autocommit(self, raw) -> None:
        raw.isolation_level = None  # as every connection of ours (the connect event): sqlite3 opens no BEGIN

    def lock_series(self, conn: Connection, keys: list[int]) -> None:
        pass  # BEGIN IMMEDIATE already holds the file's one write lock

    def lock_store(self, conn: Connection) -> None:
        pass  # the same

    def insert(self, table):
        return sqlite.insert(table)

    def notify(self, conn: Connection, sid: SeriesId, first_time: int, last_time: int, origin: str) -> None:
        pass  # nobody listens on SQLite: other processes on the file see new candles on their next read

    def leases(self, keys: SeriesKeys) -> Leases:
        return FileLeases(f"{self.path}.repair-locks", keys) if self.path else NoLeases()


class PostgresDialect(Dialect):
    name = "postgresql"

    def __init__(self, db_url: str):
        super().__init__(db_url, create_engine(db_url, pool_pre_ping=True, pool_size=10, max_overflow=20))

    def _autocommit(self, raw) -> None:
        raw.autocommit = True

    @contextmanager
    def write(self) -> Iterator[Connection]:
        with self.engine.begin() as conn:
            yield conn

    @contextmanager
    def snapshot(self) -> Iterator[Connection]:
        with self.engine.connect().execution_options(isolation_level="REPEATABLE READ") as conn, conn.begin():
            yield conn

    def lock_series(self, conn: Connection, keys: list[int]) -> None:
        conn.execute(text("SELECT pg_advisory_xact_lock_shared(:k)"), {"k": _STORE_LOCK})
        for k in sorted(set(keys)):  # one order for every writer
            conn.execute(text("SELECT pg_advisory_xact_lock(:ns, :k)"), {"ns": _SERIES_LOCK, "k": k})

    def lock_store(self, conn: Connection) -> None:
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _STORE_LOCK})

    def insert(self, table):
        return postgresql.insert(table)

    def create_schema(self) -> None:
        with self.write() as conn:  # several processes may start at once
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _SCHEMA_LOCK})
            schema.upgrade(conn)

    def notify(self, conn: Connection, sid: SeriesId, first_time: int, last_time: int, origin: str) -> None:
        conn.execute(text("SELECT pg_notify(:ch, :p)"),
                     {"ch": NOTIFY_CHANNEL, "p": notification_payload(sid, first_time, last_time, origin)})

    def leases(self, keys: SeriesKeys) -> Leases:
        return PostgresLeases(self.engine, keys)

    def listener(self, origin: str, on_write: OnWrite) -> CandleListener:
        return CandleListener(self.url, origin, on_write)


_DIALECTS: dict[str, type[SqliteDialect] | type[PostgresDialect]] = {
    "sqlite": SqliteDialect, "postgresql": PostgresDialect}


def dialect_for(db_url: str) -> Dialect:
    """The dialect of `db_url` (its engine opened); ValueError for a database the store does not support."""
    backend = make_url(db_url).get_backend_name()
    if backend not in _DIALECTS:
        raise ValueError(f"db_url: unsupported database {backend!r} (use sqlite or postgresql)")
    return _DIALECTS[backend](db_url)
