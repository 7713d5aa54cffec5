"""Train a Mamba or hybrid model with Muon or AdamW.

    mamba-train --model_size hybrid-tiny --training_preset muon_demo              # offline demo, CPU
    mamba-train --model_size hybrid-small-standard --dataset TIGER-Lab/MathInstruct \\
        --text_column "instruction,output" --training_preset muon_default --optimizer muon --seed 42
    mamba-train --resume latest --output_dir checkpoints/<run>                     # continue exactly
    mamba-train --resume checkpoints/<run>/final --dataset openai/gsm8k --dataset_config main   # fine-tune

Values come from: built-in defaults < the training preset < command-line flags (any TrainingArguments flag
works too). ``--resolve_only`` checks the arguments, prints ``run_dir=<path>`` and exits (the background
launcher uses it to fail fast and to name its log).
"""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path
from typing import NamedTuple

from configs.text import first_line

from .errors import UserError, run_cli

DEFAULT_MODEL_SIZE = "hybrid-tiny"
CHECKPOINT_ROOT = Path("checkpoints")
#: Test hook: ``step:N`` (inside step N, before the optimizer step), ``eval:N`` (inside the evaluation at step
#: N) or ``save:N`` (inside checkpoint-N's save, after optimizer.pt, before trainer_state.json) ends the process
#: with SIGKILL, so tests can check that ``--resume latest`` survives a kill at that moment.
KILL_HOOK_ENV = "MAMBA_TRAINER_KILL_AT"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    resolve_only = "--resolve_only" in argv
    if resolve_only:
        argv.remove("--resolve_only")
    return run_cli(run, argv, resolve_only=resolve_only)


