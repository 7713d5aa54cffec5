"""Muon vs AdamW, measured: how many steps Muon needs to reach AdamW's final validation loss.

    python bench/convergence.py          # hybrid-tiny + mamba-tiny, 150 steps of 8x128, 3 lrs each, 3 seeds
    python bench/convergence.py --quick  # 80 steps of 8x64 tokens, 2 seeds (what docs/benchmarks.md ran)
    python bench/convergence.py --sizes hybrid-tiny --steps 300 --seeds 3 --plot docs/images/x.png

Method, per model size (both optimizers on the same data order and initial weights for a given seed):
1. Tune AdamW (the ``demo`` preset: wd 0.1, betas 0.9/0.95, cosine, 10% warmup, clip 1.0) over an lr grid
   (default 1e-3, 2e-3, 4e-3; seed 0). If the best lr is at the grid's edge, one more point beyond it is run.
2. Tune Muon (``muon_demo``: wd 0.01, momentum 0.85 -> 0.95 over 15% of the run, Nesterov, NS5) over its matrix
   lr grid (default 1e-2, 2e-2, 4e-2), with its AdamW side (embeddings, norms, SSM scalars) at AdamW's tuned lr.
3. Both again at their tuned lrs with seeds 1..k-1 (seed 0 is reused from the grid).
4. Per seed: target = AdamW's final val loss (at step S); Muon's steps-to-target = the first crossing of its eval
   curve (linear between evals); ratio = steps-to-target / S (< 1: Muon is faster; "not reached" counts as > 1).
   Caveat: both runs use a cosine schedule over S steps, so Muon's loss at step s < S is that of an unannealed run;
   the ratio is conservative for Muon (a run scheduled to end at s would be lower there).
5. Equal wall-clock: each optimizer's val loss at T = min(training seconds of the two runs) (evals excluded),
   interpolated over its eval points.

It uses the project's model builder, bundled data pipeline, optimizer factory (``build_optimizer``), LR schedule
(``transformers.get_scheduler``) and momentum ramp, in a short loop of its own rather than ``mamba-train`` (no
start-up cost per run). Val loss: mean cross-entropy per target token on a fixed held-out set. Timings on a shared
machine are noisy; the load average is recorded. One thread by default: on a shared 2-core machine, two torch
threads made a hybrid-tiny step 6-10x slower (12-30 s instead of ~2 s) once other processes competed for the cores.
Cost on the shared 2-core dev box (load average 3-6 from other jobs): ``--quick`` (19 runs, 1,520 steps of 8x64
tokens) took 30 min; a hybrid-tiny 8x128 step took ~2 s there, so the full default (20-24 runs, 3,000-3,600 steps
of 8x128) needs roughly 2 h under that load. Its idle-machine time was not measured.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from configs.model_configs import get_training_config  # noqa: E402
from optimizers import momentum_at_step  # noqa: E402

DEFAULT_SIZES = ("hybrid-tiny", "mamba-tiny")


# ---- pure helpers -----------------------------------------------------------------------------------------------
def steps_to_reach(curve: list[tuple[int, float]], target: float) -> float | None:
    """First step at which ``curve`` [(step, loss)] reaches ``target``, linear between points; None if never.

    >>> steps_to_reach([(0, 5.0), (10, 4.0), (20, 3.0)], 3.5)
    15.0
    >>> steps_to_reach([(0, 5.0), (10, 4.0)], 3.0) is None
    True
    """
    for (s0, l0), (s1, l1) in zip(curve, curve[1:]):
        if l1 <= target:
            if l0 <= target:
                return float(s0)
            return s0 + (l0 - target) / (l0 - l1) * (s1 - s0)
    return float(curve[0][0]) if curve and curve[0][1] <= target else None


def value_at(xs: list[float], ys: list[float], x: float) -> float:
    """Linear interpolation of (xs, ys) at x (clamped to the ends).

    >>> value_at([0, 10], [4.0, 2.0], 5)
    3.0
    """
    if x <= xs[0]:
        return ys[0]
    for x0, x1, y0, y1 in zip(xs, xs[1:], ys, ys[1:]):
        if x <= x1:
            return y0 + (y1 - y0) * (x - x0) / (x1 - x0) if x1 > x0 else y1
    return ys[-1]


def pick_best(results: dict[float, float]) -> tuple[float, bool]:
    """(lr with the lowest finite final loss, whether it sits at the grid's edge)."""
    finite = {lr: loss for lr, loss in results.items() if math.isfinite(loss)}
    if not finite:
        raise RuntimeError("every lr diverged; lower the grid")
    best = min(finite, key=finite.get)
    lrs = sorted(results)
    return best, best in (lrs[0], lrs[-1])


def mean_spread(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values), "n": len(values), "values": values}


