"""One training per run folder: its lock, and who holds it."""

from __future__ import annotations

from pathlib import Path

__all__ = ["LOCK_FILE", "RunLock", "running_pid"]

LOCK_FILE = ".lock"


def RunLock(run_dir: Path):  # noqa: N802  (kept as the name callers know)
    """An exclusive lock on a run folder, held for the life of the process (released by the OS if it dies)."""
    from ..locks import FolderLock

    return FolderLock(run_dir, LOCK_FILE, "{folder} is in use by a running training (pid {pid}); stop it first "
                                          "(train_background.sh --stop) or choose another --output_dir")


def running_pid(run_dir: Path) -> str | None:
    """The pid of the training that holds ``run_dir``'s lock, or None when no process holds it."""
    from ..locks import holder_pid

    return holder_pid(run_dir, LOCK_FILE)
