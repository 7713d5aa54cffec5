"""What ``--resume latest|PATH`` means for a launch: continue a run from its newest whole checkpoint, start a run
killed before its first one again in its folder, or fine-tune from another run's weights (``ResumePlan``)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from configs.text import one_line

from ..errors import UserError
from .checkpoints import checkpoint_problem, checkpoints, complete_checkpoints, set_aside_incomplete_checkpoints
from .config import RunConfig
from .layout import CHECKPOINT_RE, FINAL_DIR, RUN_CONFIG, TRAINER_STATE, is_finished, is_run_dir

__all__ = ["ResumePlan", "resolve_resume"]


@dataclass
class ResumePlan:
    """What ``--resume`` means for this launch."""

    #: "continue" (same run, exact), "restart" (``--resume latest`` with nothing whole to resume: the same run from
    #: step 0 in its folder) or "finetune" (new run from another run's weights)
    mode: str
    checkpoint: Path | None  # continue: the checkpoint-N folder to resume from
    run_dir: Path | None  # continue, restart: the run folder; finetune: the parent run folder (may be None)
    model_path: Path | None  # finetune: the folder holding the weights
    parent_config: dict | None  # the parent's run_config.json (RunConfig.raw); restart: None when it has none yet
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
        config = RunConfig.read(run_dir)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"--resume {resume}: {run_dir / RUN_CONFIG} is unreadable ({one_line(exc)})") from None
    except ValueError:  # valid JSON, but not an object
        config = None
    if config is None or not config.is_resumable:
        raise UserError(f"--resume {resume}: {run_dir / RUN_CONFIG} lacks the model/optimizer_type entries a resume "
                        "needs; it was not written by mamba-train")
    return config.raw


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
    if CHECKPOINT_RE.match(path.name):
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
