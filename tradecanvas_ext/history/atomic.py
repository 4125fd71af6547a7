"""The one atomic file replacement of this package: a temporary file beside the target (under the folder's
`.tradecanvas/`, so the same file system), fsync, `os.replace`, fsync of the folder. A crash at any point
leaves the old file or the new one, never a torn one (and a scratch folder the next rewrite removes). It
must never write the target in place.
"""
from __future__ import annotations

import fcntl
import os
import shutil
import time
import uuid
from collections.abc import Callable
from pathlib import Path

WORK_FOLDER = ".tradecanvas"  # beside each data file; freqtrade's data handlers never list a dot folder
_TMP_PREFIX = "tmp-"
_LOCK = ".lock"
_NO_LOCK_GRACE_S = 60.0


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
    """`write(scratch_folder)` writes the new content somewhere inside a fresh scratch folder and returns
    that file; it is made durable and renamed over `target` in one step."""
    scratch = work_folder(target) / f"{_TMP_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:12]}"
    scratch.mkdir(parents=True)
    lock = os.open(scratch / _LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)  # held until the scratch is gone: see remove_stale_scratch
        written = write(scratch)
        fsync_path(written)
        os.replace(written, target)
        fsync_path(target.parent)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        os.close(lock)


def write_bytes_atomically(target: Path, data: bytes) -> None:
    def write(scratch: Path) -> Path:
        path = scratch / target.name
        path.write_bytes(data)
        return path

    replace_atomically(target, write)


def remove_stale_scratch(folder: Path) -> list[Path]:
    """Scratch folders a killed process left in `folder/.tradecanvas/`, removed. A writer holds an exclusive
    lock on its scratch's lock file for the whole rewrite, so a folder whose lock can be taken is nobody's."""
    removed = []
    base = folder / WORK_FOLDER
    if not base.is_dir():
        return removed
    for p in base.glob(f"{_TMP_PREFIX}*"):
        if _abandoned(p):
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed


def _abandoned(scratch: Path) -> bool:
    try:
        fd = os.open(scratch / _LOCK, os.O_RDWR)
    except FileNotFoundError:  # killed between mkdir and taking the lock
        try:
            return time.time() - scratch.stat().st_mtime > _NO_LOCK_GRACE_S
        except OSError:
            return False
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)  # releases the lock
