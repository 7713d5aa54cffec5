"""Muon vs AdamW, measured through the product: steps and training seconds Muon needs to reach AdamW's final eval loss.

    python bench/convergence.py                       # hybrid-tiny + mamba-tiny, 400 steps of 8x256, 3 seeds
    python bench/convergence.py --quick               # 80 steps of 8x64, 2 seeds
    python bench/convergence.py --out results/conv    # run again with the same --out: finished runs are skipped
    python bench/convergence.py --variant perblock --extra "--foo 1"   # Muon runs get extra mamba-train flags

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
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from configs.model_configs import get_training_config  # noqa: E402
from mamba_trainer.jsonio import read_json, read_metrics  # noqa: E402
from machine import describe_machine, machine_key  # noqa: E402  (bench/machine.py)

DEFAULT_SIZES = ("hybrid-tiny", "mamba-tiny")
PRESETS = {"adamw": "demo", "muon": "muon_demo"}


# ---- pure helpers -----------------------------------------------------------------------------------------------
def steps_to_reach(curve: list[tuple[float, float]], target: float) -> float | None:
    """First x at which ``curve`` [(x, loss)] reaches ``target``, linear between points; None if never.

    >>> steps_to_reach([(0, 5.0), (10, 4.0), (20, 3.0)], 3.5)
    15.0
    >>> steps_to_reach([(0, 5.0), (10, 4.0)], 3.0) is None
    True
    """
    if curve and curve[0][1] <= target:
        return float(curve[0][0])
    for (s0, l0), (s1, l1) in zip(curve, curve[1:]):
        if l1 <= target:
            return s0 + (l0 - target) / (l0 - l1) * (s1 - s0)
    return None


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


def mean_spread(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values), "n": len(values), "values": values}


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


def read_machine(run_dir: Path) -> str | None:
    path = log_path(run_dir, ".machine.json")
    return json.loads(path.read_text()).get("machine") if path.is_file() else None


def run_status(records: list[dict]) -> str | None:
    """The ``end`` event's reason ("completed", "diverged", "stopped", ...), or None while/if the run never ended."""
    ends = [r for r in records if r.get("event") == "end"]
    return ends[-1].get("reason") if ends else None


def is_complete(run_dir: Path) -> bool:
    """A run to skip on resume: it ended and its result is final (a divergence is a result, a stop is not)."""
    status = run_status(read_metrics(run_dir))
    return status == "diverged" or (status in ("completed",) and (Path(run_dir) / "final" / "config.json").is_file())


def eval_curve(records: list[dict]) -> list[tuple[int, float, float]]:
    """[(step, training seconds, eval loss)] from a run's metrics.jsonl records.

    ``elapsed_s`` counts from the start of training and includes every evaluation so far (it is logged after the
    eval), so training seconds = elapsed_s - the sum of eval_runtime up to and including this one.

    >>> eval_curve([{"step": 0, "elapsed_s": 2.0, "eval_loss": 6.9, "eval_runtime": 2.0},
    ...             {"step": 10, "elapsed_s": 12.0, "loss": 5.0},
    ...             {"step": 10, "elapsed_s": 15.0, "eval_loss": 4.0, "eval_runtime": 2.5}])
    [(0, 0.0, 6.9), (10, 10.5, 4.0)]
    """
    curve, eval_seconds = [], 0.0
    for record in records:
        if "eval_loss" in record:
            eval_seconds += float(record.get("eval_runtime", 0.0))
            seconds = max(float(record["elapsed_s"]) - eval_seconds, 0.0)
            if curve and curve[-1][0] == int(record["step"]):  # --eval_on_start again after a resume: same weights
                continue
            curve.append((int(record["step"]), round(seconds, 3), float(record["eval_loss"])))
    return curve


def summarize_run(records: list[dict]) -> dict:
    curve = eval_curve(records)
    status = run_status(records)
    final = curve[-1][2] if curve and status == "completed" else math.inf
    steps = curve[-1][0] if curve else 0
    seconds = curve[-1][1] if curve else 0.0
    return {"curve": curve, "final": final, "status": status, "steps": steps, "train_seconds": seconds,
            "s_per_step": seconds / steps if steps else None}


