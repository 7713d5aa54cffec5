"""Run a sweep's variants as isolated ``python -m mamba_trainer.train`` subprocesses, one run folder each.

Layout of a sweep folder::

    <sweep>/sweep.json            the spec (so ``--resume_sweep`` can rerun it)
    <sweep>/runs/<slug>/          a normal run folder (run_config.json, metrics.jsonl, final/, ...) plus
                 variant.json     the variant, its mamba-train flags, exit status, outcome and wall time
                 train.log        the run's stdout and stderr

A variant's outcome is read back from its folder, so a rerun skips what is finished (completed, time_budget,
diverged, failed), resumes what was stopped or cut short from its last checkpoint (fixed-step budgets), and
restarts it otherwise (a wall-clock budget restarts: a resumed run would get more than its budget).

Launching, waiting and judging a folder are ``mamba_trainer.runs`` (the one runner the benches use too); this
module adds what a sweep keeps per variant. Several variants run at once when several GPUs are visible: one worker per group of ``gpus_per_variant`` GPUs,
each child seeing only its group through ``CUDA_VISIBLE_DEVICES``. Without GPUs there is one worker.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ..errors import UserError
from ..jsonio import read_json, read_metrics, write_json
from ..rundir import complete_checkpoints, is_run_dir
from ..runs import INTERRUPTS, child_env, classify, folder_state, next_action, run_on_workers, start_process
from ..runs import mamba_train_command, settings_difference

__all__ = ["FINISHED", "INTERRUPTS", "Job", "LOG_FILE", "RUNS_DIR", "SWEEP_FILE", "SweepLock", "VARIANT_FILE",
           "assign", "child_env", "classify", "next_action", "plan_job", "prepare", "read_variant_file", "run_jobs",
           "start_process", "variant_status", "visible_gpus", "worker_devices", "write_variant_file"]

RUNS_DIR = "runs"
VARIANT_FILE = "variant.json"
LOG_FILE = "train.log"
SWEEP_FILE = "sweep.json"
FINISHED = ("completed", "time_budget", "diverged", "failed")


# ---- worker planning (pure) ---------------------------------------------------------------------------------
def visible_gpus(env: dict | None = None, device_count: int | None = None) -> list[str]:
    """GPU ids this process may use: ``CUDA_VISIBLE_DEVICES`` when set (up to its first invalid entry, as CUDA
    reads it), else ``0..device_count-1`` (``device_count`` None: ask torch).

    >>> visible_gpus({"CUDA_VISIBLE_DEVICES": "2,3"}), visible_gpus({"CUDA_VISIBLE_DEVICES": ""}), visible_gpus({}, 2)
    (['2', '3'], [], ['0', '1'])
    """
    env = os.environ if env is None else env
    raw = env.get("CUDA_VISIBLE_DEVICES")
    if raw is not None:
        out = []
        for item in (part.strip() for part in raw.split(",")):
            if not item or item.startswith("-"):
                break
            out.append(item)
        return out
    if device_count is None:
        device_count = _cuda_device_count()
    return [str(i) for i in range(device_count)]


def _cuda_device_count() -> int:
    try:
        import torch

        return torch.cuda.device_count()
    except Exception:  # noqa: BLE001 - no torch / no driver: run on the CPU
        return 0


def worker_devices(gpus: Sequence[str], gpus_per_variant: int = 1, max_workers: int | None = None) -> list[str | None]:
    """One ``CUDA_VISIBLE_DEVICES`` value per worker (None = leave the environment alone: one CPU worker).

    >>> worker_devices(["0", "1", "2", "3"]), worker_devices(["0", "1", "2"], 2), worker_devices([])
    (['0', '1', '2', '3'], ['0,1'], [None])
    """
    if gpus_per_variant < 1:
        raise UserError(f"--gpus_per_variant {gpus_per_variant}: must be at least 1")
    if max_workers is not None and max_workers < 1:
        raise UserError(f"--max_workers {max_workers}: must be at least 1")
    if not gpus:
        return [None]
    if gpus_per_variant > len(gpus):
        raise UserError(f"--gpus_per_variant {gpus_per_variant}: only {len(gpus)} GPU(s) visible ({','.join(gpus)})")
    k = gpus_per_variant
    groups = [",".join(gpus[i:i + k]) for i in range(0, len(gpus) - k + 1, k)]
    return groups[:max_workers] if max_workers else groups


def assign(pending: Sequence[int], idle_workers: Sequence[int]) -> list[tuple[int, int]]:
    """(worker, job) pairs to start now: the free workers, lowest first, take the jobs in sweep order.

    >>> assign([3, 4, 5], [1, 0])
    [(0, 3), (1, 4)]
    """
    return list(zip(sorted(idle_workers), pending))


# ---- reading a variant folder ---------------------------------------------------------------------------------
def read_variant_file(run_dir: Path) -> dict:
    """variant.json's contents; {} while there is none (or it is torn)."""
    data = read_json(Path(run_dir) / VARIANT_FILE, default={})
    return data if isinstance(data, dict) else {}


