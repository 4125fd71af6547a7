"""TrackerRows: the persisted tracker row of each series (tc_tracker), read and upserted field by field.

The backfill tracker owns what the fields mean; this only stores them. Locks: none of its own; each put
is one atomic write transaction of the dialect, and the tracker serialises its read-modify-write.
"""
from __future__ import annotations

import logging

from sqlalchemy import select

from ..domain import SeriesId
from .dialect import Dialect
from .schema import series as S
from .schema import tracker as T
from .series_keys import SeriesKeys

log = logging.getLogger(__name__)

_FIELDS = frozenset(c.name for c in T.columns) - {"series_key"}


class TrackerRows:
    def __init__(self, dialect: Dialect, keys: SeriesKeys):
        self._dialect, self._keys = dialect, keys

    def tracker_get(self, sid: SeriesId) -> dict | None:
        key = self._keys.key(sid)
        with self._dialect.read() as conn:
            row = conn.execute(select(T).where(T.c.series_key == key)).mappings().first()
        if row is None:
            return None
        out = dict(row)
        out.pop("series_key", None)
        return out

    def tracker_put(self, sid: SeriesId, values: dict) -> None:
        """Upsert the given fields of one series' tracker row."""
        key = self._keys.key(sid)
        bad = set(values) - _FIELDS
        if bad:
            raise ValueError(f"tracker: unknown field(s) {sorted(bad)}")
        stmt = self._dialect.insert(T).values(series_key=key, **values)
        if values:
            stmt = stmt.on_conflict_do_update(index_elements=["series_key"], set_=values)
        else:
            stmt = stmt.on_conflict_do_nothing(index_elements=["series_key"])
        with self._dialect.write() as conn:
            conn.execute(stmt)

    def tracker_all(self) -> dict[SeriesId, dict]:
        """Every tracker row by series; a stored id that no longer parses is logged and left out."""
        q = select(S.c.series_id, T).join(T, T.c.series_key == S.c.series_key)
        with self._dialect.read() as conn:
            rows = conn.execute(q).mappings().all()
        out = {}
        for r in rows:
            d = dict(r)
            text_id = d.pop("series_id")
            d.pop("series_key", None)
            try:
                out[SeriesId.parse(text_id)] = d
            except ValueError as exc:
                log.warning("tracker row of %r skipped: %s", text_id, exc)
        return out