def launch_rank() -> tuple[int, int]:
    """(rank, world size) as torchrun sets them; (0, 1) for a plain launch. Only for decisions taken before the
    TrainingArguments exist; afterwards ``process_index`` / ``world_size`` of the TrainingArguments are used."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


class Resolved(NamedTuple):
    """What ``resolve_run`` decided (unpacks as ``model_size, optimizer_type, output_dir, plan``)."""

    model_size: str
    optimizer_type: str
    output_dir: Path
    plan: object  # rundir.ResumePlan, or None for a fresh run

    @property
    def continuing(self) -> bool:
        """Whether the run continues one of its own checkpoints (as opposed to starting fresh or fine-tuning)."""
        return self.plan is not None and self.plan.mode == "continue"


def check_fsdp_device(t) -> None:
    """Refuse ``--fsdp`` where it would be ignored: accelerate applies FSDP only on GPU-class devices, and on a
    machine without a CUDA GPU (or under --use_cpu) the Trainer silently runs DDP instead. Nothing is lost by
    refusing: dropping --fsdp gives that same DDP run (torchrun), on purpose."""
    if not t.fsdp or (t.fsdp_config or {}).get("xla"):  # torch_xla's FSDP runs on TPUs, not through accelerate
        return
    import torch

    if t.use_cpu or not torch.cuda.is_available():
        why = "--use_cpu is set" if t.use_cpu else "no CUDA GPU is visible"
        raise UserError(f"--fsdp needs CUDA GPUs and {why}: accelerate would ignore it and train unsharded (DDP "
                        "under torchrun); drop --fsdp and --fsdp_config (DDP via torchrun --nproc_per_node N works "
                        "on CPU)")


def resolve_run(parsed) -> Resolved:
    """Decide model size, optimizer type, output folder and resume plan; check they are consistent (and that
    --fsdp would take effect).

    Under torchrun only rank 0 checks that the folder is free: the other ranks start while rank 0 already
    holds it."""
    from configs.model_configs import get_model_config

    from .rundir import default_run_name, is_run_dir, resolve_resume, running_pid

    m, r, t = parsed.model, parsed.run, parsed.training
    explicit = parsed.explicit
    check_fsdp_device(t)
    if r.schedule_by == "time" and not r.time_budget:
        raise UserError("--schedule_by time stretches the LR schedule over --time_budget; pass --time_budget "
                        "(e.g. 5m), or drop --schedule_by")
    optimizer_type = r.optimizer or parsed.preset.get("optimizer", "muon")
    output_dir = Path(t.output_dir) if "output_dir" in explicit else None
    plan = resolve_resume(r.resume, output_dir, CHECKPOINT_ROOT) if r.resume else None
    restart = plan is not None and plan.mode == "restart"
    if restart:
        check_restart(parsed, plan)
    parent = plan.parent_config if plan and not restart else None

    model_size = m.model_size
    if parent is not None:
        recorded_size = parent["model"]["model_size"]
        if model_size and model_size != recorded_size:
            raise UserError(f"--resume {r.resume}: that run trained --model_size {recorded_size}, not {model_size}; "
                            f"drop --model_size or pass --model_size {recorded_size}")
        model_size = recorded_size
        if plan.mode == "continue":
            recorded_opt = parent["optimizer_type"]
            if "optimizer" in explicit and r.optimizer != recorded_opt:  # a preset's optimizer is no request
                raise UserError(f"--resume {r.resume}: that run uses --optimizer {recorded_opt}, not {r.optimizer}; "
                                "to switch optimizers, fine-tune from its final/ folder instead")
            optimizer_type = recorded_opt
    if m.model_name_or_path and plan is not None:
        raise UserError("pass either --model_name_or_path or --resume, not both")
    if m.model_name_or_path:
        model_size = model_size or "custom"
    else:
        model_size = model_size or DEFAULT_MODEL_SIZE
        get_model_config(model_size)  # fails early, with the list of sizes, on an unknown name

    rank, world_size = t.process_index, t.world_size  # what the Trainer itself will use
    if world_size > 1 and output_dir is None and not (plan is not None and plan.mode == "continue"):
        raise UserError(f"under torchrun (WORLD_SIZE={world_size}) pass --output_dir: every rank must name the same "
                        "run folder (train_background.sh --nproc N passes one for you)")
    for folder in ({output_dir, plan.run_dir if plan and plan.mode == "continue" else None} - {None}
                   if rank == 0 else ()):
        pid = running_pid(folder)
        if pid:
            raise UserError(f"{folder} is already running (pid {pid}); see train_background.sh --status, "
                            "or stop it with train_background.sh --stop")
    if plan is not None and plan.mode in ("continue", "restart"):
        if output_dir is not None and output_dir.resolve() != plan.run_dir.resolve():
            raise UserError(f"--resume continues {plan.run_dir}; drop --output_dir or make it that folder")
        output_dir = plan.run_dir
    else:
        if output_dir is None:
            output_dir = CHECKPOINT_ROOT / default_run_name(model_size, optimizer_type, CHECKPOINT_ROOT)
        elif rank == 0 and (is_run_dir(output_dir) or any(output_dir.glob("checkpoint-*"))):
            raise UserError(f"{output_dir} already holds a run; continue it with --resume latest --output_dir "
                            f"{output_dir}, or choose another --output_dir")
    from .data import packing_mode

    if plan is not None and plan.mode == "continue" and "packing" not in explicit:
        recorded = packing_mode((parent.get("data") or {}).get("packing", parsed.data.packing))
        if recorded != parsed.data.packing:  # the batches must be the ones the checkpoint was trained on
            print(f"data: packing {recorded}, as this run started (--packing {parsed.data.packing} is the default "
                  "now; a continued run keeps its own)", flush=True)
            parsed.data.packing = recorded
    if parsed.data.data_dir and not Path(parsed.data.data_dir).exists():
        raise UserError(f"--data_dir {parsed.data.data_dir}: no such folder or file; run prepare_cot_dataset.py "
                        "first or fix the path")
    return Resolved(model_size, optimizer_type, output_dir, plan)


def check_restart(parsed, plan) -> None:
    """A run started again from step 0 (``--resume latest`` with nothing whole to resume) must be the run its folder
    was started as: the same settings as its ``run_config.json`` (``run_settings``), else one line names the first
    difference and the command that started it."""
    if plan.parent_config is None:  # nothing recorded yet: the flags given now are the run
        return
    from .run_settings import first_difference, recorded_settings, settings_of

    diff = first_difference(recorded_settings(plan.run_dir), settings_of(parsed.argv, plan.run_dir))
    if diff:
        started = " ".join(plan.parent_config.get("argv") or [])
        raise UserError(f"--resume latest: {plan.run_dir} has no whole checkpoint, and starting it again from step 0 "
                        f"needs the settings it was started with ({diff[0]}: {diff[1]!r} there, {diff[2]!r} now); "
                        f"pass its flags again (mamba-train {started} --resume latest) or choose another --output_dir")


def run(argv: list[str], resolve_only: bool = False) -> int:
    """The pipeline: parse -> resolve -> finalize the TrainingArguments -> build tokenizer, data, model,
    callbacks and trainer -> write the run files -> train -> ``outcome()`` -> finish (end record, plot, final/)."""
    from .args import parse_args

    prepare_launch()
    parsed = parse_args(argv)
    resolved = resolve_run(parsed)
    if resolve_only:
        print(f"run_dir={resolved.output_dir}")
        return 0
    lock = claim_run_dir(resolved.output_dir, parsed.training)
    try:
        finalize_training_args(parsed, resolved.output_dir)
        kernels = report_kernels(parsed.training)
        start_from = starting_weights(parsed, resolved)
        tokenizer, tokenizer_name = build_tokenizer(parsed, resolved, start_from)
        train_ds, eval_ds, data_info = build_data(parsed, tokenizer)
        model = build_run_model(parsed, resolved, tokenizer, start_from)
        from .learning_rates import apply_lr_rule, describe_lrs

        lrs = apply_lr_rule(parsed, resolved.optimizer_type, model.config.hidden_size, model.config.model_type)
        if lrs and parsed.training.should_log:
            print(describe_lrs(lrs), flush=True)
        callbacks = build_callbacks(parsed, resolved)
        trainer = build_trainer(parsed, resolved, model, tokenizer, train_ds, eval_ds, callbacks)
        write_run_files(trainer, parsed, resolved, model, tokenizer_name, data_info, kernels, lrs)
        announce_run(parsed.training, resolved)
        result = train_to_outcome(trainer, resolved, callbacks)
        return finish(trainer, tokenizer, result, callbacks, resolved.output_dir)
    finally:
        if lock is not None:
            lock.release()


def prepare_launch() -> None:
    """What must be settled before the TrainingArguments exist (they fix the device and process group)."""
    if launch_rank()[1] > 1:
        import torch

        if not torch.cuda.is_available():
            # Under torchrun without a GPU, accelerate runs DDP over gloo only when told to use the CPU; otherwise
            # it joins the process group but trains every rank alone (no gradient all-reduce, no data sharding).
            os.environ.setdefault("ACCELERATE_USE_CPU", "true")


def claim_run_dir(output_dir: Path, t):
    """Create the run folder (every rank) and take its lock (rank 0 only: one lock per run); the lock or None."""
    from . import rundir

    output_dir.mkdir(parents=True, exist_ok=True)
    return rundir.RunLock(output_dir).acquire() if t.process_index == 0 else None


def finalize_training_args(parsed, output_dir: Path) -> None:
    """Fill in what the flags left open: the run folder and name, progress display, bf16 and pinned memory."""
    import torch

    t = parsed.training
    t.output_dir = str(output_dir)
    if "run_name" not in parsed.explicit:
        t.run_name = output_dir.name
    if "disable_tqdm" not in parsed.explicit:
        t.disable_tqdm = not sys.stderr.isatty()  # a log file gets one progress line per log step instead
    if torch.cuda.is_available() and not ({"bf16", "fp16"} & parsed.explicit) and torch.cuda.is_bf16_supported():
        t.bf16 = True
    if not torch.cuda.is_available() and "dataloader_pin_memory" not in parsed.explicit:
        t.dataloader_pin_memory = False


def report_kernels(t) -> str:
    """Which fast kernels this machine has (printed by the logging process); also recorded in environment.json."""
    from .models import kernel_report

    kernels = kernel_report()
    if t.should_log:
        print(kernels, flush=True)
    return kernels


def starting_weights(parsed, resolved: Resolved) -> str | None:
    """Where the weights come from: an existing checkpoint or a parent run's model (fine-tuning); None for a new
    model of the named size, and for a continued run (the Trainer loads the checkpoint's weights itself)."""
    plan = resolved.plan
    if resolved.continuing:
        return None
    return parsed.model.model_name_or_path or (str(plan.model_path) if plan and plan.mode == "finetune" else None)


def build_tokenizer(parsed, resolved: Resolved, start_from: str | None):
    """(tokenizer, its name): --tokenizer, else the starting model's, the continued run's, or the size's own."""
    from configs.model_configs import get_model_config

    from .tokenizer import load_tokenizer

    name = parsed.model.tokenizer or start_from or (
        parsed_parent_tokenizer(resolved.plan) if resolved.continuing
        else get_model_config(resolved.model_size)["tokenizer"])
    return load_tokenizer(name), name


def build_data(parsed, tokenizer):
    """(train, eval, info) from the data flags; see ``data.build_datasets``."""
    from .data import build_datasets

    d, t = parsed.data, parsed.training
    return build_datasets(
        tokenizer, dataset=d.dataset, dataset_config=d.dataset_config, dataset_split=d.dataset_split,
        data_dir=d.data_dir, text_column=d.text_column, max_seq_length=d.max_seq_length, packing=d.packing,
        train_on_prompt=d.train_on_prompt, eval_fraction=d.eval_fraction, max_eval_examples=d.max_eval_examples,
        seed=t.seed, max_train_examples=d.max_train_examples)


def build_run_model(parsed, resolved: Resolved, tokenizer, start_from: str | None):
    """The model to train: loaded from ``start_from`` or new of the named size; with --vram_auto, the batch is
    then sized for the free GPU memory."""
    from .models import build_model, load_pretrained

    if start_from:
        model = load_pretrained(start_from)
    else:
        model = build_model(resolved.model_size, vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                            seed=parsed.training.seed)
    if parsed.run.vram_auto:
        from .vram import apply_vram_auto

        print(apply_vram_auto(parsed, model, resolved.optimizer_type), flush=True)
    return model


@dataclasses.dataclass
class RunCallbacks:
    """The run's own callbacks; ``train_to_outcome`` reads how the run ended from the first three."""

    stopper: object  # GracefulStopCallback
    divergence: object  # DivergenceCallback
    budget: object | None  # TimeBudgetCallback, with --time_budget
    answer_eval: object | None  # GSM8KEvalCallback, with --gsm8k_eval_samples
    all: list  # in the order the Trainer gets them


def build_callbacks(parsed, resolved: Resolved) -> RunCallbacks:
    from .args import parse_duration
    from .callbacks import (DivergenceCallback, GracefulStopCallback, MomentumScheduleCallback, RunLogCallback,
                            TimeBudgetCallback)

    d, r, mu, t = parsed.data, parsed.run, parsed.muon, parsed.training
    stopper, divergence = GracefulStopCallback(), DivergenceCallback(r.divergence_factor)
    budget = TimeBudgetCallback(parse_duration(r.time_budget)) if r.time_budget else None
    callbacks = [RunLogCallback(resolved.output_dir, progress_lines=bool(t.disable_tqdm)), stopper, divergence]
    callbacks += [budget] if budget else []
    if resolved.optimizer_type == "muon":
        callbacks.append(MomentumScheduleCallback(mu.momentum_warmup_start, mu.momentum, mu.momentum_warmup_steps))
    answer_eval = None
    if r.gsm8k_eval_samples > 0:
        from .eval_callback import GSM8KEvalCallback

        # Answers longer than a training sequence were never seen whole, so generation stops there too.
        answer_eval = GSM8KEvalCallback(r.gsm8k_eval_samples, r.gsm8k_eval_dataset, max_new_tokens=d.max_seq_length)
        callbacks.append(answer_eval)
    return RunCallbacks(stopper, divergence, budget, answer_eval, callbacks)


def muon_options(mu) -> dict:
    """The Muon flags as ``MuonFactory`` keyword arguments."""
    return dict(momentum=mu.momentum, nesterov=mu.nesterov, backend=mu.backend, ns_steps=mu.ns_steps,
                adjust_lr=mu.adjust_lr, adamw_lr=mu.adamw_lr, beta2=mu.muon_beta2,
                compute_dtype=None if mu.muon_compute_dtype == "auto" else mu.muon_compute_dtype,
                ns_method=mu.ns_method, fused=mu.fused_blocks)


def build_trainer(parsed, resolved: Resolved, model, tokenizer, train_ds, eval_ds, callbacks: RunCallbacks):
    """The ``MuonTrainer``, its optimizer already created (``optimizer.json`` describes it before training)."""
    from transformers import DataCollatorForSeq2Seq, PrinterCallback

    from .trainer import MuonTrainer, argmax_logits, next_token_accuracy

    t = parsed.training
    trainer = MuonTrainer(
        model=model, args=t, train_dataset=train_ds, eval_dataset=eval_ds, processing_class=tokenizer,
        data_collator=DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100),
        compute_metrics=next_token_accuracy, preprocess_logits_for_metrics=argmax_logits,
        callbacks=callbacks.all, optimizer_type=resolved.optimizer_type, optimizer_options=muon_options(parsed.muon),
        schedule_clock=callbacks.budget.fraction if parsed.run.schedule_by == "time" else None)
    if callbacks.answer_eval is not None:
        callbacks.answer_eval.attach(trainer)  # it logs through trainer.log, so its metrics reach metrics.jsonl
    if t.disable_tqdm:
        trainer.remove_callback(PrinterCallback)  # RunLogCallback prints a readable line instead of a dict
    trainer.create_optimizer()
    return trainer


