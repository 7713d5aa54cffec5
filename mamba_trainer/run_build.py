"""What a ``mamba-train`` run trains with, built from the parsed flags and the resolved run (``resolve.Resolved``):
tokenizer, data, model, callbacks and the ``MuonTrainer`` with its optimizer (the Muon settings go to the
optimizer factory by name: ``MuonArguments.factory_kwargs()``)."""

from __future__ import annotations

import dataclasses

from .errors import UserError
from .resolve import Resolved


def report_kernels(t) -> str:
    """Which fast kernels this machine has (printed by the logging process); also recorded in environment.json."""
    from .models import kernel_report

    kernels = kernel_report()
    if t.should_log:
        print(kernels, flush=True)
    return kernels


def report_cpu_contention(t) -> str | None:
    """On a CPU run, one note (printed by the logging process) when other work leaves fewer idle cores than torch
    has threads: such a run can be several times slower (``rundir.environment.cpu_contention_note``)."""
    import torch

    from .rundir import cpu_contention_note

    note = cpu_contention_note(torch.get_num_threads()) if t.device.type == "cpu" else None
    if note and t.should_log:
        print(note, flush=True)
    return note


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


def parsed_parent_tokenizer(plan) -> str:
    """The tokenizer a continued run was started with (its checkpoints also hold a copy)."""
    if (plan.checkpoint / "tokenizer_config.json").is_file():
        return str(plan.checkpoint)
    return plan.parent_config["model"]["tokenizer"]


def build_data(parsed, tokenizer):
    """(train, eval, info) from the data flags; see ``data.build_datasets``."""
    from .data import build_datasets

    d, t = parsed.data, parsed.training
    return build_datasets(
        tokenizer, dataset=d.dataset, dataset_config=d.dataset_config, dataset_split=d.dataset_split,
        data_dir=d.data_dir, text_column=d.text_column, max_seq_length=d.max_seq_length, packing=d.packing,
        train_on_prompt=d.train_on_prompt, eval_fraction=d.eval_fraction, max_eval_examples=d.max_eval_examples,
        seed=t.seed, max_train_examples=d.max_train_examples, eval_packing=d.eval_packing)


def fit_rows_to_model(parsed, start_from: str | None) -> None:
    """Rows with packed boundaries need a model that keeps examples apart (here transformers' Mamba2 and Zamba2:
    ``mamba_trainer.packed``; every named size is one). Another family loaded with ``--model_name_or_path`` (Mamba,
    Jamba, FalconMamba, ...) would let them flow into each other silently: a bfd the user typed is refused in one
    line; a default one becomes ``none`` (one padded example per row: still leak-free), said in one line. Read from
    the starting model's config before any data is built; a config that cannot be read is left to the model load's
    own error."""
    from .packed import BOUNDARY_MODEL_TYPES
    from .packing import eval_packing_mode

    d = parsed.data
    wants = {"packing": d.packing == "bfd", "eval_packing": eval_packing_mode(d.eval_packing, d.packing) == "bfd"}
    if start_from is None or not any(wants.values()):
        return
    from transformers import AutoConfig

    try:
        model_type = AutoConfig.from_pretrained(start_from).model_type
    except (OSError, ValueError, KeyError):
        return
    if model_type in BOUNDARY_MODEL_TYPES:
        return
    typed = [key for key, bfd in wants.items() if bfd and key in parsed.explicit]
    if typed:
        raise UserError(f"--{typed[0]} bfd keeps packed examples apart only in Mamba2 and Zamba2 models; a "
                        f"{model_type} model would let them flow into each other: pass --packing none --eval_packing "
                        "none (or --packing bfd_leaky, rows that leak)")
    for key, bfd in wants.items():
        if bfd:
            setattr(d, key, "none")
    if parsed.training.should_log:  # one line per run, not per torchrun process
        print(f"data: a {model_type} model does not keep packed examples apart (only Mamba2 and Zamba2 do here): "
              "one padded example per row (--packing none --eval_packing none); --packing bfd_leaky packs rows that "
              "leak", flush=True)


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


def build_trainer(parsed, resolved: Resolved, model, tokenizer, train_ds, eval_ds, callbacks: RunCallbacks):
    """The ``MuonTrainer``, its optimizer already created (``optimizer.json`` describes it before training)."""
    from transformers import DataCollatorForSeq2Seq, PrinterCallback

    from .trainer import MuonTrainer, argmax_logits, next_token_accuracy

    t = parsed.training
    trainer = MuonTrainer(
        model=model, args=t, train_dataset=train_ds, eval_dataset=eval_ds, processing_class=tokenizer,
        data_collator=DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100),
        compute_metrics=next_token_accuracy, preprocess_logits_for_metrics=argmax_logits,
        callbacks=callbacks.all, optimizer_type=resolved.optimizer_type, optimizer_options=parsed.muon.factory_kwargs(),
        schedule_clock=callbacks.budget.fraction if parsed.run.schedule_by == "time" else None)
    if callbacks.answer_eval is not None:
        callbacks.answer_eval.attach(trainer)  # it logs through trainer.log, so its metrics reach metrics.jsonl
    if t.disable_tqdm:
        trainer.remove_callback(PrinterCallback)  # RunLogCallback prints a readable line instead of a dict
    trainer.create_optimizer()
    return trainer
