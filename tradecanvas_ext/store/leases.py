"""Cross-process repair leases: one repair of a series at a time across every process on one store.

PostgreSQL: a session advisory lock held on a dedicated connection; SQLite: a POSIX record lock on a
byte of a lock file beside the database. Both vanish when the holding process dies (connection or file
descriptor closed by the OS), so a killed holder never blocks the others. In-process callers are already
serialised by the backfill service's per-series lock; these only arbitrate between processes.
"""
from __future__ import annotations

import fcntl
import os
import threading
import time
import zlib
from contextlib import contextmanager

from sqlalchemy import text

_LOCK_NAMESPACE = 7710  # first key of pg_advisory_lock(int, int): ours


class LeaseTimeout(TimeoutError):
    pass


class PostgresLeases:
    def __init__(self, engine):
        self._engine = engine

    @contextmanager
    def hold(self, series_key: int, timeout_s: float, poll_s: float = 0.05):
        conn = self._engine.connect()
        try:
            deadline = time.monotonic() + timeout_s
            while True:
                got = conn.execute(text("SELECT pg_try_advisory_lock(:ns, :k)"),
                                   {"ns": _LOCK_NAMESPACE, "k": series_key}).scalar()
                conn.commit()
                if got:
                    break
                if time.monotonic() >= deadline:
                    raise LeaseTimeout(f"another process holds the repair lease of series {series_key}")
                time.sleep(poll_s)
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:ns, :k)"), {"ns": _LOCK_NAMESPACE, "k": series_key})
                conn.commit()
        finally:
            conn.close()


class FileLeases:
    """Byte-range locks on one file. POSIX locks belong to the process, so the file stays open for the
    store's life (closing any descriptor of it would drop them all); `_lock` guards the descriptor."""

    def __init__(self, path: str):
        self._path = path
        self._fd: int | None = None
        self._lock = threading.Lock()

    def _descriptor(self) -> int:
        with self._lock:
            if self._fd is None:
                self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o644)
            return self._fd

    @contextmanager
    def hold(self, series_key: int, timeout_s: float, poll_s: float = 0.05):
        fd = self._descriptor()
        offset = zlib.crc32(str(series_key).encode()) % (1 << 30)
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, offset)
                break
            except OSError:
                if time.monotonic() >= deadline:
                    raise LeaseTimeout(f"another process holds the repair lease of series {series_key}") from None
                time.sleep(poll_s)
        try:
            yield
        finally:
            fcntl.lockf(fd, fcntl.LOCK_UN, 1, offset)

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
