"""``MuonTrainer``: the Hugging Face Trainer with Muon (or AdamW) built from a preset, plus run logging.

Only hooks are overridden (``create_optimizer`` and ``log``); everything else — the loop, gradient
accumulation, clipping, the LR schedule, checkpointing and exact resume — is the Trainer's own.
"""

from __future__ import annotations

import math
import signal
import sys
import time
from pathlib import Path

import numpy as np
import torch
from transformers import Trainer, TrainerCallback

from optimizers import create_muon_optimizer, momentum_at_step, split_parameters

from .errors import UserError
from .rundir import append_metrics

OPTIMIZER_TYPES = ("muon", "adamw", "adamw_8bit")


def build_optimizer(model, kind: str, args, *, verbose: bool = True, **muon_options) -> torch.optim.Optimizer:
    """The optimizer of ``kind`` for ``model`` with the TrainingArguments' lr, weight decay and Adam settings.

    AdamW runs use the same no-weight-decay rules as Muon's AdamW side (embeddings, norms, biases, SSM
    parameters), so the two optimizers differ only where Muon differs.
    """
    if kind == "muon":
        return create_muon_optimizer(
            model,
            lr=args.learning_rate,
            weight_decay=args.weight_decay,
            adamw_betas=(args.adam_beta1, args.adam_beta2),
            adamw_eps=args.adam_epsilon,
            verbose=verbose,
            **muon_options,
        )
    if kind not in OPTIMIZER_TYPES:
        raise UserError(f"unknown optimizer '{kind}'; valid: {', '.join(OPTIMIZER_TYPES)}")
    split = split_parameters(model)
    groups = [
        {"params": [p for _, p in split.muon + split.adamw_decay], "weight_decay": args.weight_decay},
        {"params": [p for _, p in split.adamw_no_decay], "weight_decay": 0.0},
    ]
    groups = [g for g in groups if g["params"]]
    betas = (args.adam_beta1, args.adam_beta2)
    if kind == "adamw_8bit":
        import bitsandbytes as bnb

        return bnb.optim.AdamW8bit(groups, lr=args.learning_rate, betas=betas, eps=args.adam_epsilon)
    return torch.optim.AdamW(groups, lr=args.learning_rate, betas=betas, eps=args.adam_epsilon)


def check_parallelism(optimizer_type: str, *, fsdp_version: int | None = None,
                      deepspeed_config: dict | None = None) -> None:
    """Refuse, in one line, the sharding setups under which Muon cannot run (instead of silently training
    with something else). DDP and FSDP2 are fine: `optimizers.distributed` handles them."""
    if optimizer_type != "muon":
        return
    if fsdp_version == 1:
        raise UserError("--optimizer muon cannot run under FSDP1: it hands the optimizer flattened 1-D shards "
                        "and Muon needs whole matrices; set fsdp_version: 2 in --fsdp_config (FSDP2), drop --fsdp "
                        "(DDP), or use --optimizer adamw")
    if deepspeed_config is None:
        return
    if "optimizer" in deepspeed_config:
        raise UserError("--optimizer muon: the DeepSpeed config's \"optimizer\" section replaces Muon with "
                        "DeepSpeed's own optimizer; remove that section, or use --optimizer adamw")
    stage = (deepspeed_config.get("zero_optimization") or {}).get("stage", 0)
    if not isinstance(stage, int) or stage >= 1:
        raise UserError(f"--optimizer muon cannot run under DeepSpeed ZeRO stage {stage}: ZeRO hands the "
                        "optimizer flat 1-D partitions and Muon needs whole matrices; use ZeRO stage 0, DDP "
                        "(torchrun without --deepspeed) or FSDP2")


def describe_optimizer(optimizer, model) -> dict:
    """JSON-able effective settings: per group, its hyperparameters and the parameter names it holds."""
    if hasattr(optimizer, "describe"):
        return optimizer.describe()
    names = {id(p): n for n, p in model.named_parameters()}
    groups = []
    for group in optimizer.param_groups:
        settings = {k: v for k, v in group.items() if k != "params" and isinstance(v, (int, float, str, bool, tuple))}
        params = [names.get(id(p), "?") for p in group["params"]]
        groups.append({**settings, "num_tensors": len(params), "num_params": sum(p.numel() for p in group["params"]),
                       "param_names": params})
    return {"type": type(optimizer).__name__, "groups": groups}


