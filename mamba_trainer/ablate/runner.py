"""Run a sweep's variants as isolated ``python -m mamba_trainer.train`` subprocesses, one run folder each.

Layout of a sweep folder::

    <sweep>/sweep.json            the spec (so ``--resume_sweep`` can rerun it)
    <sweep>/runs/<slug>/          a normal run folder (run_config.json, metrics.jsonl, final/, ...) plus
                 variant.json     the variant, its mamba-train flags, exit status, outcome and wall time
                 train.log        the run's stdout and stderr

A variant's outcome is read back from its folder, so a rerun skips what is finished (completed, time_budget,
diverged, failed), resumes what was stopped or cut short from its last checkpoint (fixed-step budgets), and
restarts it otherwise (a wall-clock budget restarts: a resumed run would get more than its budget).

Several variants run at once when several GPUs are visible: one worker per group of ``gpus_per_variant`` GPUs,
each child seeing only its group through ``CUDA_VISIBLE_DEVICES``. Without GPUs there is one worker.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ..errors import UserError
from ..jsonio import read_json, read_metrics, write_json
from ..rundir import RUN_CONFIG, complete_checkpoints
from .readers import end_record, finite

RUNS_DIR = "runs"
VARIANT_FILE = "variant.json"
LOG_FILE = "train.log"
SWEEP_FILE = "sweep.json"
FINISHED = ("completed", "time_budget", "diverged", "failed")
# signals that stop a run from outside (a second Ctrl-C, kill, a closed terminal): the run is unfinished, not
# diverged, so a rerun trains it again. SIGKILL stays a crash: the kernel's OOM killer sends it.
INTERRUPTS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_REPO_ROOT = Path(__file__).resolve().parents[2]


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


def classify(returncode: int | None, records: list[dict], log_tail: str = "") -> tuple[str, str | None]:
    """(status, detail) of a finished launch from its exit status and metrics.

    Status: completed | time_budget | stopped (stopped by a signal, with or without its checkpoint) |
    diverged (exit 3, non-finite eval loss, or a crash) | failed (exit 2: mamba-train rejected its input).
    """
    end = end_record(records)
    last_line = _last_line(log_tail)
    if returncode == 0:
        reason = end.get("reason") if end else None
        if reason in ("completed", "time_budget"):
            evals = [r for r in records if "eval_loss" in r]
            if evals and not finite(evals[-1]["eval_loss"]):
                return "diverged", f"eval loss is {evals[-1]['eval_loss']} at step {evals[-1].get('step')}"
            return reason, None
        if reason == "stopped":
            return "stopped", end.get("detail")
        return "diverged", f"crashed: exited 0 without an end record ({last_line})"
    if returncode == 3:
        return "diverged", (end or {}).get("detail") or last_line
    if returncode == 2:
        return "failed", last_line
    if returncode is not None and -returncode in INTERRUPTS:  # Ctrl-C, kill, a closed terminal: not a result
        return "stopped", f"interrupted (signal {signal.Signals(-returncode).name}) before saving; a rerun starts it again"
    how = f"signal {signal.Signals(-returncode).name}" if returncode and returncode < 0 else f"exit {returncode}"
    return "diverged", f"crashed ({how}): {last_line}"


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.replace("\r", "\n").splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    return (errors or lines or [""])[-1][:300]


def variant_status(run_dir: Path) -> str:
    """new | incomplete | stopped | completed | time_budget | diverged | failed, from the folder alone."""
    run_dir = Path(run_dir)
    recorded = read_variant_file(run_dir).get("status")
    if recorded in FINISHED:
        return recorded
    records = read_metrics(run_dir)
    end = end_record(records)
    if end and end.get("reason") in ("completed", "time_budget", "diverged"):
        return classify(3 if end["reason"] == "diverged" else 0, records)[0]
    if end and end.get("reason") == "stopped":
        return "stopped"
    return "incomplete" if (run_dir / RUN_CONFIG).is_file() else "new"


def next_action(status: str, *, has_checkpoint: bool, wall_clock_budget: bool, retry_failed: bool = False) -> str:
    """skip | resume | fresh for a variant in ``status``.

    >>> next_action("completed", has_checkpoint=True, wall_clock_budget=False)
    'skip'
    >>> [next_action("stopped", has_checkpoint=True, wall_clock_budget=b) for b in (False, True)]
    ['resume', 'fresh']
    """
    if status in ("completed", "time_budget"):
        return "skip"
    if status in ("diverged", "failed"):
        return "fresh" if retry_failed else "skip"
    if status in ("stopped", "incomplete") and has_checkpoint and not wall_clock_budget:
        return "resume"
    return "fresh"


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
        cmd = [sys.executable, "-m", "mamba_trainer.train", *self.argv, "--output_dir", str(self.run_dir.resolve())]
        return cmd + (["--resume", "latest"] if self.action == "resume" else [])


def start_process(cmd: list[str], env: dict, log_path: Path) -> subprocess.Popen:
    """Start one training (the only place a sweep starts a subprocess). Its own session: a Ctrl-C on the sweep
    reaches the child once, through the sweep, so the child stops gracefully and saves a checkpoint. If the
    sweep itself dies (kill -9), the child is killed too: a rerun then finds the variant unfinished and
    resumes it, instead of meeting a run folder still locked by an orphan."""
    with open(log_path, "ab") as log:
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
                                stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)


def _die_with_parent() -> None:
    """In the child, before exec: ask Linux to SIGKILL it when the sweep process dies (no-op elsewhere)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def child_env(device: str | None) -> dict:
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_REPO_ROOT), env.get("PYTHONPATH")) if p)
    if device is not None:
        env["CUDA_VISIBLE_DEVICES"] = device
    return env


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


