"""Run directories: naming, locking, resume resolution and the self-describing files inside.

A run directory is ``checkpoints/<run_name or timestamp>/`` (see docs/architecture.md for its files). Reports,
evaluations and resumes read it alone, so everything needed to understand a run is written here.
"""

from __future__ import annotations

import fcntl
import json
import os
import platform
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from .errors import UserError

RUN_CONFIG = "run_config.json"
OPTIMIZER_FILE = "optimizer.json"
ENVIRONMENT_FILE = "environment.json"
METRICS_FILE = "metrics.jsonl"
FINAL_DIR = "final"
TRAINER_STATE = "trainer_state.json"  # written last by the HF Trainer: its presence marks a whole checkpoint
_CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")


def default_run_name(model_size: str, optimizer: str, root: Path) -> str:
    stamp = time.strftime("%Y%m%d_%H%M%S")
    name = f"{model_size}_{optimizer}_{stamp}"
    suffix = 1
    while (root / name).exists():  # two launches in the same second still get separate folders
        suffix += 1
        name = f"{model_size}_{optimizer}_{stamp}_{suffix}"
    return name


def complete_checkpoints(run_dir: Path) -> list[Path]:
    """``checkpoint-N`` folders that were written whole, oldest first."""
    found = []
    for child in Path(run_dir).iterdir() if Path(run_dir).is_dir() else []:
        match = _CHECKPOINT_RE.match(child.name)
        if match and child.is_dir() and (child / TRAINER_STATE).is_file():
            found.append((int(match.group(1)), child))
    return [path for _, path in sorted(found)]


def set_aside_incomplete_checkpoints(run_dir: Path) -> list[str]:
    """Rename ``checkpoint-N`` folders without trainer_state.json (a save cut short) so nothing resumes from them."""
    moved = []
    for child in sorted(Path(run_dir).glob("checkpoint-*")):
        if _CHECKPOINT_RE.match(child.name) and child.is_dir() and not (child / TRAINER_STATE).is_file():
            target = child.with_name(child.name + ".incomplete")
            if target.exists():
                shutil.rmtree(target)
            child.rename(target)
            moved.append(child.name)
    return moved


def is_run_dir(path: Path) -> bool:
    return (Path(path) / RUN_CONFIG).is_file()


def read_json(path: Path) -> dict:
    with open(path) as handle:
        return json.load(handle)