def compare(adamw_runs: list[dict], muon_runs: list[dict]) -> dict:
    """Per seed (paired by position): steps ratio, time-to-target ratio and final-loss gap, then mean ± spread."""
    steps_r, time_r, gaps = [], [], []
    for a, m in zip(adamw_runs, muon_runs):
        target = a["final"]
        s = steps_to_reach([(st, loss) for st, _, loss in m["curve"]], target)
        t = steps_to_reach([(sec, loss) for _, sec, loss in m["curve"]], target)
        steps_r.append(s / a["steps"] if s is not None and a["steps"] else math.inf)
        time_r.append(t / a["train_seconds"] if t is not None and a["train_seconds"] else math.inf)
        gaps.append(m["final"] - a["final"])
        if a.get("machine") != m.get("machine"):  # seconds from two machines do not divide
            time_r[-1] = math.nan

    def summary(values):
        finite = [v for v in values if math.isfinite(v)]  # over the seeds that reached the target
        values = [v for v in values if not math.isnan(v)]  # NaN: not comparable (two machines), not counted
        return {**mean_spread(finite), "reached": len(finite), "of": len(values)} if finite else None

    return {"steps_ratio": summary(steps_r), "time_ratio": summary(time_r), "final_gap": summary(gaps),
            "steps_ratios": steps_r, "time_ratios": time_r,
            "adamw_final": mean_spread([a["final"] for a in adamw_runs]),
            "muon_final": mean_spread([m["final"] for m in muon_runs])}


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
             "--logging_steps", str(cfg.eval_every), "--disable_tqdm", "true"]
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
    from mamba_trainer.run_settings import first_difference, recorded_settings, settings_of

    recorded = recorded_settings(run_dir)
    diff = first_difference(recorded, settings_of(flags, run_dir))
    if diff:
        raise SystemExit(f"error: {run_dir} was made with other settings ({diff[0]}: {diff[1]!r} there, {diff[2]!r} "
                         "now); pass another --variant name or --out, or delete that folder to rerun it")
    return recorded


def train_run(size: str, kind: str, lr: float, seed: int, cfg, adamw_lr: float | None = None) -> dict:
    """One mamba-train process (skipped when its folder already holds a finished run); returns its summary."""
    run_dir = Path(cfg.out) / size / run_name(kind, lr, seed, cfg.variant)
    if is_complete(run_dir):
        recorded = check_same_settings(run_dir, train_flags(size, kind, lr, seed, cfg, run_dir, adamw_lr))
        log(f"{run_dir.name}: done before, reusing it")
    else:
        resumable = getattr(cfg, "resumable", False)
        if run_dir.exists() and not resumable:  # a run cut short: its timing is unusable, so it starts again
            shutil.rmtree(run_dir)
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        # resumable: --resume latest continues a checkpoint, restarts a run killed before one, or starts a new one
        flags = train_flags(size, kind, lr, seed, cfg, run_dir, adamw_lr) + (["--resume", "latest"] if resumable else [])
        env = {**os.environ, "OMP_NUM_THREADS": str(cfg.threads), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
               "TOKENIZERS_PARALLELISM": "false"}
        load = os.getloadavg()
        with open(log_path(run_dir), "a" if resumable else "w") as handle:
            handle.write(shlex.join(["mamba-train", *flags]) + f"\n# load average at start: {load}\n")
            handle.flush()
            rc = subprocess.run([sys.executable, "-m", "mamba_trainer.train", *flags], cwd=ROOT, env=env,
                                stdout=handle, stderr=subprocess.STDOUT).returncode
        if rc not in (0, 3):  # 3: diverged, a result; anything else is a broken run
            raise RuntimeError(f"{run_dir.name} failed (exit {rc}); see {log_path(run_dir)}")
        log_path(run_dir, ".machine.json").write_text(json.dumps(
            {"machine": machine_key(), "load_average_start": load, "load_average_end": os.getloadavg()}) + "\n")
        if not cfg.keep_weights:
            prune(run_dir)
        from mamba_trainer.run_settings import recorded_settings

        recorded = recorded_settings(run_dir)
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


