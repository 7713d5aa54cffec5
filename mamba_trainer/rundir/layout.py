"""What a run folder is called and what it holds: the file names, the folder name of a new run, and the two
questions every reader asks first (is this a run folder? did the run finish with its model saved?).

A run directory is ``checkpoints/<run_name or timestamp>/`` (see docs/architecture.md for its files). Reports,
evaluations and resumes read it alone, so everything needed to understand a run is written here.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

from ..jsonio import METRICS_FILE

__all__ = ["CHECKPOINT_RE", "ENVIRONMENT_FILE", "FINAL_DIR", "METRICS_FILE", "OPTIMIZER_FILE", "RUN_CONFIG",
           "TRAINER_STATE", "default_run_name", "is_finished", "is_run_dir"]

RUN_CONFIG = "run_config.json"
OPTIMIZER_FILE = "optimizer.json"
ENVIRONMENT_FILE = "environment.json"
FINAL_DIR = "final"
TRAINER_STATE = "trainer_state.json"  # written last by the HF Trainer (see checkpoints.checkpoint_problem)
CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")


def default_run_name(model_size: str, optimizer: str, root: Path) -> str:
    stamp = time.strftime("%Y%m%d_%H%M%S")
    name = f"{model_size}_{optimizer}_{stamp}"
    suffix = 1
    while (root / name).exists():  # two launches in the same second still get separate folders
        suffix += 1
        name = f"{model_size}_{optimizer}_{stamp}_{suffix}"
    return name


def is_run_dir(path: Path) -> bool:
    return (Path(path) / RUN_CONFIG).is_file()


def is_finished(run_dir: Path) -> bool:
    """Whether the run in ``run_dir`` ended with its model saved (``final/`` written whole)."""
    return (Path(run_dir) / FINAL_DIR / "config.json").is_file()
