"""The convergence bench's analysis (``bench/convergence.py`` runs, this reports): per model size, the steps and
training seconds Muon needs to reach AdamW's final eval loss, the table and the plot.

Everything here reads run summaries (``mamba_trainer.runs.summarize_run``: the eval curve of (step, training seconds,
loss), final loss, status, steps) and never launches a run; ``python bench/convergence.py ... --report`` rebuilds
the results from the run folders through it.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path

#: one row order in every results file, whichever command ran last
DEFAULT_SIZES = ("hybrid-tiny", "mamba-tiny")


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


def mean_spread(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values), "n": len(values), "values": values}


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


def keep_other_sizes(old: dict, summary: list[dict], runs: list[dict]) -> tuple[list[dict], list[dict]]:
    """Add to this invocation's results the sizes an earlier one wrote (``old``) and this one did not rerun.

    One ``--out`` folder then holds every size's table, runs and plot, whichever command measured them last
    (each summary row keeps the command that produced it). ``old`` is read once, before this invocation
    writes anything, so its own partial writes never hide the earlier sizes.
    """
    done = {s["size"] for s in summary}
    earlier = [{"command": old.get("command"), **s} for s in old.get("summary", []) if s.get("size") not in done]
    order = {size: i for i, size in enumerate(DEFAULT_SIZES)}

    def by_size(row):
        return order.get(row.get("size"), len(order))

    return (sorted(earlier + summary, key=by_size),
            sorted([r for r in old.get("runs", []) if r.get("size") not in done] + runs, key=by_size))
