"""``MuonTrainer``: the Hugging Face Trainer with Muon (or AdamW) built from a preset, plus run logging.

The callbacks a run adds (momentum schedule, metrics log, time budget, divergence, graceful stop) are in
``callbacks.py``.

Only hooks are overridden (``create_optimizer`` and ``log``); everything else — the loop, gradient
accumulation, clipping, the LR schedule, checkpointing and exact resume — is the Trainer's own.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch
from transformers import Trainer, TrainerCallback

from optimizers import MuonFactory, split_parameters
from optimizers.factory import OPTIMIZER_TYPES  # re-exported: `from mamba_trainer.trainer import OPTIMIZER_TYPES`

from .errors import UserError


def build_optimizer(model, kind: str, args, *, verbose: bool = True, **muon_options) -> torch.optim.Optimizer:
    """The optimizer of ``kind`` for ``model`` with the TrainingArguments' lr, weight decay and Adam settings.

    AdamW runs use the same no-weight-decay rules as Muon's AdamW side (embeddings, norms, biases, SSM
    parameters), so the two optimizers differ only where Muon differs.
    """
    if kind == "muon":
        return MuonFactory()(  # the factory users pass to Trainer(optimizer_cls_and_kwargs=...): one code path
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
        # every group by its decay flag: Muon's Conv1D and no-decay matrix groups included
        {"params": [p for g in split.groups if g.decay for p in g.params], "weight_decay": args.weight_decay},
        {"params": [p for g in split.groups if not g.decay for p in g.params], "weight_decay": 0.0},
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


def time_scheduled(scheduler, num_training_steps: int, clock) -> None:
    """Make a ``LambdaLR`` schedule of ``num_training_steps`` follow a time budget too: at step s, with a share
    f = ``clock()`` of the budget spent, it reads its lambda at max(s, f * num_training_steps). The schedule is
    stretched over the budget (warmup and decay keep their shares of it) and reaches its end when the budget
    runs out, however many steps fit; a run that is faster than the budget follows its steps as before.

    Every schedule transformers' ``get_scheduler`` builds for this project (``SCHEDULERS``) is a ``LambdaLR``.
    Depends on wall-clock, so it is not bit-reproducible across runs (a step-based schedule is).
    """
    from torch.optim.lr_scheduler import LambdaLR

    if not isinstance(scheduler, LambdaLR):
        raise UserError(f"--schedule_by time needs a LambdaLR schedule; {type(scheduler).__name__} is not one "
                        "(use one of the presets' lr_scheduler_type values, or --schedule_by steps)")

    def stretched(base):
        return lambda step: base(max(step, clock() * num_training_steps))

    scheduler.lr_lambdas = [stretched(base) for base in scheduler.lr_lambdas]


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

    Extra keyword arguments: ``optimizer_type`` ("muon" | "adamw" | "adamw_8bit"), ``optimizer_options``
    (passed to ``create_muon_optimizer``: momentum, nesterov, backend, ns_steps, adjust_lr, adamw_lr, beta2...)
    and ``schedule_clock`` (a function returning the share 0..1 of a time budget spent: the LR schedule then
    follows whichever is further along, steps or time; see `time_scheduled`).
    """

    def __init__(self, *args, optimizer_type: str = "muon", optimizer_options: dict | None = None,
                 schedule_clock=None, **kwargs):
        self.optimizer_type = optimizer_type
        self.optimizer_options = dict(optimizer_options or {})
        self.schedule_clock = schedule_clock
        self._throughput_mark: tuple[float, int] | None = None
        self._step_settings: dict[str, float] = {}
        self._stretched = None  # the scheduler time_scheduled has wrapped (never twice; no marker in scheduler.pt)
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

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        scheduler = super().create_scheduler(num_training_steps, optimizer)
        if self.schedule_clock is not None and scheduler is not self._stretched:
            time_scheduled(scheduler, num_training_steps, self.schedule_clock)
            self._stretched = scheduler
        return scheduler

    def _issue_warnings_after_load(self, load_result) -> None:
        # tied/shared weights (Zamba2's shared block, a tied head) are stored once: say so in one line
        from .resume_keys import resume_keys_message

        message = resume_keys_message(self.model, list(load_result.missing_keys))
        if message is None:
            return super()._issue_warnings_after_load(load_result)
        if self.args.should_log:
            print(message, flush=True)
        if load_result.unexpected_keys:
            super()._issue_warnings_after_load(type(load_result)([], load_result.unexpected_keys))

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

    # tokens/s is training throughput: after an evaluation the next interval starts afresh, as at the start
    on_evaluate = on_train_begin

    def on_optimizer_step(self, args, state, control, optimizer=None, **kwargs):
        settings = {}
        for group in optimizer.param_groups if optimizer is not None else []:
            if group.get("use_muon"):
                settings["lr_muon"] = group["lr"]
                settings["momentum"] = group["momentum"]
            elif self.trainer.optimizer_type == "muon":
                settings.setdefault("lr_adamw", group["lr"])  # the AdamW groups share one lr
        self.trainer._step_settings = settings


# The run's callbacks live in callbacks.py; re-exported so `from mamba_trainer.trainer import X` keeps working.
from .callbacks import (DivergenceCallback, GracefulStopCallback, MomentumScheduleCallback,  # noqa: E402
                        RunLogCallback, TimeBudgetCallback)

__all__ = ["MuonTrainer", "build_optimizer", "check_parallelism", "describe_optimizer", "next_token_accuracy",
           "argmax_logits", "OPTIMIZER_TYPES", "DivergenceCallback", "GracefulStopCallback",
           "MomentumScheduleCallback", "RunLogCallback", "TimeBudgetCallback"]
