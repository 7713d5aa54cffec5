"""Integrity of ``checkpoint-N`` folders: which ones were written whole, and setting aside the ones that were not."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

from .layout import CHECKPOINT_RE, TRAINER_STATE

__all__ = ["checkpoint_problem", "checkpoints", "complete_checkpoints", "set_aside_incomplete_checkpoints"]

#: Keys a resumable trainer_state.json must hold (HF Trainer reads them on resume).
_STATE_KEYS = ("global_step", "log_history")
#: Files written as zip archives by torch.save: a cut-short one lacks its central directory (kept at the end).
_TORCH_FILES = ("optimizer.pt", "scheduler.pt", "rng_state.pth", "training_args.bin")


def checkpoint_problem(folder: Path) -> str | None:
    """Why ``checkpoint-N`` cannot be resumed from (None: it was written whole).

    The HF Trainer writes the weights, optimizer, scheduler and RNG state, then ``trainer_state.json`` last, so
    a missing or unreadable state file means the save was cut short; a file torn by a kill or a full disk is
    caught by reading each file's own framing (zip directory, safetensors header), not by loading it."""
    folder = Path(folder)
    state_path = folder / TRAINER_STATE
    if not state_path.is_file():
        return f"no {TRAINER_STATE} (its save was cut short)"
    try:
        state = json.loads(state_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return f"{TRAINER_STATE} is not valid JSON"
    missing = [k for k in _STATE_KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        return f"{TRAINER_STATE} lacks {', '.join(missing)}"
    match = CHECKPOINT_RE.match(folder.name)
    if match and state["global_step"] != int(match.group(1)):
        return f"{TRAINER_STATE} says step {state['global_step']}, not {match.group(1)}"
    weights = sorted(folder.glob("*.safetensors"))
    if not weights:
        return "no model weights (*.safetensors)"
    for path in weights:
        problem = _safetensors_problem(path)
        if problem:
            return f"{path.name} {problem}"
    for name in _TORCH_FILES:
        path = folder / name
        if name == "optimizer.pt" and not path.is_file():
            return "no optimizer.pt"
        if path.is_file() and not zipfile.is_zipfile(path):
            return f"{name} is truncated or corrupt"
    return None


def _safetensors_problem(path: Path) -> str | None:
    """None when safetensors opens the file: its header reads and the data it describes is all there."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="np"):
            return None
    except (OSError, SafetensorError):
        return "is truncated or corrupt"


def checkpoints(run_dir: Path) -> list[Path]:
    """Every ``checkpoint-N`` folder, oldest (lowest N) first."""
    found = []
    for child in Path(run_dir).iterdir() if Path(run_dir).is_dir() else []:
        match = CHECKPOINT_RE.match(child.name)
        if match and child.is_dir():
            found.append((int(match.group(1)), child))
    return [path for _, path in sorted(found)]


def complete_checkpoints(run_dir: Path) -> list[Path]:
    """``checkpoint-N`` folders that were written whole, oldest first."""
    return [path for path in checkpoints(run_dir) if checkpoint_problem(path) is None]


def set_aside_incomplete_checkpoints(run_dir: Path) -> list[str]:
    """Rename the ``checkpoint-N`` folders a save left incomplete to ``checkpoint-N.incomplete`` so nothing
    (the Trainer's rotation included) takes them for checkpoints; returns ``"checkpoint-N: why"`` lines."""
    moved = []
    for child in checkpoints(run_dir):
        problem = checkpoint_problem(child)
        if problem is None:
            continue
        target = child.with_name(child.name + ".incomplete")
        if target.exists():
            shutil.rmtree(target)
        child.rename(target)
        moved.append(f"{child.name}: {problem}")
    return moved