# ---- training ---------------------------------------------------------------------------------------------------
class Data:
    """Packed bundled-math blocks (train) and a fixed held-out set (eval), as tensors."""

    def __init__(self, seq_len: int, eval_sequences: int):
        from mamba_trainer.data import build_datasets
        from mamba_trainer.tokenizer import load_tokenizer

        self.tokenizer = load_tokenizer("bundled")
        train, evals, info = build_datasets(self.tokenizer, max_seq_length=seq_len, max_eval_examples=4 * eval_sequences,
                                            seed=0)
        self.train_ids = torch.tensor(train["input_ids"])
        self.train_labels = torch.tensor(train["labels"])
        self.eval_ids = torch.tensor(evals["input_ids"][:eval_sequences])
        self.eval_labels = torch.tensor(evals["labels"][:eval_sequences])
        self.info = {"train_sequences": len(train), "eval_sequences": len(self.eval_ids), "seq_len": seq_len,
                     "eval_target_tokens": int((self.eval_labels[:, 1:] != -100).sum())}


@torch.no_grad()
def evaluate(model, data: Data, batch: int) -> float:
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(data.eval_ids), batch):
        ids, labels = data.eval_ids[i:i + batch], data.eval_labels[i:i + batch]
        logits = model(input_ids=ids).logits[:, :-1].float()
        target = labels[:, 1:]
        total += F.cross_entropy(logits.reshape(-1, logits.size(-1)), target.reshape(-1), ignore_index=-100,
                                 reduction="sum").item()
        count += int((target != -100).sum())
    model.train()
    return total / count


