"""The callbacks a training run adds to ``MuonTrainer``: momentum schedule, run log, time budget, divergence
stop and graceful stop on SIGTERM/SIGINT. Each one only reads state or sets ``control`` flags."""

from __future__ import annotations

import math
import signal
import sys
import time
from pathlib import Path

from transformers import TrainerCallback

from optimizers import momentum_at_step

from .rundir.metrics import append_metrics


class MomentumScheduleCallback(TrainerCallback):
    """Sets every Muon group's momentum from the global step (a linear ramp, then constant).

    The value depends on the step alone, so a resumed run gets exactly the momentum it would have had.
    """

    def __init__(self, start: float | None, end: float, warmup_steps: int):
        self.start = end if start is None else start
        self.end = end
        self.warmup_steps = warmup_steps

    def on_step_begin(self, args, state, control, optimizer=None, **kwargs):
        if optimizer is None:
            return
        momentum = momentum_at_step(state.global_step, self.start, self.end, self.warmup_steps)
        for group in optimizer.param_groups:
            if group.get("use_muon"):
                group["momentum"] = momentum


def _fmt_duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


class RunLogCallback(TrainerCallback):
    """Appends every log to ``metrics.jsonl``; when not on a terminal, also prints one progress line per log."""

    def __init__(self, run_dir: Path, progress_lines: bool):
        self.run_dir = Path(run_dir)
        self.progress_lines = progress_lines
        self.started = time.perf_counter()
        self.start_step = 0

    def on_train_begin(self, args, state, control, **kwargs):
        self.started, self.start_step = time.perf_counter(), state.global_step

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        elapsed = time.perf_counter() - self.started
        append_metrics(self.run_dir, {"step": state.global_step, "elapsed_s": round(elapsed, 2), **logs})
        if not self.progress_lines:
            return
        done = state.global_step - self.start_step
        eta = elapsed / done * (state.max_steps - state.global_step) if done else float("nan")
        if "loss" in logs:
            parts = [f"step {state.global_step}/{state.max_steps}", f"loss {logs['loss']:.4f}"]
            if "lr_muon" in logs:
                parts.append(f"lr muon {logs['lr_muon']:.2e} adamw {logs.get('lr_adamw', float('nan')):.2e}")
            elif "learning_rate" in logs:
                parts.append(f"lr {logs['learning_rate']:.2e}")
            if "momentum" in logs:
                parts.append(f"momentum {logs['momentum']:.3f}")
            if "grad_norm" in logs:
                parts.append(f"grad_norm {logs['grad_norm']:.3f}")
            if "tokens_per_second" in logs:
                parts.append(f"{logs['tokens_per_second']:,.0f} tok/s")
            parts.append(f"ETA {_fmt_duration(eta) if done else '?'}")
            print(" | ".join(parts), flush=True)
        if "eval_loss" in logs:
            extra = "".join(f" | {k[5:]} {logs[k]:.4f}" for k in sorted(logs) if k.startswith("eval_")
                            and k not in ("eval_loss", "eval_runtime") and isinstance(logs[k], float)
                            and not k.endswith("per_second"))
            print(f"eval @ step {state.global_step} | loss {logs['eval_loss']:.4f}{extra}", flush=True)


class TimeBudgetCallback(TrainerCallback):
    """Stops training once ``seconds`` of wall-clock have passed, evaluating and saving at that step.
    `fraction` (the budget's share spent, 0..1) is the clock of ``--schedule_by time``."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.started = time.perf_counter()
        self.spent = False

    def fraction(self) -> float:
        return min((time.perf_counter() - self.started) / self.seconds, 1.0)

    def on_train_begin(self, args, state, control, **kwargs):
        self.started = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if time.perf_counter() - self.started >= self.seconds:
            self.spent = True
            control.should_training_stop = True
            control.should_evaluate = args.eval_strategy != "no"
            control.should_save = args.save_strategy != "no"


class DivergenceCallback(TrainerCallback):
    """Stops the run when the training loss is non-finite or exceeds ``factor`` x its best value so far."""

    def __init__(self, factor: float | None):
        self.factor = factor
        self.best = math.inf
        self.reason: str | None = None

    def on_log(self, args, state, control, logs=None, **kwargs):
        loss = (logs or {}).get("loss")
        if loss is None:
            return
        if not math.isfinite(loss):
            self.reason = f"loss is {loss} at step {state.global_step}"
        elif self.factor and math.isfinite(self.best) and loss > self.factor * self.best:
            self.reason = f"loss {loss:.4g} at step {state.global_step} exceeds {self.factor:g}x its best {self.best:.4g}"
        self.best = min(self.best, loss)
        if self.reason:
            control.should_training_stop = True


class GracefulStopCallback(TrainerCallback):
    """On SIGTERM/SIGINT: finish the current step, save a checkpoint, stop. A second signal stops at once."""

    def __init__(self):
        self.requested = False
        self.signal_name = None
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        self.signal_name = signal.Signals(signum).name
        print(f"\n{self.signal_name} received: saving a checkpoint after this step, then stopping "
              "(send it again to stop at once)", file=sys.stderr, flush=True)

    def on_step_end(self, args, state, control, **kwargs):
        if self.requested:
            control.should_save = True
            control.should_training_stop = True
