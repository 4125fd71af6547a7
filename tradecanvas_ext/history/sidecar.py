"""The side-car of one history file: `.tradecanvas/<file name>.voids` beside it (JSON), holding the voids and
unavailable ranges a repair learned, each with its source and when it was checked. Read back by `data gaps`,
the next `data repair` and `annotate` in backtesting. It must never be named like a data file (a `….json`
would show up in `freqtrade list-data`), and never written in place.
"""
from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ..domain import merge_ranges
from ..store import Void
from .atomic import WORK_FOLDER, write_bytes_atomically

SUFFIX = ".voids"
VERSION = 1


# An inclusive range of candle open times a source vouched for, and when: the store's own record.
Checked = Void


@dataclass(frozen=True)
class Sidecar:
    series_id: str
    voids: tuple[Checked, ...] = ()
    unavailable: tuple[Checked, ...] = ()
    updated_at: float | None = None
    extra: dict = field(default_factory=dict, compare=False)  # keys a newer version wrote, kept as they are

    def to_json(self) -> bytes:
        body = {**self.extra, "version": VERSION, "series_id": self.series_id, "updated_at": self.updated_at,
                "voids": [v.to_dict() for v in self.voids],
                "unavailable": [u.to_dict() for u in self.unavailable]}
        return (json.dumps(body, indent=1) + "\n").encode()


class SidecarError(ValueError):
    """A side-car that is not ours or not readable: reported, never overwritten silently."""


def sidecar_path(data_file: Path) -> Path:
    return data_file.parent / WORK_FOLDER / (data_file.name + SUFFIX)


def load(data_file: Path, series_id: str) -> Sidecar:
    path = sidecar_path(data_file)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return Sidecar(series_id)
    try:
        body = json.loads(raw)
        extra = {k: v for k, v in body.items()
                 if k not in ("version", "series_id", "updated_at", "voids", "unavailable")}
        return Sidecar(str(body.get("series_id") or series_id), _ranges(body.get("voids", [])),
                       _ranges(body.get("unavailable", [])), body.get("updated_at"), extra)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise SidecarError(f"{path}: not a readable side-car ({type(exc).__name__}: {exc}); move it away to "
                           "start afresh") from None


def _ranges(items) -> tuple[Checked, ...]:
    return tuple(sorted((Checked(int(d["start"]), int(d["end"]), str(d["source"]), float(d["checked_at"]))
                         for d in items), key=lambda c: c.start))


def save(data_file: Path, sidecar: Sidecar) -> None:
    path = sidecar_path(data_file)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomically(path, sidecar.to_json())


def with_ranges(old: Iterable[Checked], new: Iterable[tuple[int, int]], source: str, checked_at: float,
                tf: int, drop: Iterable[tuple[int, int]] = ()) -> tuple[Checked, ...]:
    """`old` with `new` ranges recorded (a newer check wins where they overlap) and the `drop` ranges (now
    re-checked or filled) cut out. Ranges of one source that touch are merged."""
    new = merge_ranges(new, tf)
    cut = merge_ranges([*drop, *new], tf)
    kept: list[Checked] = []
    for c in old:
        kept.extend(Checked(s, e, c.source, c.checked_at) for s, e in _subtract(c.start, c.end, cut, tf))
    kept.extend(Checked(s, e, source, checked_at) for s, e in new)
    kept.sort(key=lambda c: c.start)
    out: list[Checked] = []
    for c in kept:
        if out and out[-1].source == c.source and out[-1].checked_at == c.checked_at and c.start <= out[-1].end + tf:
            out[-1] = Checked(out[-1].start, max(out[-1].end, c.end), c.source, c.checked_at)
        else:
            out.append(c)
    return tuple(out)


def _subtract(start: int, end: int, cut: list[tuple[int, int]], tf: int) -> list[tuple[int, int]]:
    pieces, cur = [], start
    for s, e in cut:
        if e < cur or s > end:
            continue
        if s > cur:
            pieces.append((cur, s - tf))
        cur = max(cur, e + tf)
        if cur > end:
            break
    if cur <= end:
        pieces.append((cur, end))
    return pieces


def voids_over(data_file: Path, first: int, last: int) -> list[tuple[int, int]]:
    """The recorded voids of a data file that reach into [first, last] (none when it has no side-car or an
    unreadable one): what `annotate` marks in backtesting."""
    try:
        side = load(data_file, "")
    except SidecarError:
        return []
    return [(v.start, v.end) for v in side.voids if v.end >= first and v.start <= last]
