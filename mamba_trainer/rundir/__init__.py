"""Run directories, one job per module; every public name imports from here (``from mamba_trainer.rundir import X``).

``layout`` (file names, the folder name of a new run, is_run_dir / is_finished), ``config`` (``run_config.json``:
``RunConfig``, versioned), ``checkpoints`` (which checkpoint-N folders were written whole), ``resume`` (what
``--resume`` means: ``ResumePlan``), ``lock`` (one training per folder), ``metrics`` (``metrics.jsonl``: writing,
and the one reader of a run's curves), ``environment`` (``environment.json``) and ``final`` (``final/``, whole or
not at all). A run directory is ``checkpoints/<run_name or timestamp>/`` (see docs/architecture.md for its files).
"""

# The run folder's JSON files are read and written through jsonio (re-exported here: rundir.write_json, ...).
from ..jsonio import METRICS_FILE, read_json, read_metrics, write_json, write_text
from .checkpoints import checkpoint_problem, checkpoints, complete_checkpoints, set_aside_incomplete_checkpoints
from .config import SCHEMA_VERSION, RunConfig, read_run_config, write_run_config
from .environment import cpu_contention_note, environment_info, git_commit
from .final import save_final
from .layout import (ENVIRONMENT_FILE, FINAL_DIR, OPTIMIZER_FILE, RUN_CONFIG, TRAINER_STATE, default_run_name,
                     is_finished, is_run_dir)
from .lock import LOCK_FILE, RunLock, running_pid
from .metrics import CurvePoint, append_metrics, end_reason, end_record, loss_curves, series, truncate_metrics
from .resume import ResumePlan, resolve_resume

__all__ = ["RUN_CONFIG", "OPTIMIZER_FILE", "ENVIRONMENT_FILE", "METRICS_FILE", "FINAL_DIR", "TRAINER_STATE",
           "LOCK_FILE", "SCHEMA_VERSION", "CurvePoint", "ResumePlan", "RunConfig", "RunLock", "append_metrics",
           "checkpoint_problem", "checkpoints", "complete_checkpoints", "cpu_contention_note", "default_run_name",
           "end_reason", "end_record", "environment_info", "git_commit", "is_finished", "is_run_dir", "loss_curves",
           "read_json", "read_metrics", "read_run_config", "resolve_resume", "running_pid", "save_final", "series",
           "set_aside_incomplete_checkpoints", "truncate_metrics", "write_json", "write_run_config", "write_text"]