def plot(summary: list[dict], runs: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(summary), 2, figsize=(13, 4.3 * len(summary)), squeeze=False)
    colors = {"adamw": "#d95f02", "muon": "#1b9e77"}
    for row, s in enumerate(summary):
        for kind in ("adamw", "muon"):
            mine = [r for r in runs if r["size"] == s["size"] and r["kind"] == kind and r["lr"] == s[f"{kind}_lr"]]
            mine = sorted({r["seed"]: r for r in mine}.values(), key=lambda r: r["seed"])
            fused = f"{s['fused_blocks']}, " if kind == "muon" and s.get("fused_blocks") else ""
            label = f"{'AdamW' if kind == 'adamw' else 'Muon'} ({fused}lr {s[f'{kind}_lr']:g}, {len(mine)} seeds)"
            for col in (0, 1):
                for i, r in enumerate(mine):
                    points = r["curve"][1:]  # step 0 (~ln vocab) would squash the rest
                    axes[row][col].plot([c[col] for c in points], [c[2] for c in points], color=colors[kind],
                                        alpha=0.9 if i == 0 else 0.45, lw=1.8 if i == 0 else 1.0,
                                        label=label if i == 0 else None)
        target = s["adamw_final"]["mean"]
        sr, tr = s["steps_ratio"], s["time_ratio"]
        text = (f"steps ratio {sr['mean']:.2f} ± {sr['std']:.2f} ({sr['reached']}/{sr['of']} seeds)" if sr
                else "Muon does not reach AdamW's final loss")
        ttext = f"time-to-target ratio {tr['mean']:.2f} ± {tr['std']:.2f}" if tr else "target not reached"
        for col, (xlabel, title) in enumerate((("optimizer step", text), ("training seconds (evals excluded)", ttext))):
            ax = axes[row][col]
            ax.axhline(target, color="#555555", ls=":", lw=1, label=f"AdamW final (mean) {target:.3f}")
            ax.set(xlabel=xlabel, ylabel="eval loss (nats/token)", title=f"{s['size']}: {title}")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def table(summary: list[dict]) -> str:
    def ms(d, digits=2):
        if not d:
            return "not reached"
        partial = f" ({d['reached']}/{d['of']} seeds)" if d.get("reached", 0) < d.get("of", 0) else ""
        return f"{d['mean']:.{digits}f} ± {d['std']:.{digits}f}{partial}"

    lines = ["| model | variant | AdamW lr | Muon lr | AdamW final | Muon final | final gap (Muon-AdamW) "
             "| steps ratio | time-to-target ratio | per-seed steps ratios |", "|---" * 10 + "|"]
    for s in summary:
        per = ", ".join(f"{r:.2f}" if math.isfinite(r) else "> 1" for r in s["steps_ratios"])
        times = ("n/a (runs from two machines)" if all(math.isnan(t) for t in s["time_ratios"])
                 else ms(s["time_ratio"]))
        variant = s["variant"] or "default"
        variant += f" ({s['fused_blocks']})" if s.get("fused_blocks") not in (None, variant) else ""
        lines.append(f"| {s['size']} | {variant} | {s['adamw_lr']:g} | {s['muon_lr']:g} | "
                     f"{ms(s['adamw_final'], 3)} | {ms(s['muon_final'], 3)} | {ms(s['final_gap'], 3)} | "
                     f"{ms(s['steps_ratio'])} | {times} | {per} |")
    return "\n".join(lines)


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
    cfg = p.parse_args(argv)
    if cfg.quick:
        cfg.steps, cfg.seq_len, cfg.seeds, cfg.eval_every = 80, 64, 2, 10
    if cfg.extra and not cfg.variant:
        p.error("--extra needs --variant NAME, so these Muon runs do not reuse the default variant's folders")
    cfg.out = cfg.out or f"results/convergence_{time.strftime('%Y%m%d_%H%M%S')}"
    return cfg


def keep_other_sizes(old: dict, summary: list[dict], runs: list[dict]) -> tuple[list[dict], list[dict]]:
    """Add to this invocation's results the sizes an earlier one wrote (``old``) and this one did not rerun.

    One ``--out`` folder then holds every size's table, runs and plot, whichever command measured them last
    (each summary row keeps the command that produced it). ``old`` is read once, before this invocation
    writes anything, so its own partial writes never hide the earlier sizes.
    """
    done = {s["size"] for s in summary}
    earlier = [{"command": old.get("command"), **s} for s in old.get("summary", []) if s.get("size") not in done]
    order = {size: i for i, size in enumerate(DEFAULT_SIZES)}  # one row order whichever command ran last

    def by_size(row):
        return order.get(row.get("size"), len(order))

    return (sorted(earlier + summary, key=by_size),
            sorted([r for r in old.get("runs", []) if r.get("size") not in done] + runs, key=by_size))


def main(argv=None) -> int:
    cfg = parse(argv)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    info = {"command": shlex.join(["python", "bench/convergence.py", *(sys.argv[1:] if argv is None else argv)]),
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