def new_run_config(parsed, resolved: Resolved, model, tokenizer_name: str, data_info: dict) -> dict:
    """``run_config.json`` of a run that starts here (fresh or fine-tuning)."""
    from .data import PROMPT_TEMPLATE

    m, d, r, mu, t, plan = parsed.model, parsed.data, parsed.run, parsed.muon, parsed.training, resolved.plan
    return {
        "model": {"model_size": resolved.model_size, "model_name_or_path": m.model_name_or_path,
                  "tokenizer": tokenizer_name, "num_parameters": sum(p.numel() for p in model.parameters()),
                  "architecture": type(model).__name__},
        "optimizer_type": resolved.optimizer_type,
        "training_preset": r.training_preset,
        "preset": parsed.preset,
        "argv": parsed.argv,
        "flags": sorted(parsed.explicit),
        "muon": dataclasses.asdict(mu),
        "data": {**dataclasses.asdict(d), **data_info},
        "prompt_template": PROMPT_TEMPLATE,
        "parent_run": str(plan.run_dir) if plan and plan.mode == "finetune" and plan.run_dir else None,
        "parent_model": str(plan.model_path) if plan and plan.mode == "finetune" else None,
        "training_arguments": t.to_dict(),
    }


def write_run_files(trainer, parsed, resolved: Resolved, model, tokenizer_name: str, data_info: dict,
                    kernels: str, lrs: dict | None = None) -> None:
    """On rank 0: ``run_config.json`` (a continued run appends to its ``resumes`` and drops the metrics after its
    checkpoint), ``optimizer.json`` and ``environment.json``."""
    from . import rundir
    from .trainer import describe_optimizer

    if not trainer.is_world_process_zero():
        return
    output_dir, plan = resolved.output_dir, resolved.plan
    if resolved.continuing:
        config = rundir.read_json(output_dir / rundir.RUN_CONFIG)
        config.setdefault("resumes", []).append({"checkpoint": str(plan.checkpoint), "argv": parsed.argv})
        rundir.truncate_metrics(output_dir, int(plan.checkpoint.name.split("-")[1]))
    else:
        config = new_run_config(parsed, resolved, model, tokenizer_name, data_info)
        config["learning_rates"] = lrs  # None: the lrs were used as written (no --lr_width)
    if plan is not None and plan.mode == "restart" and plan.parent_config is not None:  # a killed start: its lines go
        config["restarts"] = [*((plan.parent_config or {}).get("restarts") or []),
                              {"argv": parsed.argv, "why": plan.describe()}]
        rundir.truncate_metrics(output_dir, -1)
    rundir.write_json(output_dir / rundir.RUN_CONFIG, config)
    # A continued run keeps the optimizer.json it started with: the checkpoint's parameter groups (lrs, fused
    # mode, ...) replace the ones built from today's flags and presets when the Trainer loads optimizer.pt.
    if not (resolved.continuing and (output_dir / rundir.OPTIMIZER_FILE).exists()):
        rundir.write_json(output_dir / rundir.OPTIMIZER_FILE, describe_optimizer(trainer.optimizer, model))
    rundir.write_json(output_dir / rundir.ENVIRONMENT_FILE, rundir.environment_info(kernels, trainer.args.world_size))


