"""Cross-process repair leases: one repair of a series at a time across every process on one store.

PostgreSQL: a session advisory lock held on a dedicated connection; SQLite file: a POSIX record lock on a
byte of a lock file beside the database; in-memory SQLite: nothing (no other process can open it). The
first two vanish when the holding process dies (connection or descriptor closed by the OS), so a killed
holder never blocks the others. In-process callers are already serialised by the backfill service's
per-series lock; these only arbitrate between processes. Locks: `FileLeases._lock` guards the descriptor
only (never held while waiting for a lease); a lease is never held across another lease.
"""
from __future__ import annotations

import fcntl
import os
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext

from sqlalchemy import text
from sqlalchemy.engine import Engine

from ..domain import SeriesId
from .series_keys import SeriesKeys

_LOCK_NAMESPACE = 7710  # first key of pg_advisory_lock(int, int): ours
_POLL_S = 0.05


class LeaseTimeout(TimeoutError):
    pass


def _wait_for(try_once: Callable[[], bool], series_key: int, timeout_s: float) -> None:
    """Poll `try_once` until it takes the lease or `timeout_s` has passed (LeaseTimeout)."""
    deadline = time.monotonic() + timeout_s
    while not try_once():
        if time.monotonic() >= deadline:
            raise LeaseTimeout(f"another process holds the repair lease of series {series_key}")
        time.sleep(_POLL_S)


class Leases:
    """The interface: `repair_lease(sid, timeout_s)` is held while this process repairs `sid`."""

    def repair_lease(self, series_id: SeriesId, timeout_s: float) -> AbstractContextManager[None]:
        return nullcontext()

    def close(self) -> None:
        """Release what the leases hold open (a no-op unless a lock file is open)."""


class NoLeases(Leases):
    """In-memory SQLite: the database lives in this process only, so there is nobody to arbitrate with."""


class PostgresLeases(Leases):
    def __init__(self, engine: Engine, keys: SeriesKeys):
        self._engine, self._keys = engine, keys

    @contextmanager
    def repair_lease(self, series_id: SeriesId, timeout_s: float) -> Iterator[None]:
        key = self._keys.key(series_id)
        args = {"ns": _LOCK_NAMESPACE, "k": key}
        with self._engine.connect() as conn:

            def try_once() -> bool:
                got = conn.execute(text("SELECT pg_try_advisory_lock(:ns, :k)"), args).scalar()
                conn.commit()
                return bool(got)

            _wait_for(try_once, key, timeout_s)
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:ns, :k)"), args)
                conn.commit()


class FileLeases(Leases):
    """Byte-range locks on one file. POSIX locks belong to the process, so the file stays open for the
    store's life (closing any descriptor of it would drop them all); `_lock` guards the descriptor."""

    def __init__(self, path: str, keys: SeriesKeys):
        self._path, self._keys = path, keys
        self._fd: int | None = None
        self._lock = threading.Lock()

    def _descriptor(self) -> int:
        with self._lock:
            if self._fd is None:
                self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o644)
            return self._fd

    @contextmanager
    def repair_lease(self, series_id: SeriesId, timeout_s: float) -> Iterator[None]:
        key = self._keys.key(series_id)
        fd = self._descriptor()
        offset = zlib.crc32(str(key).encode()) % (1 << 30)

        def try_once() -> bool:
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, offset)
            except OSError:
                return False
            return True

        _wait_for(try_once, key, timeout_s)
        try:
            yield
        finally:
            fcntl.lockf(fd, fcntl.LOCK_UN, 1, offset)

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