def train_run(size: str, kind: str, lr: float, seed: int, data: Data, cfg: SimpleNamespace,
              adamw_lr: float | None = None) -> dict:
    """One run; returns its eval curve [(step, train_seconds, val_loss)] and timing."""
    from transformers import get_scheduler

    from mamba_trainer.models import build_model
    from mamba_trainer.trainer import build_optimizer

    preset = get_training_config("muon_demo" if kind == "muon" else "demo")
    tok = data.tokenizer
    model = build_model(size, vocab_size=len(tok), pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                        eos_token_id=tok.eos_token_id, seed=seed)
    model.train()
    args = SimpleNamespace(learning_rate=lr, weight_decay=preset["weight_decay"], adam_beta1=preset["adam_beta1"],
                           adam_beta2=preset["adam_beta2"], adam_epsilon=preset["adam_epsilon"])
    muon = {}
    if kind == "muon":
        muon = dict(momentum=preset["momentum"], nesterov=preset["nesterov"], backend=preset["backend"],
                    ns_steps=preset["ns_steps"], adjust_lr=preset["adjust_lr"], adamw_lr=adamw_lr,
                    beta2=preset["muon_beta2"])
    optimizer = build_optimizer(model, kind, args, verbose=False, **muon)
    steps = cfg.steps
    # the presets' warmup (20 of 200 steps) and momentum ramp (30 of 200) as fractions of this run
    warmup = round(steps * preset["warmup_steps"] / preset["max_steps"])
    ramp = round(steps * preset["momentum_warmup_steps"] / preset["max_steps"])
    scheduler = get_scheduler(preset["lr_scheduler_type"], optimizer, num_warmup_steps=warmup, num_training_steps=steps)
    order = torch.randperm(len(data.train_ids), generator=torch.Generator().manual_seed(seed))
    curve = [(0, 0.0, evaluate(model, data, cfg.batch))]
    seconds, step_times, diverged = 0.0, [], None
    for step in range(steps):
        idx = order[(step * cfg.batch) % len(order):][:cfg.batch]
        started = time.perf_counter()
        if kind == "muon":
            for group in optimizer.param_groups:
                if group.get("use_muon"):
                    group["momentum"] = momentum_at_step(step, preset["momentum_warmup_start"], preset["momentum"], ramp)
        loss = model(input_ids=data.train_ids[idx], labels=data.train_labels[idx]).loss
        if not math.isfinite(loss.item()):
            diverged = f"loss {loss.item()} at step {step + 1}"
            break
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), preset["max_grad_norm"])
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        elapsed = time.perf_counter() - started
        seconds += elapsed
        step_times.append(elapsed)
        if (step + 1) % cfg.eval_every == 0 or step + 1 == steps:
            curve.append((step + 1, round(seconds, 3), evaluate(model, data, cfg.batch)))
    final = curve[-1][2] if diverged is None else math.inf
    return {"size": size, "kind": kind, "lr": lr, "adamw_lr": adamw_lr, "seed": seed, "curve": curve,
            "final": final, "train_seconds": seconds, "median_step_s": statistics.median(step_times) if step_times else None,
            "diverged": diverged}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def tune(size: str, kind: str, grid: list[float], data: Data, cfg, runs: list, adamw_lr=None) -> float:
    results = {}

    def one(lr):
        r = train_run(size, kind, lr, 0, data, cfg, adamw_lr)
        runs.append(r)
        results[lr] = r["final"]
        log(f"{size} {kind} lr {lr:g} seed 0: final val loss {r['final']:.4f} "
            f"({r['train_seconds']:.0f}s, {r['median_step_s']:.3f}s/step)"
            + (f" DIVERGED {r['diverged']}" if r["diverged"] else ""))

    for lr in grid:
        one(lr)
    best, edge = pick_best(results)
    if edge and cfg.extend:
        factor = grid[1] / grid[0] if len(grid) > 1 else 2.0
        nxt = best * factor if best == max(results) else best / factor
        log(f"{size} {kind}: best lr {best:g} is at the grid edge; trying {nxt:g}")
        one(nxt)
        best, edge = pick_best(results)
    log(f"{size} {kind}: tuned lr {best:g}" + (" (still at the grid edge)" if edge else ""))
    return best


def compare(size: str, adamw_runs: list[dict], muon_runs: list[dict], steps: int) -> dict:
    ratios, reached, at_time, time_ratio = [], [], {"adamw": [], "muon": []}, []
    for a, m in zip(adamw_runs, muon_runs):
        target = a["final"]
        s = steps_to_reach([(st, loss) for st, _, loss in m["curve"]], target)
        reached.append(s is not None)
        ratios.append(s / steps if s is not None else math.inf)
        t = min(a["train_seconds"], m["train_seconds"])
        for key, run in (("adamw", a), ("muon", m)):
            at_time[key].append(value_at([c[1] for c in run["curve"]], [c[2] for c in run["curve"]], t))
        time_ratio.append(m["median_step_s"] / a["median_step_s"])
    finite = [r for r in ratios if math.isfinite(r)]  # the summary is over the seeds that reached the target
    return {
        "size": size, "adamw_lr": adamw_runs[0]["lr"], "muon_lr": muon_runs[0]["lr"],
        "adamw_final": mean_spread([a["final"] for a in adamw_runs]),
        "muon_final": mean_spread([m["final"] for m in muon_runs]),
        "ratio": mean_spread(finite) if finite else None, "ratios": ratios, "reached": reached,
        "equal_time_adamw": mean_spread(at_time["adamw"]), "equal_time_muon": mean_spread(at_time["muon"]),
        "step_time_ratio": mean_spread(time_ratio),
        "adamw_step_s": mean_spread([a["median_step_s"] for a in adamw_runs]),
        "muon_step_s": mean_spread([m["median_step_s"] for m in muon_runs]),
    }