def variant_status(run_dir: Path) -> str:
    """new | incomplete | stopped | completed | time_budget | diverged | failed, from the folder alone."""
    run_dir = Path(run_dir)
    recorded = read_variant_file(run_dir).get("status")
    if recorded in FINISHED:
        return recorded
    state = folder_state(run_dir)
    if state in ("completed", "time_budget", "diverged"):
        return classify(3 if state == "diverged" else 0, read_metrics(run_dir))[0]
    if state in ("stopped", "incomplete", "new"):
        return state
    return "incomplete" if is_run_dir(run_dir) else "new"  # an end reason this code does not know


# ---- running ------------------------------------------------------------------------------------------------
@dataclass
class Job:
    variant: dict  # Variant.to_json()
    run_dir: Path
    argv: list[str]  # mamba-train flags (without --output_dir / --resume)
    action: str  # "fresh" | "resume"
    wall_s_before: float = 0.0
    launches_before: int = 0

    def command(self) -> list[str]:
        return mamba_train_command(self.argv, run_dir=self.run_dir, resume=self.action == "resume")


def prepare(job: Job) -> None:
    """Make the folder ready for the launch: wipe it for a fresh start, record the variant as running."""
    if job.action == "fresh" and job.run_dir.exists():
        shutil.rmtree(job.run_dir)
    job.run_dir.mkdir(parents=True, exist_ok=True)
    write_variant_file(job, status="running", detail=None, returncode=None, wall_s=job.wall_s_before,
                       launches=job.launches_before)


def write_variant_file(job: Job, **outcome) -> None:
    write_json(job.run_dir / VARIANT_FILE, {"variant": job.variant, "argv": job.argv,
                                            "command": " ".join(job.command()), **outcome})


def run_jobs(jobs: list[Job], workers: list[str | None], *, on_start=None, on_done=None, poll_s: float = 0.2) -> bool:
    """Run ``jobs`` on ``workers`` (CUDA_VISIBLE_DEVICES values, ``runs.run_on_workers``); each outcome is recorded
    in its variant.json. Returns False when stopped by a signal."""

    def start(job: Job, device):
        prepare(job)
        if on_start:
            on_start(job, device)
        return start_process(job.command(), child_env(device), job.run_dir / LOG_FILE)

    def finish(job: Job, device, rc: int, seconds: float):
        wall = job.wall_s_before + seconds
        status, detail = classify(rc, read_metrics(job.run_dir), _tail(job.run_dir / LOG_FILE))
        write_variant_file(job, status=status, detail=detail, returncode=rc, wall_s=round(wall, 2),
                           launches=job.launches_before + 1, device=device)
        if on_done:
            on_done(job, status, detail, wall)

    return run_on_workers(jobs, workers, start, finish, poll_s=poll_s)


def _tail(path: Path, size: int = 8192) -> str:
    if not path.is_file():
        return ""
    with open(path, "rb") as handle:
        handle.seek(max(0, path.stat().st_size - size))
        return handle.read().decode("utf-8", "replace")


def plan_job(variant: dict, run_dir: Path, argv: list[str], *, wall_clock_budget: bool,
             retry_failed: bool) -> Job | None:
    """The launch a variant needs now (None: finished, skip it). A folder run with other flags is refused."""
    recorded = read_variant_file(run_dir)
    status = variant_status(run_dir)
    if recorded.get("argv") is not None and recorded["argv"] != argv and status != "new":
        raise UserError(f"{run_dir} holds variant '{variant['name']}' run with other flags; use another --output "
                        f"(recorded: {' '.join(recorded['argv'])})")
    if status != "new":  # the same flags can still mean another run when a preset or a default changed since
        diff = settings_difference(run_dir, argv)
        if diff:
            raise UserError(f"{run_dir} holds variant '{variant['name']}' run with other settings ({diff[0]}: "
                            f"{diff[1]!r} there, {diff[2]!r} now: a preset or default changed since); use another "
                            "--output, or delete that folder to rerun it")
    action = next_action(status, has_checkpoint=bool(complete_checkpoints(run_dir)) if run_dir.is_dir() else False,
                         wall_clock_budget=wall_clock_budget, retry_failed=retry_failed)
    if action == "skip":
        return None
    keep = action == "resume"
    return Job(variant, run_dir, argv, action, wall_s_before=float(recorded.get("wall_s") or 0) if keep else 0.0,
               launches_before=int(recorded.get("launches") or 0) if keep else 0)


def SweepLock(sweep_dir: Path):  # noqa: N802  (kept as the name callers know)
    """One sweep process per sweep folder (released by the OS if the process dies)."""
    from ..locks import FolderLock

    return FolderLock(sweep_dir, ".sweep.lock", "{folder} is being run by another muon-ablate process (pid {pid}); "
                                                "wait for it or stop it")

