"""One sweep from start to report: check the folder, record the spec, plan and run the variants, report."""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path

from ..errors import UserError
from ..jsonio import read_json, read_metrics, write_json
from .runner import RUNS_DIR, SWEEP_FILE, SweepLock, plan_job, run_jobs, visible_gpus, worker_devices
from .spec import SweepSpec


def check_folder(sweep_dir: Path, spec: SweepSpec) -> dict | None:
    """The sweep recorded in ``sweep_dir`` (None if new); refuse one whose runs are not comparable with ``spec``."""
    path = sweep_dir / SWEEP_FILE
    if not path.is_file():
        if (sweep_dir / RUNS_DIR).is_dir():
            raise UserError(f"{sweep_dir} has runs/ but no {SWEEP_FILE}; choose another --output")
        return None
    recorded = read_json(path)
    old = SweepSpec(**recorded["spec"]).base_key()
    for key, value in spec.base_key().items():
        if old.get(key) != value:
            raise UserError(f"{sweep_dir} holds a sweep with another {key} ({old.get(key)!r}, not {value!r}); "
                            f"continue it with --resume_sweep {sweep_dir} or choose another --output")
    return recorded


def execute(spec: SweepSpec, variants: list, sweep_dir: Path, argv: list[str], *, dry_run: bool = False,
            retry_failed: bool = False, max_workers: int | None = None, gpus_per_variant: int = 1) -> int:
    recorded = check_folder(sweep_dir, spec)
    base_argv = spec.base_argv()
    wall_clock = bool(spec.time_budget)
    jobs, skipped = [], []
    for v in variants:
        job = plan_job(v.to_json(), sweep_dir / RUNS_DIR / v.slug, base_argv + v.flags(),
                       wall_clock_budget=wall_clock, retry_failed=retry_failed)
        (jobs if job else skipped).append(job or v)
    workers = worker_devices(visible_gpus(), gpus_per_variant, max_workers)
    print(f"sweep {spec.name}: {len(variants)} variants in {sweep_dir} ({len(jobs)} to run, {len(skipped)} finished); "
          f"{len(workers)} worker(s): {', '.join(w or 'cpu/default device' for w in workers)}", flush=True)
    if spec.time_budget and spec.max_steps is None:
        print(f"note: --time_budget {spec.time_budget} without --max_steps: each variant also stops at the preset's "
              "max_steps; pass --max_steps as an upper bound (the lr schedule is laid out over it)", flush=True)
    if dry_run:
        for job in jobs:
            print(f"  {job.action:6s} {job.variant['name']}: mamba-train {shlex.join(job.argv)}")
        for v in skipped:
            print(f"  skip   {v.name} (finished)")
        return 0

    sweep_dir.mkdir(parents=True, exist_ok=True)
    with SweepLock(sweep_dir):
        current = [v.to_json() for v in variants]
        slugs = {v["slug"] for v in current}
        older = [v for v in (recorded or {}).get("variants_resolved", []) if v["slug"] not in slugs]
        write_json(sweep_dir / SWEEP_FILE, {"spec": spec.to_json(), "variants_resolved": current + older,
                                            "command": "muon-ablate " + shlex.join(argv),
                                            "updated": time.strftime("%Y-%m-%d %H:%M:%S")})
        total = len(jobs)
        started = {}

        def on_start(job, device):
            started[job.variant["slug"]] = len(started) + 1
            how = "resuming" if job.action == "resume" else "starting"
            print(f"[{started[job.variant['slug']]}/{total}] {job.variant['name']}: {how}"
                  + (f" on GPU {device}" if device else "") + f" (log: {job.run_dir / 'train.log'})", flush=True)

        def on_done(job, status, detail, wall):
            evals = [r for r in read_metrics(job.run_dir) if "eval_loss" in r]
            loss = f", val loss {evals[-1]['eval_loss']:.4f} at step {evals[-1]['step']}" if evals else ""
            print(f"[{started[job.variant['slug']]}/{total}] {job.variant['name']}: {status} in {wall:.0f}s{loss}"
                  + (f" ({detail})" if detail else ""), flush=True)

        finished = run_jobs(jobs, workers, on_start=on_start, on_done=on_done)
        from .report import build_report

        data = build_report(sweep_dir)
    print(f"report: {sweep_dir / 'README.md'}; best: {data['best_variant']}", flush=True)
    for line in data["insights"][:3]:
        print("  " + line.replace("**", ""), flush=True)
    if not finished:
        print(f"interrupted: continue with muon-ablate --resume_sweep {sweep_dir}", file=sys.stderr, flush=True)
        return 130
    return 0
