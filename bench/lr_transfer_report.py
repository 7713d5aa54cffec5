"""Tables, the fitted lr rule and the muP-style plots of the lr-transfer study (``bench/lr_transfer.py --report``).

Reads every finished run folder under the study's ``--out`` (``<condition>/<size>/<run>/metrics.jsonl``), so it
reports whatever part of the study has run. Writes ``summary.md``, ``rule.json`` and ``lr_transfer_<family>.png``
(final eval loss vs lr, one curve per width, for AdamW and Muon side by side; plus best lr vs horizon).
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import convergence  # noqa: E402
from mamba_trainer.rundir import RunConfig  # noqa: E402
from lr_transfer import (BASE, FAMILIES, FIT_WIDTHS, best_lr, condition_name, fit_power, inside,  # noqa: E402
                         rule_fit_widths)
from lr_transfer_horizon import (bounds_md, ceilings, extrapolate, extrapolation_md, horizon_md,  # noqa: E402
                                 preset_bounds, trend_exponents)

RUN_RE = re.compile(r"^(adamw|muon)(?:_(.+))?_lr([0-9.e+-]+)_seed(\d+)$")
SIZE_RE = re.compile(r"^proxy-(\w+)-(\d+)$")
BASE_CONDITION = condition_name(BASE["steps"], BASE["batch"])
#: the sweep widths the presets' rule is fitted through (FIT_WIDTHS predict 1,024 first); 640 and 768 are held out
RULE_WIDTHS = (*FIT_WIDTHS, 1024)


def collect(out: Path) -> list[dict]:
    """One record per finished run folder: condition, family, width, kind, variant, lr, seed, final, curve."""
    runs = []
    for metrics in sorted(out.glob("*/*/*/metrics.jsonl")):
        run_dir = metrics.parent
        name, size, condition = run_dir.name, run_dir.parent.name, run_dir.parent.parent.name
        m, s = RUN_RE.match(name), SIZE_RE.match(size)
        if not (m and s) or not convergence.is_complete(run_dir):
            continue
        summary = convergence.summarize_run(convergence.read_metrics(run_dir))
        config = RunConfig.read(run_dir)
        runs.append({"condition": condition, "family": s.group(1), "width": int(s.group(2)), "kind": m.group(1),
                     "variant": m.group(2) or "", "lr": float(m.group(3)), "seed": int(m.group(4)),
                     "adamw_lr": config.adamw_lr, "final": summary["final"],
                     "status": summary["status"], "steps": summary["steps"], "curve": summary["curve"],
                     "params": config.num_parameters,
                     # the study's runs share the CPU with other work: their seconds are not compared
                     "train_seconds": None, "machine": None})
    return runs


def sweeps(runs: list[dict]) -> dict[tuple, dict[float, float]]:
    """(condition, family, kind, variant, width) -> {lr: final loss} over seed 0."""
    table = defaultdict(dict)
    for r in runs:
        if r["seed"] == 0:
            table[(r["condition"], r["family"], r["kind"], r["variant"], r["width"])][r["lr"]] = r["final"]
    return table


def within(predicted: float, measured: float, factor: float = 2.0) -> bool:
    """Whether ``predicted`` is within ``factor`` of ``measured`` (both ways)."""
    return max(predicted / measured, measured / predicted) <= factor * (1 + 1e-9)


def loss_at(results: dict[float, float], lr: float) -> float | None:
    """The final loss a sweep puts at ``lr``: linear in log2(lr) between the two measured lrs around it; None
    outside the measured range (or next to a diverged run).

    >>> loss_at({1e-3: 2.0, 4e-3: 3.0}, 2e-3), loss_at({1e-3: 2.0, 4e-3: 3.0}, 8e-3)
    (2.5, None)
    """
    lrs = sorted(results)
    for lo, hi in zip(lrs, lrs[1:]):
        if lo <= lr <= hi and math.isfinite(results[lo]) and math.isfinite(results[hi]):
            t = math.log2(lr / lo) / math.log2(hi / lo)
            return results[lo] + t * (results[hi] - results[lo])
    return None


def rule_from(table) -> dict:
    """Per family and optimizer: the best lr at each width of the base condition, the power law fitted through the
    fit widths, and how its prediction compares with the measured best at every other width."""
    rule = {}
    for family in FAMILIES:
        for kind in ("adamw", "muon"):
            widths = sorted(w for (c, f, k, v, w) in table if (c, f, k, v) == (BASE_CONDITION, family, kind, ""))
            best = {}
            for w in widths:
                res = table[(BASE_CONDITION, family, kind, "", w)]
                grid, fine = best_lr(res)
                if grid is not None:  # settled: a minimum inside the grid (the study extends past an edge best)
                    settled = inside(res, grid) and len(res) >= (3 if w not in FIT_WIDTHS else 5)
                    best[w] = {"grid": grid, "refined": fine, "points": len(res), "settled": settled}
            fit = {w: best[w]["refined"] for w in FIT_WIDTHS if w in best}
            if len(fit) < 2:
                rule[f"{family}/{kind}"] = {"best": best, "fit": None}
                continue
            res = {w: table[(BASE_CONDITION, family, kind, "", w)] for w in best}
            rule[f"{family}/{kind}"] = {"best": best, **fit_and_check(fit, best, res)}
            # the rule the presets take: refitted through every settled sweep width (1,024 once its grid has a
            # minimum inside it), then checked only at the held-out widths
            wide = {w: best[w]["refined"] for w in RULE_WIDTHS if w in best and best[w]["settled"]}
            if len(wide) > len(fit) and set(fit) <= set(wide):
                every = fit_and_check(wide, {w: b for w, b in best.items() if w not in wide}, res)
                rule[f"{family}/{kind}"].update(fit_all=every["fit"], checks_all=every["checks"])
    return rule


def fit_and_check(fit: dict[int, float], best: dict, sweeps: dict[int, dict[float, float]]) -> dict:
    """{"fit": the power law through ``fit`` (width -> best lr), "checks": its prediction against each of ``best``,
    and what it costs there: the sweep's loss at the predicted lr less its best loss (None outside the sweep)}."""
    c, alpha = fit_power(fit)
    checks = {}
    for w, b in best.items():
        predicted = c * (w / 192) ** alpha
        at = loss_at(sweeps[w], predicted)
        checks[w] = {"predicted": predicted, "measured": b["refined"], "within_2x": within(predicted, b["refined"]),
                     "loss_cost": None if at is None else round(at - min(filter(math.isfinite, sweeps[w].values())), 4)}
    return {"fit": {"lr_at_192": c, "width_exponent": alpha, "fit_widths": sorted(fit)}, "checks": checks}


def fmt_lr(lr):
    return f"{lr:.3g}" if lr is not None else "-"


def check_cells(r: dict, w: int, chk: dict) -> str:
    """The cells "width | predicted | measured best | within 2x | loss cost |" of one check of a fit."""
    mark = "" if r["best"][w]["settled"] else " (grid unfinished or best on its edge)"
    cost = "outside the sweep" if chk["loss_cost"] is None else f"{chk['loss_cost']:+.3f}"
    return (f"{w} | {chk['predicted']:.3g} | {chk['measured']:.3g}{mark} | {'yes' if chk['within_2x'] else 'no'} | "
            f"{cost} |")


def tables_md(table, rule) -> str:
    lines = [f"### Final eval loss by lr, base condition ({BASE['steps']} steps of {BASE['batch']} x {BASE['seq_len']} "
             "tokens, seed 0); **bold** = best", ""]
    for family in FAMILIES:
        for kind, variant in (("adamw", ""), ("muon", ""), ("muon", "rms")):
            keys = sorted(k for k in table if k[:4] == (BASE_CONDITION, family, kind, variant))
            if not keys:
                continue
            lrs = sorted({lr for k in keys for lr in table[k]})
            name = {"adamw": "AdamW", "muon": "Muon (original)"}[kind] if not variant else "Muon (match_rms_adamw)"
            lines += [f"**{family} — {name}**", "", "| width | " + " | ".join(f"{lr:g}" for lr in lrs) + " | best (refined) |",
                      "|---" * (len(lrs) + 2) + "|"]
            for k in keys:
                res = table[k]
                grid, fine = best_lr(res)
                cells = []
                for lr in lrs:
                    v = res.get(lr)
                    text = "" if v is None else ("diverged" if not math.isfinite(v) else f"{v:.4f}")
                    cells.append(f"**{text}**" if lr == grid else text)
                lines.append(f"| {k[4]} | " + " | ".join(cells) + f" | {fmt_lr(grid)} ({fmt_lr(fine)}) |")
            lines.append("")
    lines += ["### The fitted rule (lr = c x (width/192)^alpha, fitted on widths "
              f"{', '.join(map(str, FIT_WIDTHS))}) and how it predicts every width", "",
              "The loss cost is the sweep's final loss at the predicted lr (linear in log2(lr) between the two "
              "runs around it) less its best run's: what following the rule costs there, in nats.", "",
              "| family / optimizer | c (lr at 192) | alpha | width | predicted | measured best | within 2x | "
              "loss cost |",
              "|---|---|---|---|---|---|---|---|"]
    for key, r in rule.items():
        if not r["fit"]:
            lines.append(f"| {key} | not fitted yet ({len(r['best'])} widths done) | | | | | | |")
            continue
        provisional = "" if all(r["best"][w]["settled"] for w in r["fit"]["fit_widths"]) else " (provisional)"
        for w, chk in sorted(r["checks"].items()):
            lines.append(f"| {key} | {r['fit']['lr_at_192']:.3g}{provisional} | {r['fit']['width_exponent']:+.2f} | "
                         + check_cells(r, w, chk))
    refits = {key: r for key, r in rule.items() if r.get("fit_all")}
    if refits:
        lines += ["", "### The rule refitted through every settled sweep width (what `configs/lr_rule.py` takes), "
                  "checked at the held-out widths", "",
                  "| family / optimizer | fitted on widths | c (lr at 192) | alpha | held-out width | predicted | "
                  "measured best | within 2x | loss cost |", "|---|---|---|---|---|---|---|---|---|"]
        for key, r in refits.items():
            f = r["fit_all"]
            widths = ", ".join(map(str, f["fit_widths"]))
            head = f"| {key} | {widths} | {f['lr_at_192']:.3g} | {f['width_exponent']:+.2f} |"
            checks = sorted(r["checks_all"].items()) or [(None, None)]
            for w, chk in checks:
                lines.append(head + (" none run yet | | | | |" if chk is None else " " + check_cells(r, w, chk)))
    return "\n".join(lines) + "\n"


def variants_md(table) -> str:
    """Stage 5: which Muon scale's best lr moves less from 192 to 512 (``original`` against ``match_rms_adamw``), and
    Muon at 512 with its AdamW side at half, once and twice AdamW's best (at Muon's best grid lr)."""
    lines, rows = [], []
    for family in FAMILIES:
        for variant, name in (("", "original"), ("rms", "match_rms_adamw")):
            best = {w: best_lr(table.get((BASE_CONDITION, family, "muon", variant, w), {})) for w in FIT_WIDTHS}
            if all(b[0] is not None for b in best.values()):
                fine = {w: b[1] for w, b in best.items()}
                edge = any(not inside(table[(BASE_CONDITION, family, "muon", variant, w)], best[w][0]) for w in FIT_WIDTHS)
                rows.append(f"| {family} | `{name}` | " + " | ".join(f"{fine[w]:.3g}" for w in FIT_WIDTHS)
                            + f" | {fit_power(fine)[1]:+.2f}{' (an edge best)' if edge else ''} |")
    if rows:
        lines += ["### Which Muon scale transfers across width (stage 5)", "",
                  "| family | `adjust_lr` | " + " | ".join(f"best at {w}" for w in FIT_WIDTHS) + " | width exponent |",
                  "|---|---|" + "---|" * len(FIT_WIDTHS) + "---|", *rows, ""]
    rows = []
    for family in FAMILIES:
        sides = {f: table.get((BASE_CONDITION, family, "muon", f"side_x{f:g}", 512), {}) for f in (0.5, 2.0)}
        if not any(sides.values()):
            continue
        lr = min(set().union(*sides.values()))  # the study runs both sides at one lr: Muon's best grid lr at 512
        own = table.get((BASE_CONDITION, family, "muon", "", 512), {}).get(lr)
        cells = [sides[0.5].get(lr), own, sides[2.0].get(lr)]
        rows.append(f"| {family} | {lr:g} | " + " | ".join("" if v is None else f"{v:.4f}" for v in cells) + " |")
    if rows:
        lines += ["### Muon's AdamW side at width 512 (stage 5): final eval loss at Muon's best grid lr", "",
                  "| family | Muon lr | AdamW side x0.5 | x1 (AdamW's best) | x2 |", "|---|---|---|---|---|", *rows, ""]
    return "\n".join(lines)


def preset_fit(rule, family: str, kind: str) -> dict | None:
    """The fit (rule.json "fit" or "fit_all") through `rule_fit_widths`: the rule the presets follow."""
    entry = rule.get(f"{family}/{kind}") or {}
    return next((f for f in (entry.get("fit"), entry.get("fit_all"))
                 if f and tuple(f["fit_widths"]) == rule_fit_widths(family, kind)), None)


def seeds_md(runs, rule) -> str:
    """At the widest proxy, Muon vs AdamW at the presets' rule's lrs on every seed both have: steps ratio
    (convergence.compare)."""
    lines = ["### Muon vs AdamW at width 1024 at the presets' rule's lrs (steps to AdamW's final eval loss)", ""]
    for family in FAMILIES:
        picks = {}
        for kind in ("adamw", "muon"):
            fit = preset_fit(rule, family, kind)
            if not fit:
                continue
            lr = fit["lr_at_192"] * (1024 / 192) ** fit["width_exponent"]
            mine = [r for r in runs if (r["condition"], r["family"], r["kind"], r["variant"], r["width"])
                    == (BASE_CONDITION, family, kind, "", 1024)]
            if mine:  # the grid point nearest the rule's lr (the study ran the rule's grid point on every seed)
                nearest = min({r["lr"] for r in mine}, key=lambda x: abs(math.log(x / lr)))
                picks[kind] = sorted((r for r in mine if r["lr"] == nearest), key=lambda r: r["seed"])
        if len(picks) < 2:
            lines.append(f"- {family}: not run yet")
            continue
        seeds = sorted({r["seed"] for r in picks["adamw"]} & {r["seed"] for r in picks["muon"]})
        a = [r for r in picks["adamw"] if r["seed"] in seeds]
        m = [r for r in picks["muon"] if r["seed"] in seeds]
        cmp = convergence.compare(a, m)
        ratios = ", ".join(f"{x:.2f}" if math.isfinite(x) else "> 1" for x in cmp["steps_ratios"])
        sr = cmp["steps_ratio"]
        lines.append(f"- {family}: AdamW lr {a[0]['lr']:g}, Muon lr {m[0]['lr']:g}, seeds {seeds}: steps ratio "
                     + (f"{sr['mean']:.2f} ± {sr['std']:.2f} (per seed {ratios})" if sr else f"not reached ({ratios})")
                     + f"; final loss AdamW {cmp['adamw_final']['mean']:.4f}, Muon {cmp['muon_final']['mean']:.4f}")
    return "\n".join(lines) + "\n"


def plot(table, trend, path_for) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for family in FAMILIES:
        fig, axes = plt.subplots(1, 3, figsize=(16, 4.6))
        for ax, (kind, variant, title) in zip(axes[:2], (("adamw", "", "AdamW"), ("muon", "", "Muon (adjust_lr=original)"))):
            keys = sorted(k for k in table if k[:4] == (BASE_CONDITION, family, kind, variant))
            for k in keys:
                res = sorted((lr, v) for lr, v in table[k].items() if math.isfinite(v))
                if res:
                    ax.plot([x for x, _ in res], [y for _, y in res], marker="o", label=f"width {k[4]}")
            rms = sorted(k for k in table if k[:4] == (BASE_CONDITION, family, "muon", "rms"))
            if kind == "muon":
                for k in rms:
                    res = sorted((lr, v) for lr, v in table[k].items() if math.isfinite(v))
                    ax.plot([x for x, _ in res], [y for _, y in res], ls="--", marker="x",
                            label=f"width {k[4]}, match_rms_adamw")
            ax.set(xscale="log", xlabel="learning rate", ylabel="final eval loss", title=f"{family}: {title}")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        ax = axes[2]
        for kind, marker in (("adamw", "o"), ("muon", "s")):
            t = trend.get(f"{family}/{kind}", {})
            pts = sorted((int(re.match(r"s(\d+)_b4$", c).group(1)), v["refined"]) for c, v in t.items()
                         if re.match(r"s(\d+)_b4$", c))
            if pts:
                ax.plot([x for x, _ in pts], [y for _, y in pts], marker=marker, label=f"{kind}, batch 4")
        ax.set(xscale="log", yscale="log", xlabel="steps (horizon)", ylabel="best lr (refined)",
               title=f"{family}: best lr vs horizon (width 192)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = path_for(family)
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written


def report(out: Path, plot_dir: Path | None = None) -> int:
    runs = collect(out)
    table = sweeps(runs)
    rule = rule_from(table)
    horizon, trend = horizon_md(table)
    fits = trend_exponents(trend)
    carried = extrapolate(rule, fits)
    bounds = ceilings(trend, fits)
    md = "\n".join([f"# lr-transfer study: {len(runs)} finished runs", "", tables_md(table, rule), variants_md(table), horizon,
                    extrapolation_md(carried), bounds_md(preset_bounds(bounds)), seeds_md(runs, rule)])
    (out / "summary.md").write_text(md)
    rule["horizon_and_batch"] = fits
    rule["extrapolated_to_presets"] = carried
    rule["longest_horizon_bounds"] = bounds
    (out / "rule.json").write_text(json.dumps(rule, indent=1, sort_keys=True, default=str) + "\n")
    plots = plot(table, trend, lambda f: (plot_dir or out) / f"lr_transfer_{f}.png")
    print(md)
    print("plots: " + ", ".join(map(str, plots)))
    return 0
