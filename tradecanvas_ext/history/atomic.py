"""The one atomic file replacement of this package: a temporary file beside the target (under the folder's
`.tradecanvas/`, so the same file system), fsync, `os.replace`, fsync of the folder. A crash at any point
leaves the old file or the new one, never a torn one. It must never write the target in place.
"""
from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

WORK_FOLDER = ".tradecanvas"  # beside each data file; freqtrade's data handlers never list a dot folder
_TMP_PREFIX = "tmp-"


def work_folder(target: Path) -> Path:
    """Where a target's scratch goes: its folder's `.tradecanvas/` (a side-car already lives there)."""
    return target.parent if target.parent.name == WORK_FOLDER else target.parent / WORK_FOLDER


def fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_atomically(target: Path, write: Callable[[Path], Path]) -> None:
    """`write(scratch_folder)` writes the new content somewhere inside the empty scratch folder and returns
    that file; it is made durable and renamed over `target` in one step."""
    scratch = work_folder(target) / f"{_TMP_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:12]}"
    scratch.mkdir(parents=True)
    try:
        written = write(scratch)
        fsync_path(written)
        os.replace(written, target)
        fsync_path(target.parent)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def write_bytes_atomically(target: Path, data: bytes) -> None:
    def write(scratch: Path) -> Path:
        path = scratch / target.name
        path.write_bytes(data)
        return path

    replace_atomically(target, write)


def remove_stale_scratch(folder: Path) -> list[Path]:
    """Scratch folders a killed process left in `folder/.tradecanvas/` (its pid no longer runs); removed."""
    removed = []
    base = folder / WORK_FOLDER
    if not base.is_dir():
        return removed
    for p in base.glob(f"{_TMP_PREFIX}*"):
        try:
            pid = int(p.name[len(_TMP_PREFIX):].split("-", 1)[0])
        except ValueError:
            continue
        if pid != os.getpid() and not _running(pid):
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
