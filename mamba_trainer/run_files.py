"""The files a ``mamba-train`` run writes before training: ``run_config.json`` (what the run is; a continued or
restarted run adds to it), ``optimizer.json`` and ``environment.json``; and the lines announcing the run."""

from __future__ import annotations

import dataclasses

from .resolve import Resolved


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
        config = rundir.read_run_config(output_dir)
        config.setdefault("resumes", []).append({"checkpoint": str(plan.checkpoint), "argv": parsed.argv})
        rundir.truncate_metrics(output_dir, int(plan.checkpoint.name.split("-")[1]))
    else:
        config = new_run_config(parsed, resolved, model, tokenizer_name, data_info)
        config["learning_rates"] = lrs  # None: the lrs were used as written (no --lr_width)
    if plan is not None and plan.mode == "restart" and plan.parent_config is not None:  # a killed start: its lines go
        config["restarts"] = [*((plan.parent_config or {}).get("restarts") or []),
                              {"argv": parsed.argv, "why": plan.describe()}]
        rundir.truncate_metrics(output_dir, -1)
    rundir.write_run_config(output_dir, config)
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
