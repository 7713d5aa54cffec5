"""Run hooks: Python files named in ``MAMBA_TRAINER_HOOKS`` (``os.pathsep``-separated) whose ``install(trainer)`` runs
on the built ``MuonTrainer`` just before ``trainer.train()``: instrumentation without editing the package (the
tests use one, tests/kill_hook.py, to kill a run at a chosen moment and check that ``--resume latest`` survives it).

    MAMBA_TRAINER_HOOKS=my_probe.py mamba-train ...     # my_probe.py: def install(trainer): trainer.add_callback(...)
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from .errors import UserError

HOOKS_ENV = "MAMBA_TRAINER_HOOKS"


def install_hooks(trainer, paths: str | None = None) -> None:
    """Call ``install(trainer)`` of every file in ``paths`` (default: ``$MAMBA_TRAINER_HOOKS``); nothing when empty."""
    for path in filter(None, (os.environ.get(HOOKS_ENV, "") if paths is None else paths).split(os.pathsep)):
        spec = importlib.util.spec_from_file_location(f"mamba_trainer_hook_{Path(path).stem}", path)
        if spec is None or not Path(path).is_file():
            raise UserError(f"{HOOKS_ENV}: {path} is not a Python file; name files that define install(trainer)")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        if not callable(getattr(module, "install", None)):
            raise UserError(f"{HOOKS_ENV}: {path} defines no install(trainer)")
        module.install(trainer)
