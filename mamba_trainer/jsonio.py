"""Reading and writing the JSON files of run folders: atomic writes, tolerant reads. Imports nothing of ours,
so scripts and benches can use it without pulling in torch.

    write_json(run_dir / "run_config.json", config)           # whole or not at all
    read_json(path)                                           # the value; raises on a missing or bad file
    read_json(path, default={})                               # {} for a missing, unreadable or corrupt file
    read_metrics(run_dir)                                     # metrics.jsonl's records, a torn last line skipped
    with atomic_path(out) as tmp: fig.savefig(tmp)            # any writer: tmp replaces out when it returns
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path

__all__ = ["METRICS_FILE", "atomic_path", "read_json", "read_jsonl", "read_metrics", "write_json", "write_text"]

METRICS_FILE = "metrics.jsonl"
_RAISE = object()


@contextmanager
def atomic_path(path: str | Path):
    """A temporary path next to ``path`` (same folder and suffix, hidden) to write to; when the block ends
    without an error it replaces ``path`` in one step, so a reader sees the old file or the new one, never half
    of one. After an error the temporary file is removed and ``path`` is left as it was."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (see ``atomic_path``)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | Path, data, *, indent: int = 2, sort_keys: bool = True, ensure_ascii: bool = True) -> None:
    """Write ``data`` as JSON atomically, ending in a newline; values JSON does not know are written as ``str``."""
    write_text(path, json.dumps(data, indent=indent, sort_keys=sort_keys, ensure_ascii=ensure_ascii, default=str) + "\n")


def read_json(path: str | Path, default=_RAISE):
    """The JSON value in ``path``. Without ``default`` a missing or corrupt file raises (``OSError``,
    ``json.JSONDecodeError``); with it, such a file gives ``default``."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        if default is _RAISE:
            raise
        return default


def read_jsonl(path: str | Path) -> list[dict]:
    """The JSON objects of a JSON-lines file, in order; [] when there is none. Blank lines, lines that are not
    objects, and a line cut short (a killed writer) are skipped."""
    path = Path(path)
    out = []
    for line in path.read_text().splitlines() if path.is_file() else []:
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            out.append(record)
    return out


def read_metrics(run_dir: str | Path) -> list[dict]:
    """The records of a run folder's ``metrics.jsonl`` (see ``read_jsonl``)."""
    return read_jsonl(Path(run_dir) / METRICS_FILE)