class _StopRequest:
    """SIGINT/SIGTERM on the sweep: stop starting variants and ask the running ones to stop (once)."""

    def __init__(self):
        self.requested = False
        self.saved = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.saved[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if not self.requested:
            print(f"\n{signal.Signals(signum).name}: stopping the running variant(s) after their current step "
                  "(they save a checkpoint); rerun the sweep to continue", file=sys.stderr, flush=True)
        self.requested = True

    def __exit__(self, *exc):
        for sig, handler in self.saved.items():
            signal.signal(sig, handler)


def run_jobs(jobs: list[Job], workers: list[str | None], *, on_start=None, on_done=None, poll_s: float = 0.2) -> bool:
    """Run ``jobs`` on ``workers`` (CUDA_VISIBLE_DEVICES values); returns False when stopped by a signal."""
    pending = list(range(len(jobs)))
    running: dict[int, tuple[int, subprocess.Popen, float]] = {}  # worker -> (job, process, start time)
    signalled: set[int] = set()
    with _StopRequest() as stop:
        while pending or running:
            if not stop.requested:
                for worker, j in assign(pending, [w for w in range(len(workers)) if w not in running]):
                    pending.remove(j)
                    job = jobs[j]
                    prepare(job)
                    if on_start:
                        on_start(job, workers[worker])
                    proc = start_process(job.command(), child_env(workers[worker]), job.run_dir / LOG_FILE)
                    running[worker] = (j, proc, time.perf_counter())
            else:
                pending.clear()
                for worker, (_, proc, _) in running.items():
                    if worker not in signalled and proc.poll() is None:
                        proc.send_signal(signal.SIGTERM)
                        signalled.add(worker)
            time.sleep(poll_s)
            for worker, (j, proc, started) in list(running.items()):
                rc = proc.poll()
                if rc is None:
                    continue
                del running[worker]
                signalled.discard(worker)
                job = jobs[j]
                wall = job.wall_s_before + time.perf_counter() - started
                status, detail = classify(rc, read_metrics(job.run_dir), _tail(job.run_dir / LOG_FILE))
                write_variant_file(job, status=status, detail=detail, returncode=rc, wall_s=round(wall, 2),
                                   launches=job.launches_before + 1, device=workers[worker])
                if on_done:
                    on_done(job, status, detail, wall)
    return not stop.requested


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
        from ..run_settings import first_difference, recorded_settings, settings_of

        diff = first_difference(recorded_settings(run_dir), settings_of(argv, run_dir))
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