def next_token_accuracy(eval_pred) -> dict:
    """Share of label tokens whose argmax prediction (from the previous position) is right."""
    preds, labels = eval_pred.predictions, eval_pred.label_ids
    preds, labels = np.asarray(preds)[:, :-1], np.asarray(labels)[:, 1:]
    mask = labels != -100
    return {"accuracy": float((preds[mask] == labels[mask]).mean()) if mask.any() else float("nan")}


def argmax_logits(logits, labels):
    """Keep only the argmax, so evaluation never holds batch x seq x vocab logits in memory."""
    return (logits[0] if isinstance(logits, tuple) else logits).argmax(dim=-1)


class MuonTrainer(Trainer):
    """``transformers.Trainer`` whose optimizer is Muon (or AdamW) built from our presets.

    Extra keyword arguments: ``optimizer_type`` ("muon" | "adamw" | "adamw_8bit") and ``optimizer_options``
    (passed to ``create_muon_optimizer``: momentum, nesterov, backend, ns_steps, adjust_lr, adamw_lr, beta2...).
    """

    def __init__(self, *args, optimizer_type: str = "muon", optimizer_options: dict | None = None, **kwargs):
        self.optimizer_type = optimizer_type
        self.optimizer_options = dict(optimizer_options or {})
        self._throughput_mark: tuple[float, int] | None = None
        self._step_settings: dict[str, float] = {}
        super().__init__(*args, **kwargs)
        # here, not in create_optimizer: a DeepSpeed config with its own optimizer never calls that hook
        state = self.accelerator.state
        check_parallelism(
            optimizer_type,
            fsdp_version=getattr(state.fsdp_plugin, "fsdp_version", 1) if self.is_fsdp_enabled else None,
            deepspeed_config=(getattr(getattr(self.args, "hf_deepspeed_config", None), "config", None) or {})
            if self.is_deepspeed_enabled else None)
        self.add_callback(_StepStats(self))

    def create_optimizer(self, model=None):
        # FSDP passes the wrapped model: build the groups from what will actually be stepped.
        if self.optimizer is None:
            opt_model = self.model if model is None else model
            verbose = self.args.should_log
            self.optimizer = build_optimizer(opt_model, self.optimizer_type, self.args, verbose=verbose,
                                             **(self.optimizer_options if self.optimizer_type == "muon" else {}))
        return self.optimizer

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:
            logs.update(self._step_settings)  # what the step just taken used, like HF's own learning_rate
            if hasattr(self.optimizer, "skipped_steps") and self.optimizer.skipped_steps:
                logs["skipped_steps"] = self.optimizer.skipped_steps
            if self._throughput_mark is not None:
                then, tokens_then = self._throughput_mark
                now, tokens = time.perf_counter(), int(self.state.num_input_tokens_seen)
                if now > then and tokens > tokens_then:
                    logs["tokens_per_second"] = round((tokens - tokens_then) / (now - then), 1)
                self._throughput_mark = (now, tokens)
        if "eval_loss" in logs:
            logs["eval_perplexity"] = math.exp(min(logs["eval_loss"], 50.0))
        super().log(logs, start_time)


class _StepStats(TrainerCallback):
    """Records the lr of each side and the momentum used by each optimizer step, and the throughput mark."""

    def __init__(self, trainer: MuonTrainer):
        self.trainer = trainer

    def on_train_begin(self, args, state, control, **kwargs):
        self.trainer._throughput_mark = (time.perf_counter(), int(state.num_input_tokens_seen))

    def on_optimizer_step(self, args, state, control, optimizer=None, **kwargs):
        settings = {}
        for group in optimizer.param_groups if optimizer is not None else []:
            if group.get("use_muon"):
                settings["lr_muon"] = group["lr"]
                settings["momentum"] = group["momentum"]
            elif self.trainer.optimizer_type == "muon":
                settings.setdefault("lr_adamw", group["lr"])  # the AdamW groups share one lr
        self.trainer._step_settings = settings


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
    """Stops training once ``seconds`` of wall-clock have passed, evaluating and saving at that step."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.started = time.perf_counter()
        self.spent = False

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