def write_json(path: Path, data: dict) -> None:
    """Write atomically: a reader sees the old file or the new one, never half of one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w") as handle:
        json.dump(data, handle, indent=2, sort_keys=True, default=str)
        handle.write("\n")
    os.replace(tmp, path)


@dataclass
class ResumePlan:
    """What ``--resume`` means for this launch."""

    mode: str  # "continue" (same run, exact) or "finetune" (new run from another run's weights)
    checkpoint: Path | None  # continue: the checkpoint-N folder to resume from
    run_dir: Path | None  # continue: the run folder; finetune: the parent run folder (may be None)
    model_path: Path | None  # finetune: the folder holding the weights
    parent_config: dict | None


def _latest_run(root: Path) -> Path | None:
    runs = [p for p in Path(root).iterdir() if is_run_dir(p) and complete_checkpoints(p)] if Path(root).is_dir() else []
    return max(runs, key=lambda p: complete_checkpoints(p)[-1].stat().st_mtime) if runs else None


def resolve_resume(resume: str, output_dir: str | None, root: Path) -> ResumePlan:
    """Turn ``--resume latest|PATH`` into a plan, or fail with one line saying what to pass instead."""
    if resume == "latest":
        run_dir = Path(output_dir) if output_dir else _latest_run(root)
        if run_dir is None:
            raise UserError(f"--resume latest: no run with a checkpoint under {root}; pass --resume PATH")
        if run_dir.is_dir():
            set_aside_incomplete_checkpoints(run_dir)
        checkpoints = complete_checkpoints(run_dir)
        if not checkpoints:
            raise UserError(f"--resume latest: {run_dir} has no complete checkpoint-N folder to resume from")
        return ResumePlan("continue", checkpoints[-1], run_dir, None, _config_or_none(run_dir))

    path = Path(resume)
    if not path.exists():
        raise UserError(f"--resume {resume}: no such file or folder; pass 'latest', a checkpoint-N folder, a run "
                        "folder, or a model folder such as checkpoints/<run>/final")
    if _CHECKPOINT_RE.match(path.name):
        if not (path / TRAINER_STATE).is_file():
            raise UserError(f"--resume {resume}: this checkpoint is incomplete (no {TRAINER_STATE}); "
                            "resume from an earlier checkpoint-N")
        return ResumePlan("continue", path, path.parent, None, _config_or_none(path.parent))
    if is_run_dir(path):
        set_aside_incomplete_checkpoints(path)
        checkpoints = complete_checkpoints(path)
        if checkpoints:
            return ResumePlan("continue", checkpoints[-1], path, None, read_json(path / RUN_CONFIG))
        if (path / FINAL_DIR / "config.json").is_file():
            return ResumePlan("finetune", None, path, path / FINAL_DIR, read_json(path / RUN_CONFIG))
        raise UserError(f"--resume {resume}: this run has no complete checkpoint and no final/ model to start from")
    if (path / "config.json").is_file():
        parent = path.parent if is_run_dir(path.parent) else None
        return ResumePlan("finetune", None, parent, path, read_json(parent / RUN_CONFIG) if parent else None)
    raise UserError(f"--resume {resume}: not a checkpoint, run or model folder (no {TRAINER_STATE}, "
                    f"{RUN_CONFIG} or config.json inside)")


def _config_or_none(run_dir: Path) -> dict | None:
    return read_json(run_dir / RUN_CONFIG) if is_run_dir(run_dir) else None


class RunLock:
    """An exclusive lock on a run folder, held for the life of the process (released by the OS if it dies)."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / ".lock"
        self.handle = None

    def acquire(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.handle = open(self.path, "a+")
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.handle.seek(0)
            holder = self.handle.read().strip() or "another process"
            self.handle.close()
            raise UserError(f"{self.path.parent} is in use by a running training (pid {holder}); "
                            "stop it first (train_background.sh --stop) or choose another --output_dir") from None
        self.handle.seek(0)
        self.handle.truncate()
        self.handle.write(str(os.getpid()))
        self.handle.flush()
        return self

    def release(self) -> None:
        if self.handle:
            fcntl.flock(self.handle, fcntl.LOCK_UN)
            self.handle.close()
            self.handle = None


def running_pid(run_dir: Path) -> str | None:
    """The pid of the training that holds ``run_dir``'s lock, or None when no process holds it."""
    path = Path(run_dir) / ".lock"
    if not path.is_file():
        return None
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            return handle.read().strip() or "?"
        fcntl.flock(handle, fcntl.LOCK_UN)
    return None


def git_commit() -> str | None:
    try:
        here = Path(__file__).resolve().parent
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def environment_info(kernels: str, world_size: int) -> dict:
    import accelerate
    import datasets
    import torch
    import transformers

    info = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "accelerate": accelerate.__version__,
        "datasets": datasets.__version__,
        "git_commit": git_commit(),
        "kernels": kernels,
        "world_size": world_size,
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "cpu_threads": torch.get_num_threads(),
    }
    try:
        import bitsandbytes

        info["bitsandbytes"] = bitsandbytes.__version__
    except Exception:  # noqa: BLE001 - optional, and its import can fail in many ways on odd machines
        info["bitsandbytes"] = None
    return info


def append_metrics(run_dir: Path, record: dict) -> None:
    with open(Path(run_dir) / METRICS_FILE, "a") as handle:
        handle.write(json.dumps(record, default=str) + "\n")


def truncate_metrics(run_dir: Path, step: int) -> None:
    """On resume, drop metric lines logged after the checkpoint, so the continued run does not log them twice."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return
    kept = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line).get("step", 0) <= step]
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(line + "\n" for line in kept))
    os.replace(tmp, path)


def save_final(trainer, tokenizer, run_dir: Path) -> Path:
    """Write ``final/`` whole or not at all: save into a temporary folder, then swap it in."""
    final = Path(run_dir) / FINAL_DIR
    tmp = Path(run_dir) / f".{FINAL_DIR}.tmp{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    trainer.save_model(str(tmp))
    if trainer.args.should_save:
        tokenizer.save_pretrained(str(tmp))
        old = None
        if final.exists():
            old = final.with_name(f".{FINAL_DIR}.old{os.getpid()}")
            final.rename(old)
        tmp.rename(final)
        if old is not None:
            shutil.rmtree(old)
    return final
