"""Muon vs AdamW, measured through the product: steps and training seconds Muon needs to reach AdamW's final eval loss.

    python bench/convergence.py                       # hybrid-tiny + mamba-tiny, 400 steps of 8x256, 3 seeds
    python bench/convergence.py --quick               # 80 steps of 8x64, 2 seeds
    python bench/convergence.py --out results/conv    # run again with the same --out: finished runs are skipped
    python bench/convergence.py --variant perblock --extra "--foo 1"   # Muon runs get extra mamba-train flags
    python bench/convergence.py --out results/conv --report   # the same flags: results from the run folders alone

Every run is one ``mamba-train`` process (``python -m mamba_trainer.train``): ``MuonTrainer``, the CLI's data
pipeline (bundled math, packed), its callbacks (momentum ramp, run log, divergence stop) and the ``demo`` /
``muon_demo`` presets, with ``--max_steps``, ``--learning_rate``, ``--seed`` and the eval cadence set here. The
presets' warmup (10% of the run) and momentum ramp (15%) are scaled to ``--steps``. One seed means the same initial
weights (``build_model(seed=)``) and the same data order (the Trainer's seeded sampler) for both optimizers.
The held-out set is the CLI's seeded split too, so it differs between seeds (not between optimizers): the seed
spread includes the eval set's.

Method, per model size:
1. Tune AdamW over its lr grid (seed 0); a best lr on the grid's edge adds the next point beyond it (repeatedly,
   up to ``--max_extend`` points).
2. Tune Muon's matrix lr the same way, its AdamW side (embeddings, norms, SSM scalars) at AdamW's tuned lr.
3. Both again at their tuned lrs with seeds 1..k-1.
4. Per seed: target = AdamW's final eval loss. Steps ratio = Muon's first crossing of the target on its eval curve
   (linear between evals) / AdamW's steps; time-to-target ratio = Muon's training seconds at that crossing / AdamW's
   training seconds for the whole run. Training seconds = the run log's ``elapsed_s`` minus every ``eval_runtime``
   logged so far (checkpoint saves are off), so evaluations are excluded. "Not reached" counts as > 1.
   Caveat: both runs anneal over the full run, so the ratio is conservative for Muon.
Time ratios only mean something when each run had the machine to itself (the load average is recorded per run).

Runs live in ``<out>/<size>/<name>/`` (the run folders mamba-train writes) with the log and the machine it ran on
(``<name>.machine.json``) next to them. AdamW runs are shared by every ``--variant``; Muon runs carry the variant in
their name. Extra flags go to Muon runs only. A finished run keeps only what the results are made from (metrics,
run files, ``final/config.json``; ``--keep_weights`` keeps the rest), so an ``--out`` inside the repository
(bench/results/...) can be committed and a sweep continued in a later session or on another checkout. A time ratio
is computed only for a pair of runs made on the same machine (same CPU model, cores, ISA flags, GPU).
Results: ``results.json``, ``summary.md``, ``convergence.png`` (``results_<variant>.json`` etc. for a variant).
This file is the running side (the method's runs through ``mamba_trainer.runs``, the one runner ``muon-ablate``
uses too); ``bench/convergence_report.py`` is the analysis (ratios, table, plot).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import shutil
import subprocess  # noqa: F401  (tests patch subprocess.run through this module: the runner launches with it)
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from configs.model_configs import get_training_config  # noqa: E402
from mamba_trainer import runs as runner  # noqa: E402  (the runner: launch, reuse, results)
from mamba_trainer.jsonio import read_json, read_metrics  # noqa: E402
from mamba_trainer.runs import eval_curve, summarize_run  # noqa: E402,F401  (this bench's names for them)
from machine import describe_machine, machine_key  # noqa: E402  (bench/machine.py)
# the analysis (reporting), kept importable from here as before the split
from convergence_report import (DEFAULT_SIZES, compare, keep_other_sizes, mean_spread, plot,  # noqa: E402,F401
                                steps_to_reach, table)

PRESETS = {"adamw": "demo", "muon": "muon_demo"}


# ---- pure helpers -----------------------------------------------------------------------------------------------
def pick_best(results: dict[float, float]) -> tuple[float, bool]:
    """(lr with the lowest finite final loss, whether it sits at the grid's edge)."""
    finite = {lr: loss for lr, loss in results.items() if math.isfinite(loss)}
    if not finite:
        raise RuntimeError("every lr diverged; lower the grid")
    best = min(finite, key=finite.get)
    return best, best in (min(results), max(results))


def next_lr(results: dict[float, float], factor: float) -> float | None:
    """The lr to try next when the best one sits on the grid's edge (one ``factor`` beyond it), else None.

    >>> next_lr({1e-3: 3.0, 2e-3: 2.9, 4e-3: 2.8}, 2.0)
    0.008
    >>> next_lr({1e-3: 2.7, 2e-3: 2.9}, 2.0)
    0.0005
    >>> next_lr({1e-3: 3.0, 2e-3: 2.8, 4e-3: 2.9}, 2.0) is None
    True
    """
    best, edge = pick_best(results)
    if not edge or len(results) < 2:
        return None
    return best * factor if best == max(results) else best / factor


def run_name(kind: str, lr: float, seed: int, variant: str = "") -> str:
    """Folder name of one run; AdamW runs carry no variant, so every variant reuses them."""
    tag = f"_{variant}" if variant and kind == "muon" else ""
    return f"{kind}{tag}_lr{lr:g}_seed{seed}"


def log_path(run_dir: Path, suffix: str = ".log") -> Path:
    return Path(run_dir).parent / f"{Path(run_dir).name}{suffix}"  # not with_suffix: the lr's "." is no suffix


#: what a finished run keeps without --keep_weights: the files the results and a resume check read
KEEP = ("metrics.jsonl", "run_config.json", "optimizer.json", "environment.json", "final/config.json")


def prune(run_dir: Path) -> None:
    """Delete everything in a finished run folder but `KEEP` (weights, tokenizer, plots: ~12 MB -> ~30 kB)."""
    run_dir = Path(run_dir)
    keep = {run_dir / k for k in KEEP}
    for path in sorted(run_dir.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if path.is_file() and path not in keep:
            path.unlink()
        elif path.is_dir() and not any(path.iterdir()):
            path.rmdir()


def run_status(records: list[dict]) -> str | None:
    """The ``end`` event's reason ("completed", "diverged", "stopped", ...), or None while/if the run never ended."""
    return runner.end_reason(records)


def is_complete(run_dir: Path) -> bool:
    """A run to skip on resume: it ended and its result is final (a divergence is a result, a stop is not)."""
    return runner.is_reusable(run_dir)


def read_machine(run_dir: Path) -> str | None:
    path = log_path(run_dir, ".machine.json")
    return json.loads(path.read_text()).get("machine") if path.is_file() else None


def train_flags(size: str, kind: str, lr: float, seed: int, cfg, run_dir: Path, adamw_lr: float | None) -> list[str]:
    """mamba-train flags of one run: the preset, then only what this bench changes."""
    preset = get_training_config(PRESETS[kind])
    warmup = round(cfg.steps * preset["warmup_steps"] / preset["max_steps"])
    flags = ["--model_size", size, "--training_preset", PRESETS[kind], "--optimizer", kind,
             "--dataset", "bundled-math", "--output_dir", str(run_dir), "--seed", str(seed),
             "--learning_rate", f"{lr:g}", "--max_steps", str(cfg.steps), "--warmup_steps", str(warmup),
             "--per_device_train_batch_size", str(cfg.batch), "--gradient_accumulation_steps", "1",
             "--max_seq_length", str(cfg.seq_len), "--max_eval_examples", str(cfg.eval_examples),
             "--eval_strategy", "steps", "--eval_steps", str(cfg.eval_every), "--eval_on_start", "true",
             "--logging_steps", str(cfg.eval_every), "--disable_tqdm", "true",
             # every run these benches recorded trained on stream rows and evaluated on the same kind: named here,
             # so today's defaults (bfd, leak-free eval) do not make their results another run (bench/packing.py
             # sets its own)
             "--packing", getattr(cfg, "packing", "stream"), "--eval_packing", getattr(cfg, "eval_packing", "same")]
    if getattr(cfg, "resumable", False):  # checkpoints, so a run cut short continues where it was (timing aside)
        flags += ["--save_strategy", "steps", "--save_steps", str(cfg.eval_every * 2), "--save_total_limit", "1"]
    else:
        flags += ["--save_strategy", "no"]
    if kind == "muon":
        ramp = round(cfg.steps * preset["momentum_warmup_steps"] / preset["max_steps"])
        flags += ["--momentum_warmup_steps", str(ramp)]
        flags += ["--adamw_lr", f"{adamw_lr:g}"] if adamw_lr is not None else []
        flags += shlex.split(cfg.extra)
    return flags


# ---- running ----------------------------------------------------------------------------------------------------
def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def check_same_settings(run_dir: Path, flags: list[str]) -> dict | None:
    """A finished folder is reused only for a run that would compute the same thing
    (`mamba_trainer.run_settings`: the parsed training arguments, Muon and data flags, with the fused mode a default
    "auto" resolves to), whatever the command looked like. So the same --variant name with other --extra flags,
    another --steps, or a changed preset or default never picks up runs made for something else, and a folder
    renamed to the variant whose flags name what it ran is reused. Returns the recorded settings."""
    diff = runner.settings_difference(run_dir, flags)
    if diff:
        raise SystemExit(f"error: {run_dir} was made with other settings ({diff[0]}: {diff[1]!r} there, {diff[2]!r} "
                         "now); pass another --variant name or --out, or delete that folder to rerun it")
    return runner.recorded_settings(run_dir)


def train_run(size: str, kind: str, lr: float, seed: int, cfg, adamw_lr: float | None = None) -> dict:
    """One mamba-train process (skipped when its folder already holds a finished run); returns its summary.
    ``cfg.report`` (``--report``): never launch; a run not finished yet is an error."""
    run_dir = Path(cfg.out) / size / run_name(kind, lr, seed, cfg.variant)
    if is_complete(run_dir):
        recorded = check_same_settings(run_dir, train_flags(size, kind, lr, seed, cfg, run_dir, adamw_lr))
        log(f"{run_dir.name}: done before, reusing it")
    elif getattr(cfg, "report", False):
        raise SystemExit(f"error: --report: {run_dir} holds no finished run; run the bench without --report first")
    else:
        resumable = getattr(cfg, "resumable", False)
        if run_dir.exists() and not resumable:  # a run cut short: its timing is unusable, so it starts again
            shutil.rmtree(run_dir)
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        # resumable: --resume latest continues a checkpoint, restarts a run killed before one, or starts a new one
        flags = train_flags(size, kind, lr, seed, cfg, run_dir, adamw_lr) + (["--resume", "latest"] if resumable else [])
        load = os.getloadavg()
        rc = runner.run_logged(runner.mamba_train_command(flags), log_path(run_dir), cwd=ROOT, append=resumable,
                               env=runner.child_env(threads=cfg.threads, offline=True),
                               header=shlex.join(["mamba-train", *flags]) + f"\n# load average at start: {load}\n")
        if rc not in (0, 3):  # 3: diverged, a result; anything else is a broken run
            raise RuntimeError(f"{run_dir.name} failed (exit {rc}); see {log_path(run_dir)}")
        log_path(run_dir, ".machine.json").write_text(json.dumps(
            {"machine": machine_key(), "load_average_start": load, "load_average_end": os.getloadavg()}) + "\n")
        if not cfg.keep_weights:
            prune(run_dir)
        recorded = runner.recorded_settings(run_dir)
    fused = recorded["muon"].get("fused_blocks") if recorded and kind == "muon" else None  # what "auto" gave
    r = {"size": size, "kind": kind, "lr": lr, "seed": seed, "adamw_lr": adamw_lr, "run_dir": str(run_dir),
         "machine": read_machine(run_dir), "fused_blocks": fused,
         **summarize_run(read_metrics(run_dir))}
    log(f"{size} {kind} lr {lr:g} seed {seed}: final eval loss {r['final']:.4f} ({r['status']}, "
        f"{r['train_seconds']:.0f}s training)")
    return r


def tune(size: str, kind: str, grid: list[float], cfg, runs: list, adamw_lr=None) -> float:
    results = {}
    for lr in grid:
        r = train_run(size, kind, lr, 0, cfg, adamw_lr)
        runs.append(r)
        results[lr] = r["final"]
    factor = grid[1] / grid[0] if len(grid) > 1 else 2.0
    for _ in range(cfg.max_extend if cfg.extend else 0):
        lr = next_lr(results, factor)
        if lr is None:
            break
        log(f"{size} {kind}: best lr is at the grid edge; trying {lr:g}")
        r = train_run(size, kind, lr, 0, cfg, adamw_lr)
        runs.append(r)
        results[lr] = r["final"]
    best, edge = pick_best(results)
    log(f"{size} {kind}: tuned lr {best:g}" + (" (still at the grid edge)" if edge else ""))
    return best


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Muon vs AdamW convergence through mamba-train (CPU-sized).")
    p.add_argument("--sizes", default=",".join(DEFAULT_SIZES), help="model sizes (default: hybrid-tiny,mamba-tiny)")
    p.add_argument("--steps", type=int, default=400, help="optimizer steps per run")
    p.add_argument("--batch", type=int, default=8, help="sequences per step")
    p.add_argument("--seq_len", type=int, default=256, help="tokens per sequence")
    p.add_argument("--eval_every", type=int, default=25, help="steps between evaluations")
    p.add_argument("--eval_examples", type=int, default=128, help="held-out examples (--max_eval_examples)")
    p.add_argument("--seeds", type=int, default=3, help="seeds at the tuned lrs (seed 0 is the tuning run)")
    p.add_argument("--adamw_lrs", default="1e-3,2e-3,4e-3", help="AdamW lr grid (demo preset: 2e-3)")
    p.add_argument("--muon_lrs", default="1e-2,2e-2,4e-2", help="Muon matrix lr grid (muon_demo preset: 2e-2)")
    p.add_argument("--no_extend", dest="extend", action="store_false", help="no extra lr when the best is at an edge")
    p.add_argument("--max_extend", type=int, default=2, help="at most this many points added beyond the grid")
    p.add_argument("--variant", default="", help="name of this Muon variant (folder names, table)")
    p.add_argument("--extra", default="", help='extra mamba-train flags for the Muon runs, e.g. "--ns_steps 3"')
    p.add_argument("--quick", action="store_true", help="80 steps of 8x64 tokens, eval every 10, 2 seeds")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run (OMP_NUM_THREADS)")
    p.add_argument("--out", default=None, help="folder of the runs and results (default results/convergence_<time>)")
    p.add_argument("--plot", default=None, help="also save the plot here (e.g. docs/images/convergence.png)")
    p.add_argument("--keep_weights", action="store_true", help="keep each finished run's weights and plots")
    p.add_argument("--report", action="store_true", help="launch nothing: rebuild results, table and plot from the "
                                                          "finished runs in --out (the same flags as the runs)")
    cfg = p.parse_args(argv)
    if cfg.quick:
        cfg.steps, cfg.seq_len, cfg.seeds, cfg.eval_every = 80, 64, 2, 10
    if cfg.extra and not cfg.variant:
        p.error("--extra needs --variant NAME, so these Muon runs do not reuse the default variant's folders")
    cfg.out = cfg.out or f"results/convergence_{time.strftime('%Y%m%d_%H%M%S')}"
    return cfg


def main(argv=None) -> int:
    cfg = parse(argv)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    given = [a for a in (sys.argv[1:] if argv is None else argv) if a != "--report"]  # the command that ran them
    info = {"command": shlex.join(["python", "bench/convergence.py", *given]),
            "args": vars(cfg), "machine": describe_machine(), "load_average_start": os.getloadavg()}
    runs, summary = [], []
    tag = f"_{cfg.variant}" if cfg.variant else ""  # each variant's results beside the others' in one --out
    results = out / f"results{tag}.json"
    earlier = read_json(results, {})  # before the first write below replaces it (none, or cut short: {})

    def write(summary, runs):
        summary, runs = keep_other_sizes(earlier, summary, runs)
        results.write_text(json.dumps({**info, "summary": summary, "runs": runs}, indent=1, default=str))
        return summary, runs

    for size in [s for s in cfg.sizes.split(",") if s]:
        adamw_lr = tune(size, "adamw", [float(x) for x in cfg.adamw_lrs.split(",")], cfg, runs)
        muon_lr = tune(size, "muon", [float(x) for x in cfg.muon_lrs.split(",")], cfg, runs, adamw_lr=adamw_lr)
        pick = {}
        for kind, lr in (("adamw", adamw_lr), ("muon", muon_lr)):
            pick[kind] = [next(r for r in runs if r["size"] == size and r["kind"] == kind and r["lr"] == lr)]
            for seed in range(1, cfg.seeds):
                pick[kind].append(train_run(size, kind, lr, seed, cfg, adamw_lr if kind == "muon" else None))
                runs.append(pick[kind][-1])
        s = {"command": info["command"], "size": size, "variant": cfg.variant, "adamw_lr": adamw_lr,
             "muon_lr": muon_lr, "fused_blocks": pick["muon"][0].get("fused_blocks"),  # the mode "auto" gave, too
             **compare(pick["adamw"], pick["muon"])}
        summary.append(s)
        log(f"{size}: steps ratios {s['steps_ratios']}, time ratios {s['time_ratios']}")
        write(summary, runs)
    info["load_average_end"] = os.getloadavg()
    info["wall_minutes"] = round((time.time() - started) / 60, 1)
    summary, runs = write(summary, runs)
    plot(summary, runs, out / f"convergence{tag}.png")
    if cfg.plot:
        plot(summary, runs, Path(cfg.plot))
    md = table(summary)
    (out / f"summary{tag}.md").write_text(md + "\n")
    print(md)
    log(f"done in {info['wall_minutes']} min; results in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
