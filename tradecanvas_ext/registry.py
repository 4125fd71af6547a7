"""SeriesRegistry: which series this runtime keeps, active or inactive, with a change notification.

Active series are ingested, repaired, served and counted in the overall health; inactive ones (a pair that
left a dynamic whitelist) keep their stored history and stay listed, but are not repaired or counted.
`_lock` guards the two ordered sets only; listeners are called after it is released, on the caller's
thread, so a listener may read the registry (or take its own locks) freely.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from .domain import SeriesId

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RegistryChange:
    """What one call changed: series that became active, and series that became inactive."""

    activated: tuple[SeriesId, ...] = ()
    retired: tuple[SeriesId, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.activated or self.retired)


Listener = Callable[[RegistryChange], None]


class SeriesRegistry:
    def __init__(self, active: Iterable[SeriesId] = ()):
        self._lock = threading.Lock()
        self._active: dict[SeriesId, None] = {}  # insertion-ordered sets
        self._inactive: dict[SeriesId, None] = {}
        self._listeners: list[Listener] = []
        for sid in active:
            self._active[_checked(sid)] = None

    # ---- reads ------------------------------------------------------------------------------------
    def active(self) -> tuple[SeriesId, ...]:
        with self._lock:
            return tuple(self._active)

    def inactive(self) -> tuple[SeriesId, ...]:
        with self._lock:
            return tuple(self._inactive)

    def known(self) -> tuple[SeriesId, ...]:
        """Active series first, then inactive ones, each in the order they joined."""
        with self._lock:
            return (*self._active, *self._inactive)

    def is_active(self, sid: SeriesId) -> bool:
        with self._lock:
            return sid in self._active

    def is_known(self, sid: SeriesId) -> bool:
        with self._lock:
            return sid in self._active or sid in self._inactive

    def __len__(self) -> int:
        with self._lock:
            return len(self._active)

    # ---- changes ----------------------------------------------------------------------------------
    def register(self, series: Iterable[SeriesId]) -> RegistryChange:
        """Make these series active (an inactive one is reactivated); others are left as they are."""
        wanted = [_checked(s) for s in series]
        with self._lock:
            change = RegistryChange(activated=self._activate(wanted))
        return self._notify(change)

    def retire(self, series: Iterable[SeriesId]) -> RegistryChange:
        """Make these series inactive (kept and listed, not repaired or counted)."""
        gone = [_checked(s) for s in series]
        with self._lock:
            change = RegistryChange(retired=self._deactivate(gone))
        return self._notify(change)

    def replace(self, series: Iterable[SeriesId]) -> RegistryChange:
        """Make exactly these series active; every other known series becomes inactive."""
        wanted = list(dict.fromkeys(_checked(s) for s in series))
        keep = set(wanted)
        with self._lock:
            retired = self._deactivate([s for s in self._active if s not in keep])
            change = RegistryChange(activated=self._activate(wanted), retired=retired)
        return self._notify(change)

    def _activate(self, series: list[SeriesId]) -> tuple[SeriesId, ...]:
        """Under `_lock`: make these active; returns the ones that were not."""
        added = []
        for sid in series:
            if sid not in self._active:
                self._inactive.pop(sid, None)
                self._active[sid] = None
                added.append(sid)
        return tuple(added)

    def _deactivate(self, series: list[SeriesId]) -> tuple[SeriesId, ...]:
        """Under `_lock`: make these inactive; returns the ones that were active."""
        retired = []
        for sid in series:
            if sid in self._active:
                del self._active[sid]
                self._inactive[sid] = None
                retired.append(sid)
        return tuple(retired)

    def add_listener(self, listener: Listener) -> Callable[[], None]:
        """Call `listener(change)` after every change; returns a function that removes it."""
        with self._lock:
            self._listeners.append(listener)

        def remove() -> None:
            with self._lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)

        return remove

    def _notify(self, change: RegistryChange) -> RegistryChange:
        if not change:
            return change
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            try:
                listener(change)
            except Exception:  # one listener's bug never stops the others, nor the caller
                log.exception("a series registry listener failed")
        return change


def _checked(sid: SeriesId) -> SeriesId:
    if not isinstance(sid, SeriesId):
        raise TypeError(f"the series registry takes SeriesId values, got {type(sid).__name__}")
    return sid
