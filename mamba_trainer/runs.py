"""The one runner of ``mamba-train`` runs: launch them (one subprocess each, several at once on a
``concurrent.futures`` pool), decide from a folder alone whether its run is finished, resumable or reusable, and
collect its results. ``muon-ablate`` (``ablate/runner.py``) and the benches (``bench/convergence.py``,
``lr_transfer.py``, ``packing.py``, ``math_demo.py``, ``throughput.py``) are specs and analysis over it.

    cmd = mamba_train_command(flags, run_dir=run_dir, resume=True)     # python -m mamba_trainer.train ... --resume latest
    rc = run_logged(cmd, log_path, env=child_env(threads=1))             # blocking, output appended to the log
    run_on_workers(jobs, ["0", "1"], start, finish)                      # one job per free worker until all are done
    folder_state(run_dir)    # new | incomplete | stopped | completed | time_budget | diverged
    is_reusable(run_dir)     # a result to keep: diverged, or completed with final/ saved
    settings_difference(run_dir, flags)   # None, or the first setting the folder's run differs in
    summarize_run(read_metrics(run_dir))  # eval curve (step, training seconds, loss), final loss, status, steps
"""

from __future__ import annotations

import math
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path
from typing import Callable, Sequence

from .rundir import end_record, end_reason, is_finished, is_run_dir, loss_curves

__all__ = ["INTERRUPTS", "StopRequest", "child_env", "classify", "eval_curve", "folder_state", "is_reusable",
           "mamba_train_command", "next_action", "recorded_settings", "run_logged", "run_on_workers",
           "settings_difference", "start_process", "summarize_run"]

#: signals that stop a run from outside (a second Ctrl-C, kill, a closed terminal): the run is unfinished, not
#: diverged, so a rerun trains it again. SIGKILL stays a crash: the kernel's OOM killer sends it.
INTERRUPTS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
REPO_ROOT = Path(__file__).resolve().parents[1]


# ---- what a folder holds ----------------------------------------------------------------------------------------
def folder_state(run_dir: Path) -> str:
    """new | incomplete (started, never ended) | the last launch's end reason (completed, time_budget, stopped,
    diverged), from ``metrics.jsonl`` and ``run_config.json`` alone."""
    reason = end_reason(Path(run_dir))
    if reason is not None:
        return reason
    return "incomplete" if is_run_dir(run_dir) else "new"


def is_reusable(run_dir: Path) -> bool:
    """A run to skip on resume: it ended and its result is final (a divergence is a result, a stop is not; a
    completed run counts once its ``final/`` model is saved)."""
    status = end_reason(Path(run_dir))
    return status == "diverged" or (status == "completed" and is_finished(run_dir))


def recorded_settings(run_dir: Path) -> dict | None:
    from .run_settings import recorded_settings as recorded

    return recorded(run_dir)


def settings_difference(run_dir: Path, flags: list[str]) -> tuple[str, object, object] | None:
    """(setting, recorded, now) of the first setting in which the run in ``run_dir`` differs from what ``flags``
    (mamba-train flags) would compute, or None when it is the same run (``mamba_trainer.run_settings``: the parsed
    arguments, presets and defaults, not the command text)."""
    from .run_settings import first_difference, settings_of

    return first_difference(recorded_settings(run_dir), settings_of(flags, run_dir))


def next_action(status: str, *, has_checkpoint: bool, wall_clock_budget: bool, retry_failed: bool = False) -> str:
    """skip | resume | fresh for a run in ``status``.

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
            if evals and not _finite(evals[-1]["eval_loss"]):
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


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.replace("\r", "\n").splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    return (errors or lines or [""])[-1][:300]


# ---- results ----------------------------------------------------------------------------------------------------
def eval_curve(records: list[dict]) -> list[tuple[int, float, float]]:
    """[(step, training seconds, eval loss)] from a run's metrics.jsonl records.

    ``elapsed_s`` counts from the start of training and includes every evaluation so far (it is logged after the
    eval), so training seconds = elapsed_s - the sum of eval_runtime up to and including this one.

    >>> eval_curve([{"step": 0, "elapsed_s": 2.0, "eval_loss": 6.9, "eval_runtime": 2.0},
    ...             {"step": 10, "elapsed_s": 12.0, "loss": 5.0},
    ...             {"step": 10, "elapsed_s": 15.0, "eval_loss": 4.0, "eval_runtime": 2.5}])
    [(0, 0.0, 6.9), (10, 10.5, 4.0)]
    """
    curve = []
    for point in loss_curves(records)["eval"]:
        if curve and curve[-1][0] == point.step:  # --eval_on_start again after a resume: same weights
            continue
        curve.append((point.step, round(max(point.train_s, 0.0), 3), point.loss))
    return curve


def summarize_run(records: list[dict]) -> dict:
    """A run's result: its eval curve, final eval loss (inf unless it completed), end status, steps, training
    seconds and seconds per step."""
    curve = eval_curve(records)
    status = end_reason(records)
    final = curve[-1][2] if curve and status == "completed" else math.inf
    steps = curve[-1][0] if curve else 0
    seconds = curve[-1][1] if curve else 0.0
    return {"curve": curve, "final": final, "status": status, "steps": steps, "train_seconds": seconds,
            "s_per_step": seconds / steps if steps else None}


# ---- launching --------------------------------------------------------------------------------------------------
def mamba_train_command(flags: Sequence[str], *, run_dir: Path | None = None, resume: bool = False) -> list[str]:
    """``python -m mamba_trainer.train FLAGS [--output_dir RUN_DIR] [--resume latest]``."""
    cmd = [sys.executable, "-m", "mamba_trainer.train", *flags]
    cmd += ["--output_dir", str(Path(run_dir).resolve())] if run_dir is not None else []
    return cmd + (["--resume", "latest"] if resume else [])


def child_env(device: str | None = None, *, threads: int | None = None, offline: bool = False) -> dict:
    """The environment of a launched run: this one, unbuffered, with the repository importable; ``device`` sets
    CUDA_VISIBLE_DEVICES, ``threads`` OMP_NUM_THREADS, ``offline`` the Hub's offline switches."""
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    if device is not None:
        env["CUDA_VISIBLE_DEVICES"] = device
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    if offline:
        env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    return env


