"""One process per folder: an exclusive ``filelock`` lock that the OS drops when the process dies.

    with FolderLock(run_dir, ".lock", "{folder} is in use by a running training (pid {pid}); stop it first"):
        ...                                   # or lock = FolderLock(...).acquire(); ...; lock.release()
    holder_pid(run_dir, ".lock")              # "1234" while a process holds it, else None

The holder writes its pid beside the lock (``<name>.pid``): filelock truncates the lock file itself on every try.
"""

from __future__ import annotations

import os
from pathlib import Path

from filelock import FileLock, Timeout

from .errors import UserError


class FolderLock:
    """An exclusive lock on ``folder`` (file ``folder/name``); ``busy`` is the one-line refusal, formatted with
    ``folder`` and ``pid`` (the holder's)."""

    def __init__(self, folder: Path, name: str, busy: str):
        self.folder, self.busy = Path(folder), busy
        self.lock = FileLock(str(self.folder / name))
        self.pid_file = self.folder / f"{name}.pid"

    def acquire(self) -> "FolderLock":
        self.folder.mkdir(parents=True, exist_ok=True)
        try:
            self.lock.acquire(timeout=0)
        except Timeout:
            raise UserError(self.busy.format(folder=self.folder, pid=_read_pid(self.pid_file))) from None
        self.pid_file.write_text(str(os.getpid()))
        return self

    def release(self) -> None:
        if self.lock.is_locked:
            self.pid_file.unlink(missing_ok=True)
            self.lock.release()

    def __enter__(self) -> "FolderLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _read_pid(path: Path) -> str:
    try:
        return path.read_text().strip() or "?"
    except OSError:
        return "?"


def holder_pid(folder: Path, name: str) -> str | None:
    """The pid of the process holding ``folder/name``, or None when no process holds it."""
    path = Path(folder) / name
    if not path.is_file():
        return None
    lock = FileLock(str(path))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return _read_pid(Path(folder) / f"{name}.pid")
    lock.release()
    return None
