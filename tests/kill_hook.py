"""A run hook for the tests (``MAMBA_TRAINER_HOOKS``, see ``mamba_trainer.hooks``): ``MAMBA_TRAINER_KILL_AT`` set
to ``step:N`` (inside step N, before the optimizer step), ``eval:N`` (inside the evaluation at step N) or ``save:N``
(inside checkpoint-N's save, after optimizer.pt, before trainer_state.json) ends the process with SIGKILL, so tests
can check that ``--resume latest`` survives a kill at that moment. conftest.py names this file in
``MAMBA_TRAINER_HOOKS`` for every run the tests start; without ``MAMBA_TRAINER_KILL_AT`` it does nothing."""

from __future__ import annotations

import os
import signal
from pathlib import Path

KILL_HOOK_ENV = "MAMBA_TRAINER_KILL_AT"
PATH = Path(__file__).resolve()


def install(trainer) -> None:
    spec = os.environ.get(KILL_HOOK_ENV)
    if not spec:
        return
    from transformers import TrainerCallback

    where, _, step = spec.partition(":")
    if where not in ("step", "eval", "save") or not step.isdigit():
        raise ValueError(f"{KILL_HOOK_ENV}={spec!r}: expected step:N, eval:N or save:N")
    step = int(step)

    def kill():
        os.kill(os.getpid(), signal.SIGKILL)

    if where == "save":  # no callback runs between optimizer.pt and trainer_state.json: wrap the Trainer's own step
        original = trainer._save_optimizer_and_scheduler

        def save_then_die(output_dir):
            original(output_dir)
            if trainer.state.global_step == step:
                kill()

        trainer._save_optimizer_and_scheduler = save_then_die
        return

    class Kill(TrainerCallback):
        def on_pre_optimizer_step(self, args, state, control, **kwargs):
            if where == "step" and state.global_step + 1 == step:
                kill()

        def on_prediction_step(self, args, state, control, **kwargs):
            if where == "eval" and state.global_step == step:
                kill()

    trainer.add_callback(Kill())
