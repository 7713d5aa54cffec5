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

import sys

from .errors import run_cli
from .finalize import DEFAULT_MODEL_SIZE, finalize_training_args  # noqa: F401  (re-exported)
from .learning_rates import apply_lr_rule, describe_lrs
from .outcome import Outcome, finish, outcome, train_to_outcome  # noqa: F401  (re-exported)
from .resolve import (CHECKPOINT_ROOT, Resolved, check_fsdp_device, check_restart, claim_run_dir,  # noqa: F401
                      launch_rank, prepare_launch, resolve_run)
from .run_build import (RunCallbacks, build_callbacks, build_data, build_run_model, build_tokenizer,  # noqa: F401
                        build_trainer, fit_rows_to_model, parsed_parent_tokenizer, report_cpu_contention,
                        report_kernels, starting_weights)
from .run_files import announce_run, new_run_config, write_run_files  # noqa: F401  (re-exported)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    resolve_only = "--resolve_only" in argv
    if resolve_only:
        argv.remove("--resolve_only")
    return run_cli(run, argv, resolve_only=resolve_only)


def run(argv: list[str], resolve_only: bool = False) -> int:
    """The pipeline: parse -> resolve -> finalize the TrainingArguments -> build tokenizer, data, model,
    callbacks and trainer -> write the run files -> train -> ``outcome()`` -> finish (end record, plot, final/)."""
    from .args import parse_args  # transformers: only for a run, not for importing this module
    from .data import describe_data  # datasets: likewise

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
        report_cpu_contention(parsed.training)
        start_from = starting_weights(parsed, resolved)
        tokenizer, tokenizer_name = build_tokenizer(parsed, resolved, start_from)
        fit_rows_to_model(parsed, start_from)
        train_ds, eval_ds, data_info = build_data(parsed, tokenizer)
        if parsed.training.should_log:
            print(describe_data(data_info), flush=True)
        model = build_run_model(parsed, resolved, tokenizer, start_from)
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


if __name__ == "__main__":
    sys.exit(main())