def plot(summary: list[dict], runs: list[dict], path: Path, steps: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(summary), 2, figsize=(13, 4.3 * len(summary)), squeeze=False)
    colors = {"adamw": "#d95f02", "muon": "#1b9e77"}
    for row, s in enumerate(summary):
        for kind, lr in (("adamw", s["adamw_lr"]), ("muon", s["muon_lr"])):
            mine = [r for r in runs if r["size"] == s["size"] and r["kind"] == kind and r["lr"] == lr]
            mine = sorted({r["seed"]: r for r in mine}.values(), key=lambda r: r["seed"])
            label = f"{'AdamW' if kind == 'adamw' else 'Muon'} (lr {lr:g}, {len(mine)} seeds)"
            for col, xi in enumerate((0, 1)):
                ax = axes[row][col]
                for i, r in enumerate(mine):
                    ax.plot([c[xi] for c in r["curve"]], [c[2] for c in r["curve"]], color=colors[kind],
                            alpha=0.9 if i == 0 else 0.45, lw=1.8 if i == 0 else 1.0, label=label if i == 0 else None)
        target = s["adamw_final"]["mean"]
        for col in (0, 1):
            ax = axes[row][col]
            ax.axhline(target, color="#555555", ls=":", lw=1, label=f"AdamW final (mean) {target:.3f}")
            ax.set_ylabel("val loss (nats/token)")
            ax.grid(alpha=0.3)
            shown = [r for r in runs if r["size"] == s["size"] and r["lr"] in (s["adamw_lr"], s["muon_lr"])]
            losses = [c[2] for r in shown for c in r["curve"][1:] if math.isfinite(c[2])]
            early = [r["curve"][1][2] for r in shown if len(r["curve"]) > 2 and math.isfinite(r["curve"][1][2])]
            if losses and early:  # from the first eval after step 0 down: the start (~ln vocab) would squash the rest
                ax.set_ylim(min(losses) - 0.05, max(early) + 0.05)
        ratio = s["ratio"]
        text = (f"Muon reaches AdamW's final loss at {ratio['mean']:.2f} x its steps (± {ratio['std']:.2f}, "
                f"{sum(s['reached'])}/{len(s['reached'])} seeds)" if ratio else "Muon does not reach AdamW's final loss")
        axes[row][0].set_title(f"{s['size']}: val loss vs step\n{text}", fontsize=10)
        axes[row][0].set_xlabel("optimizer step")
        if ratio:
            axes[row][0].axvline(ratio["mean"] * steps, color=colors["muon"], ls="--", lw=1)
        axes[row][1].set_title(f"{s['size']}: val loss vs training seconds (evals excluded)\n"
                               f"equal time: Muon {s['equal_time_muon']['mean']:.3f} vs AdamW "
                               f"{s['equal_time_adamw']['mean']:.3f}; "
                               f"Muon step = {s['step_time_ratio']['mean']:.2f} x AdamW's",
                               fontsize=10)
        axes[row][1].set_xlabel("training seconds on this machine")
        axes[row][0].legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def table(summary: list[dict], cfg) -> str:
    def ms(d, digits=3):
        return f"{d['mean']:.{digits}f} ± {d['std']:.{digits}f}"

    lines = ["| model | AdamW lr | Muon lr | AdamW final val loss | Muon final val loss | steps ratio (Muon/AdamW) "
             "| per-seed ratios | val loss at equal time: AdamW / Muon | Muon step time / AdamW |",
             "|---|---|---|---|---|---|---|---|---|"]
    for s in summary:
        ratio = ms(s["ratio"], 2) if s["ratio"] else "not reached"
        if s["ratio"] and not all(s["reached"]):
            ratio += f" ({sum(s['reached'])}/{len(s['reached'])} seeds reached)"
        per = ", ".join(f"{r:.2f}" if math.isfinite(r) else "> 1" for r in s["ratios"])
        lines.append(f"| {s['size']} | {s['adamw_lr']:g} | {s['muon_lr']:g} | {ms(s['adamw_final'])} | "
                     f"{ms(s['muon_final'])} | {ratio} | {per} | {s['equal_time_adamw']['mean']:.3f} / "
                     f"{s['equal_time_muon']['mean']:.3f} | {ms(s['step_time_ratio'], 2)} |")
    return "\n".join(lines)


