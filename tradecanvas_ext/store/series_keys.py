"""SeriesKeys: the tc_series registry rows, SeriesId -> integer series_key (created on first use), cached.

Only SeriesId values come in: strings are parsed at the edges. `_lock` guards the cache dict only and is
never held during I/O (two threads may look the same key up at once; ON CONFLICT makes that harmless).
"""
from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from sqlalchemy import select

from ..domain import SeriesId
from .schema import series as S

if TYPE_CHECKING:
    from .dialect import Dialect


class SeriesKeys:
    def __init__(self, dialect: Dialect):
        self._dialect = dialect
        self._keys: dict[SeriesId, int] = {}
        self._lock = threading.Lock()

    def key(self, sid: SeriesId) -> int:
        if not isinstance(sid, SeriesId):
            raise TypeError(f"the store takes a SeriesId, got {type(sid).__name__} {sid!r}")
        with self._lock:
            found = self._keys.get(sid)
        if found is not None:
            return found
        text_id = str(sid)
        lookup = select(S.c.series_key).where(S.c.series_id == text_id)
        with self._dialect.read() as conn:
            found = conn.execute(lookup).scalar()
        if found is None:
            with self._dialect.write() as conn:  # ON CONFLICT: another process may create it at the same time
                conn.execute(self._dialect.insert(S).values(series_id=text_id, tf_seconds=sid.tf_seconds)
                             .on_conflict_do_nothing(index_elements=["series_id"]))
                found = conn.execute(lookup).scalar_one()
        with self._lock:
            self._keys[sid] = int(found)
        return int(found)

    def known(self) -> list[str]:
        """Every series id the store has a row for, as stored (sorted)."""
        with self._dialect.read() as conn:
            return [r[0] for r in conn.execute(select(S.c.series_id).order_by(S.c.series_id))]

    def ids_of(self, keys: list[int]) -> list[str]:
        """The series ids (as stored, sorted) of `keys`."""
        with self._dialect.read() as conn:
            return [r[0] for r in conn.execute(select(S.c.series_id).where(S.c.series_key.in_(keys))
                                               .order_by(S.c.series_id))]

    @staticmethod
    def all_keys(conn) -> list[int]:
        """Every series key, read in the caller's transaction."""
        return [int(r[0]) for r in conn.execute(select(S.c.series_key))]
