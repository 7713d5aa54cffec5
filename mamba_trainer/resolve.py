"""What a ``mamba-train`` run is, decided before anything is built: model size, optimizer type, run folder and
``--resume`` plan (``resolve_run``), checked for consistency; and what must be settled before the
TrainingArguments fix the device (``prepare_launch``), and the run folder's lock (``claim_run_dir``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

from .errors import UserError

CHECKPOINT_ROOT = Path("checkpoints")


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
    optimizer_type = parsed.optimizer_type
    output_dir = Path(t.output_dir) if "output_dir" in explicit else None
    plan = resolve_resume(r.resume, output_dir, CHECKPOINT_ROOT) if r.resume else None
    restart = plan is not None and plan.mode == "restart"
    if plan is not None and plan.mode in ("continue", "restart") and plan.parent_config is not None:
        keep_recorded_rows(parsed, plan.parent_config)
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
    model_size = model_size or parsed.model_size
    if not m.model_name_or_path:
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
    if parsed.data.data_dir and not Path(parsed.data.data_dir).exists():
        raise UserError(f"--data_dir {parsed.data.data_dir}: no such folder or file; run prepare_cot_dataset.py "
                        "first or fix the path")
    return Resolved(model_size, optimizer_type, output_dir, plan)


def keep_recorded_rows(parsed, parent_config: dict) -> None:
    """A continued or restarted run keeps the rows it started with, whatever today's defaults: the training rows its
    checkpoint was trained on (resume stays exact) and the held-out rows its eval curve was measured on. A flag given
    now wins; a default that changed since is overridden, with one line, and the flag joins the run's argv (so the
    restart check and run_config.json see the run as it is)."""
    from .data import packing_mode

    data = parent_config.get("data") or {}
    recorded = {"packing": packing_mode(data["packing"]) if "packing" in data else None,
                "eval_packing": data.get("eval_packing")}
    for key, value in recorded.items():
        if value is None or key in parsed.explicit or value == getattr(parsed.data, key):
            continue
        if launch_rank()[0] == 0:  # one line per run, not per torchrun process
            print(f"data: --{key} {value}, as this run started (--{key} {getattr(parsed.data, key)} is the default "
                  "now; a resumed run keeps its own)", flush=True)
        setattr(parsed.data, key, value)
        parsed.argv = [*parsed.argv, f"--{key}", value]


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