def start_process(cmd: list[str], env: dict, log_path: Path, *, own_session: bool = True,
                  cwd: Path | None = None) -> subprocess.Popen:
    """Start one training, its output appended to ``log_path``. ``own_session`` (sweeps): its own session, so a
    Ctrl-C reaches the child once, through the parent, and the child stops gracefully and saves a checkpoint; and
    if the parent dies (kill -9) the child is killed too, so a rerun finds the run unfinished and resumes it
    instead of meeting a folder still locked by an orphan. Without it, the child shares the terminal's Ctrl-C."""
    extra = {"start_new_session": True, "preexec_fn": _die_with_parent} if own_session else {}
    with open(log_path, "ab") as log:
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, stdin=subprocess.DEVNULL,
                                cwd=cwd, **extra)


def _die_with_parent() -> None:
    """In the child, before exec: ask Linux to SIGKILL it when the parent process dies (no-op elsewhere)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def run_logged(cmd: list[str], log_path: Path, *, env: dict | None = None, cwd: Path | None = REPO_ROOT,
               append: bool = True, header: str | None = None, tee: Callable[[str], None] | None = None) -> int:
    """Run ``cmd`` to its end in the foreground (it shares this terminal's Ctrl-C), its output written to
    ``log_path`` (appended, or replacing it), after ``header``; ``tee`` also gets every line. Returns its exit
    status."""
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a" if append else "w") as handle:
        if header:
            handle.write(header)
            handle.flush()
        if tee is None:
            return subprocess.run(cmd, cwd=cwd, env=env, stdout=handle, stderr=subprocess.STDOUT).returncode
        with subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) as proc:
            for line in proc.stdout:
                handle.write(line)
                tee(line)
            return proc.wait()


def _take_all(free: queue.Queue, timeout: float) -> list:
    """Every item in ``free`` now, waiting up to ``timeout`` for the first one ([] when none came)."""
    try:
        items = [free.get(timeout=timeout)]
    except queue.Empty:
        return []
    while True:
        try:
            items.append(free.get_nowait())
        except queue.Empty:
            return items


class StopRequest:
    """SIGINT/SIGTERM on this process (main thread only): ``requested`` turns True, once said on stderr."""

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
            print(f"\n{signal.Signals(signum).name}: stopping the running run(s) after their current step "
                  "(they save a checkpoint); rerun to continue", file=sys.stderr, flush=True)
        self.requested = True

    def __exit__(self, *exc):
        for sig, handler in self.saved.items():
            signal.signal(sig, handler)


def run_on_workers(jobs: Sequence, workers: Sequence, start: Callable, finish: Callable, *,
                   poll_s: float = 0.2) -> bool:
    """Run ``jobs`` in order, each on the lowest free worker: ``start(job, worker)`` launches it (returns a process:
    ``poll()``, ``send_signal()``), then a ``concurrent.futures`` thread waits for it and calls
    ``finish(job, worker, returncode, seconds)``. On SIGINT/SIGTERM no further job starts and each running one gets
    SIGTERM once (it stops after its step and saves). Returns False when stopped by a signal."""
    free: queue.PriorityQueue[int] = queue.PriorityQueue()
    for i in range(len(workers)):
        free.put(i)
    step = max(poll_s, 0.01)
    running: dict = {}  # future -> process
    signalled: set[int] = set()

    def wait_and_finish(job, i, proc, started):
        try:
            while (rc := proc.poll()) is None:
                time.sleep(poll_s)
            finish(job, workers[i], rc, time.perf_counter() - started)
        finally:
            free.put(i)

    def stop_running():
        for future, proc in running.items():
            if not future.done() and id(proc) not in signalled:
                proc.send_signal(signal.SIGTERM)
                signalled.add(id(proc))

    with StopRequest() as stop, ThreadPoolExecutor(max_workers=max(len(workers), 1)) as pool:
        pending = list(jobs)
        while pending and not stop.requested:
            idle = _take_all(free, step)  # the workers free now, all of them: the next jobs start together
            if stop.requested:
                pending.clear()
            started = [(i, job, start(job, workers[i]), time.perf_counter()) for i, job in zip(sorted(idle), pending)]
            for i in sorted(idle)[len(started):]:
                free.put(i)
            del pending[:len(started)]
            for i, job, proc, t0 in started:
                running[pool.submit(wait_and_finish, job, i, proc, t0)] = proc
        while not all(f.done() for f in running):
            if stop.requested:
                stop_running()
            wait(list(running), timeout=step)
        for future in running:
            future.result()  # an error in finish() is raised here
    return not stop.requested
