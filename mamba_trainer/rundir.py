"""Run directories: naming, locking, resume resolution and the self-describing files inside.

A run directory is ``checkpoints/<run_name or timestamp>/`` (see docs/architecture.md for its files). Reports,
evaluations and resumes read it alone, so everything needed to understand a run is written here.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from configs.text import one_line

from .errors import UserError
# The run folder's JSON files are read and written through jsonio (re-exported here: rundir.write_json, ...).
from .jsonio import METRICS_FILE, read_json, read_metrics, write_json, write_text

__all__ = ["RUN_CONFIG", "OPTIMIZER_FILE", "ENVIRONMENT_FILE", "METRICS_FILE", "FINAL_DIR", "TRAINER_STATE",
           "ResumePlan", "RunLock", "append_metrics", "checkpoint_problem", "checkpoints", "complete_checkpoints",
           "default_run_name", "environment_info", "git_commit", "is_run_dir", "read_json", "read_metrics",
           "resolve_resume", "running_pid", "save_final", "set_aside_incomplete_checkpoints", "truncate_metrics",
           "write_json", "write_text"]
RUN_CONFIG = "run_config.json"
OPTIMIZER_FILE = "optimizer.json"
ENVIRONMENT_FILE = "environment.json"
FINAL_DIR = "final"
TRAINER_STATE = "trainer_state.json"  # written last by the HF Trainer (see checkpoint_problem)
_CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")


def default_run_name(model_size: str, optimizer: str, root: Path) -> str:
    stamp = time.strftime("%Y%m%d_%H%M%S")
    name = f"{model_size}_{optimizer}_{stamp}"
    suffix = 1
    while (root / name).exists():  # two launches in the same second still get separate folders
        suffix += 1
        name = f"{model_size}_{optimizer}_{stamp}_{suffix}"
    return name


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
    match = _CHECKPOINT_RE.match(folder.name)
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
        match = _CHECKPOINT_RE.match(child.name)
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


def is_run_dir(path: Path) -> bool:
    return (Path(path) / RUN_CONFIG).is_file()


@dataclass
class ResumePlan:
    """What ``--resume`` means for this launch."""

    #: "continue" (same run, exact), "restart" (``--resume latest`` with nothing whole to resume: the same run from
    #: step 0 in its folder) or "finetune" (new run from another run's weights)
    mode: str
    checkpoint: Path | None  # continue: the checkpoint-N folder to resume from
    run_dir: Path | None  # continue, restart: the run folder; finetune: the parent run folder (may be None)
    model_path: Path | None  # finetune: the folder holding the weights
    parent_config: dict | None  # restart: None when the folder holds no run_config.json yet
    skipped: list[str] = field(default_factory=list)  # "checkpoint-N: why" for newer, incomplete checkpoints

    def describe(self) -> str:
        """The one line a resume prints: which checkpoint, and why any newer one was passed over."""
        if self.mode == "restart":
            if self.parent_config is None:
                return f"nothing to resume in {self.run_dir} yet (no {RUN_CONFIG}): starting the run there from step 0"
            why = (f"its checkpoints are incomplete ({'; '.join(self.skipped)})" if self.skipped
                   else "it was stopped before its first checkpoint")
            return f"nothing whole to resume in {self.run_dir}: {why}; starting the run again from step 0 there"
        if self.mode != "continue":
            return f"fine-tuning from {self.model_path}"
        why = f"; skipped newer incomplete {', '.join(self.skipped)}" if self.skipped else ""
        return f"resuming from {self.checkpoint}{why}"


def _latest_run(root: Path) -> Path | None:
    runs = [p for p in Path(root).iterdir() if is_run_dir(p) and checkpoints(p)] if Path(root).is_dir() else []
    return max(runs, key=lambda p: checkpoints(p)[-1].stat().st_mtime) if runs else None


def is_finished(run_dir: Path) -> bool:
    """Whether the run in ``run_dir`` ended with its model saved (``final/`` written whole)."""
    return (Path(run_dir) / FINAL_DIR / "config.json").is_file()


def _continue_plan(resume: str, run_dir: Path, restart: bool = False) -> ResumePlan:
    """Continue ``run_dir`` from its newest whole checkpoint; incomplete newer ones are set aside and named.

    With ``restart`` (``--resume latest``), a run killed before any checkpoint was whole starts again from step 0
    in the same folder, as Lightning's ``ckpt_path="last"`` does, so a restart loop always ends; so does a folder
    that does not exist yet or holds no run_config.json (a loop's first launch, or a kill before it was written).
    A finished run is never restarted."""
    if restart and not is_run_dir(run_dir) and not checkpoints(run_dir) and not is_finished(run_dir):
        if run_dir.exists() and not run_dir.is_dir():
            raise UserError(f"--resume {resume}: {run_dir} is a file, not a run folder; pass another --output_dir")
        return ResumePlan("restart", None, run_dir, None, None)
    if not run_dir.is_dir():
        raise UserError(f"--resume {resume}: {run_dir} is not a folder; pass --output_dir of an existing run")
    config = _run_config(resume, run_dir)
    skipped = set_aside_incomplete_checkpoints(run_dir)
    found = complete_checkpoints(run_dir)
    if not found and restart and not is_finished(run_dir):
        return ResumePlan("restart", None, run_dir, None, config, skipped)
    if not found:
        why = f" ({'; '.join(skipped)})" if skipped else ""
        raise UserError(f"--resume {resume}: {run_dir} has no complete checkpoint-N folder to resume from{why}; "
                        "start a new run or resume another folder")
    newest = int(found[-1].name.split("-")[1])
    newer = [line for line in skipped if int(line.split(":")[0].split("-")[1]) > newest]
    return ResumePlan("continue", found[-1], run_dir, None, config, newer)


def _run_config(resume: str, run_dir: Path) -> dict:
    """A continued run needs its run_config.json: it holds the size, optimizer and data the run was started with."""
    if not is_run_dir(run_dir):
        raise UserError(f"--resume {resume}: {run_dir} has no {RUN_CONFIG}, so it is not a mamba-train run folder; "
                        "fine-tune from a model folder instead (--resume PATH/final or a checkpoint's weights)")
    try:
        config = read_json(run_dir / RUN_CONFIG)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"--resume {resume}: {run_dir / RUN_CONFIG} is unreadable ({one_line(exc)})") from None
    if not isinstance(config, dict) or not isinstance(config.get("model"), dict) or "optimizer_type" not in config:
        raise UserError(f"--resume {resume}: {run_dir / RUN_CONFIG} lacks the model/optimizer_type entries a resume "
                        "needs; it was not written by mamba-train")
    return config


def resolve_resume(resume: str, output_dir: str | None, root: Path) -> ResumePlan:
    """Turn ``--resume latest|PATH`` into a plan, or fail with one line saying what to pass instead."""
    if resume == "latest":
        run_dir = Path(output_dir) if output_dir else _latest_run(root)
        if run_dir is None:
            raise UserError(f"--resume latest: no run with a checkpoint under {root}; pass --resume PATH")
        return _continue_plan(resume, run_dir, restart=True)

    path = Path(resume)
    if not path.exists():
        raise UserError(f"--resume {resume}: no such file or folder; pass 'latest', a checkpoint-N folder, a run "
                        "folder, or a model folder such as checkpoints/<run>/final")
    if _CHECKPOINT_RE.match(path.name):
        problem = checkpoint_problem(path)
        if problem:
            raise UserError(f"--resume {resume}: this checkpoint is incomplete ({problem}); "
                            "resume from an earlier checkpoint-N or with --resume latest")
        return ResumePlan("continue", path, path.parent, None, _run_config(resume, path.parent))
    if is_run_dir(path):
        if checkpoints(path):
            try:
                return _continue_plan(resume, path)
            except UserError:
                if not is_finished(path):
                    raise
        if is_finished(path):
            return ResumePlan("finetune", None, path, path / FINAL_DIR, _run_config(resume, path))
        raise UserError(f"--resume {resume}: this run has no complete checkpoint and no final/ model to start from")
    if (path / "config.json").is_file():
        parent = path.parent if is_run_dir(path.parent) else None
        return ResumePlan("finetune", None, parent, path, _run_config(resume, parent) if parent else None)
    raise UserError(f"--resume {resume}: not a checkpoint, run or model folder (no {TRAINER_STATE}, "
                    f"{RUN_CONFIG} or config.json inside)")


LOCK_FILE = ".lock"


def RunLock(run_dir: Path):  # noqa: N802  (kept as the name callers know)
    """An exclusive lock on a run folder, held for the life of the process (released by the OS if it dies)."""
    from .locks import FolderLock

    return FolderLock(run_dir, LOCK_FILE, "{folder} is in use by a running training (pid {pid}); stop it first "
                                          "(train_background.sh --stop) or choose another --output_dir")


def running_pid(run_dir: Path) -> str | None:
    """The pid of the training that holds ``run_dir``'s lock, or None when no process holds it."""
    from .locks import holder_pid

    return holder_pid(run_dir, LOCK_FILE)


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
    # the installed version from package metadata: importing bitsandbytes prints a kernels warning on every
    # run, although nothing 8-bit may be used (it is imported only where adamw_8bit is asked for)
    from importlib.metadata import PackageNotFoundError, version

    try:
        info["bitsandbytes"] = version("bitsandbytes")
    except PackageNotFoundError:
        info["bitsandbytes"] = None
    return info


def append_metrics(run_dir: Path, record: dict) -> None:
    with open(Path(run_dir) / METRICS_FILE, "a") as handle:
        handle.write(json.dumps(record, default=str) + "\n")


def truncate_metrics(run_dir: Path, step: int) -> None:
    """On resume, drop metric lines logged after the checkpoint, so the continued run does not log them twice
    (and a line torn by the kill that stopped the run)."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return
    kept = [r for r in read_metrics(run_dir) if r.get("step", 0) <= step]
    write_text(path, "".join(json.dumps(r, default=str) + "\n" for r in kept))  # as append_metrics writes them


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