def announce_run(t, resolved: Resolved) -> None:
    if t.should_log:
        continuing = resolved.continuing
        print(f"run folder: {resolved.output_dir}" + (f" (resuming {resolved.plan.checkpoint.name})" if continuing
                                                      else ""), flush=True)
        if continuing or (resolved.plan is not None and resolved.plan.mode == "restart"):
            print(resolved.plan.describe(), flush=True)


def train_to_outcome(trainer, resolved: Resolved, callbacks: RunCallbacks) -> Outcome:
    """``trainer.train()`` (from the planned checkpoint when continuing; ``KILL_HOOK_ENV`` armed), then how it
    ended; a NaN/inf gradient the optimizer refused counts as a divergence."""
    install_kill_hook(trainer, os.environ.get(KILL_HOOK_ENV))
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


def install_kill_hook(trainer, spec: str | None) -> None:
    """Arm ``KILL_HOOK_ENV`` (see there) on ``trainer``; nothing when ``spec`` is empty."""
    if not spec:
        return
    import signal

    from transformers import TrainerCallback

    where, _, step = spec.partition(":")
    if where not in ("step", "eval", "save") or not step.isdigit():
        raise UserError(f"{KILL_HOOK_ENV}={spec!r}: expected step:N, eval:N or save:N")
    step = int(step)

    def kill():
        os.kill(os.getpid(), signal.SIGKILL)

    if where == "save":
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


def parsed_parent_tokenizer(plan) -> str:
    """The tokenizer a continued run was started with (its checkpoints also hold a copy)."""
    if (plan.checkpoint / "tokenizer_config.json").is_file():
        return str(plan.checkpoint)
    return plan.parent_config["model"]["tokenizer"]


if __name__ == "__main__":
    sys.exit(main())