def machine() -> dict:
    cpu = "?"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version(), "load_average": os.getloadavg()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Muon vs AdamW convergence on the bundled data (CPU-sized).")
    p.add_argument("--sizes", default=",".join(DEFAULT_SIZES), help="model sizes (default: hybrid-tiny,mamba-tiny)")
    p.add_argument("--steps", type=int, default=150, help="optimizer steps per run")
    p.add_argument("--batch", type=int, default=8, help="sequences per step")
    p.add_argument("--seq_len", type=int, default=128, help="tokens per sequence")
    p.add_argument("--eval_every", type=int, default=10, help="steps between evaluations")
    p.add_argument("--eval_sequences", type=int, default=64, help="held-out sequences in the fixed eval set")
    p.add_argument("--seeds", type=int, default=3, help="seeds at the tuned lrs (seed 0 is the tuning run)")
    p.add_argument("--adamw_lrs", default="1e-3,2e-3,4e-3", help="AdamW lr grid (demo preset: 2e-3)")
    p.add_argument("--muon_lrs", default="1e-2,2e-2,4e-2", help="Muon matrix lr grid (muon_demo preset: 2e-2)")
    p.add_argument("--no_extend", dest="extend", action="store_false", help="no extra lr when the best is at an edge")
    p.add_argument("--quick", action="store_true", help="80 steps of 8x64 tokens, 2 seeds")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1; see the module docstring)")
    p.add_argument("--out", default=None, help="folder for results.json and the plot (default results/convergence_<time>)")
    p.add_argument("--plot", default=None, help="also save the plot here (e.g. docs/images/convergence_muon_vs_adamw.png)")
    cfg = p.parse_args(argv)
    if cfg.quick:
        cfg.steps, cfg.seq_len, cfg.seeds = 80, 64, 2
    torch.set_num_threads(cfg.threads)
    sizes = [s for s in cfg.sizes.split(",") if s]
    out = Path(cfg.out or f"results/convergence_{time.strftime('%Y%m%d_%H%M%S')}")
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    command = " ".join(["python", "bench/convergence.py", *(argv or sys.argv[1:])])
    info = {"machine_start": machine(), "args": vars(cfg), "command": command}
    log(f"machine: {info['machine_start']}")
    data = Data(cfg.seq_len, cfg.eval_sequences)
    info["data"] = data.info
    log(f"data: {data.info}")
    runs, summary = [], []
    for size in sizes:
        adamw_lr = tune(size, "adamw", [float(x) for x in cfg.adamw_lrs.split(",")], data, cfg, runs)
        muon_lr = tune(size, "muon", [float(x) for x in cfg.muon_lrs.split(",")], data, cfg, runs, adamw_lr=adamw_lr)
        pick = {}
        for kind, lr in (("adamw", adamw_lr), ("muon", muon_lr)):
            pick[kind] = [next(r for r in runs
                               if r["size"] == size and r["kind"] == kind and r["lr"] == lr and r["seed"] == 0)]
            for seed in range(1, cfg.seeds):
                r = train_run(size, kind, lr, seed, data, cfg, adamw_lr if kind == "muon" else None)
                runs.append(r)
                pick[kind].append(r)
                log(f"{size} {kind} lr {lr:g} seed {seed}: final val loss {r['final']:.4f} ({r['train_seconds']:.0f}s)")
        s = compare(size, pick["adamw"], pick["muon"], cfg.steps)
        summary.append(s)
        log(f"{size}: steps ratio {s['ratio']['mean'] if s['ratio'] else 'not reached'}; per seed {s['ratios']}")
        (out / "results.json").write_text(json.dumps({**info, "summary": summary, "runs": runs}, indent=1, default=str))
    info["machine_end"] = machine()
    info["wall_minutes"] = round((time.time() - started) / 60, 1)
    (out / "results.json").write_text(json.dumps({**info, "summary": summary, "runs": runs}, indent=1, default=str))
    plot(summary, runs, out / "convergence.png", cfg.steps)
    if cfg.plot:
        plot(summary, runs, Path(cfg.plot), cfg.steps)
    md = table(summary, cfg)
    (out / "summary.md").write_text(md + "\n")
    print(md)
    log(f"done in {info['wall_minutes']} min; results in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
