"""How a run ends: ``trainer.train()`` to an ``Outcome`` (completed, time budget, stopped, diverged), and acting on
it (``finish``: the "end" line of metrics.jsonl, the plots, final/, the one line printed, the exit status)."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from configs.text import first_line

from .hooks import install_hooks

if TYPE_CHECKING:
    from .resolve import Resolved
    from .run_build import RunCallbacks


def train_to_outcome(trainer, resolved: Resolved, callbacks: RunCallbacks) -> Outcome:
    """``trainer.train()`` (from the planned checkpoint when continuing; the hooks of ``HOOKS_ENV`` installed), then how it
    ended; a NaN/inf gradient the optimizer refused counts as a divergence."""
    install_hooks(trainer)
    try:
        trainer.train(resume_from_checkpoint=str(resolved.plan.checkpoint) if resolved.continuing else None)
    except FloatingPointError as exc:  # the optimizer met a NaN/inf gradient (nonfinite="raise")
        callbacks.divergence.reason = first_line(exc)
    stopper, budget = callbacks.stopper, callbacks.budget
    return outcome(step=trainer.state.global_step, diverged=callbacks.divergence.reason,
                   stopped_by=stopper.signal_name if stopper.requested else None,
                   budget_spent=bool(budget and budget.spent), output_dir=resolved.output_dir)


def finish(trainer, tokenizer, result: Outcome, callbacks: RunCallbacks, output_dir: Path) -> int:
    """Act on ``result``: on rank 0 the "end" line of metrics.jsonl and the plots (a plot must never cost the run
    its final save), then final/ when the ending calls for it and the one line; returns the exit status."""
    from . import rundir

    if trainer.is_world_process_zero():
        rundir.append_metrics(output_dir, {"step": trainer.state.global_step, "event": "end", "reason": result.reason,
                                           "detail": callbacks.divergence.reason or callbacks.stopper.signal_name})
        from .training_plot import plot_training

        try:
            plot_training(output_dir)
        except Exception as exc:  # noqa: BLE001
            print(f"warning: plots/training.png not written: {first_line(exc)}",
                  file=sys.stderr, flush=True)
    if result.save_final:
        rundir.save_final(trainer, tokenizer, output_dir)
    if result.code != 0:
        print(result.message, file=sys.stderr, flush=True)
    elif trainer.args.should_log:
        print(result.message, flush=True)
    return result.code


@dataclasses.dataclass(frozen=True)
class Outcome:
    reason: str  # completed | time_budget | stopped | diverged (the "end" line of metrics.jsonl)
    code: int  # the process exit status
    message: str  # the one line printed (stderr when code != 0)
    save_final: bool  # whether final/ is written


def outcome(*, step: int, diverged: str | None, stopped_by: str | None, budget_spent: bool,
            output_dir: Path) -> Outcome:
    """How a finished ``trainer.train()`` ends the run: pure, so every ending is testable without training.

    >>> outcome(step=6, diverged=None, stopped_by=None, budget_spent=False, output_dir=Path("r")).message
    'done at step 6: model saved to r/final'
    >>> outcome(step=2, diverged="loss is nan", stopped_by=None, budget_spent=False, output_dir=Path("r")).code
    3
    """
    if diverged:
        return Outcome("diverged", 3, f"error: training diverged: {diverged}; lower --learning_rate (the last "
                                      f"whole checkpoint is in {output_dir})", False)
    if stopped_by:
        return Outcome("stopped", 0, f"stopped by {stopped_by} at step {step}; continue with: "
                                     f"mamba-train --resume latest --output_dir {output_dir}", False)
    reason = "time_budget" if budget_spent else "completed"
    note = " (time budget spent)" if budget_spent else ""
    return Outcome(reason, 0, f"done at step {step}{note}: model saved to {Path(output_dir) / 'final'}", True)
