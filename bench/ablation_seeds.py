"""Pair one muon-ablate sweep's variants over seeds: per seed, each variant's val loss minus the base's (same seed,
same held-out split), then the mean over the seeds that ran it.

    python bench/ablation_seeds.py bench/results/ablation_seed003 bench/results/ablation_seed003_seed1 \\
        --out bench/results/ablation_seed003_seeds.md

Each folder is a sweep made by ``muon-ablate`` (its ``results.json``, written by the report); the first one is
the full sweep, the others repeat some of its variants with another ``--seed`` (``muon-ablate --only``). Rows are
ordered by the mean paired difference over the seeds a variant ran; variants only the first sweep ran come after.
A paired difference is the honest comparison across seeds: each seed has its own initial weights, data order and
held-out split, so raw val losses of two seeds are not on one scale.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from mamba_trainer.ablate.readers import finite  # noqa: E402
from mamba_trainer.ablate.report import OK  # noqa: E402  the statuses the sweep's own report ranks


def load(sweep_dir: Path) -> dict:
    path = Path(sweep_dir) / "results.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise SystemExit(f"error: {path}: {exc.__class__.__name__}; pass a folder made by muon-ablate "
                         f"(or rebuild its report: muon-ablate --report {sweep_dir})")
    return data


def paired(sweeps: list[dict]) -> list[dict]:
    """One row per variant of the first sweep: val loss, steps and difference to the base, per seed.

    >>> s0 = {"config": {"seed": 42}, "variants": [
    ...     {"slug": "base", "variant": "Base", "is_base": True, "status": "time_budget", "val_loss": 0.30, "steps": 500},
    ...     {"slug": "a", "variant": "A", "is_base": False, "status": "time_budget", "val_loss": 0.25, "steps": 510},
    ...     {"slug": "b", "variant": "B", "is_base": False, "status": "time_budget", "val_loss": 0.28, "steps": 490}]}
    >>> s1 = {"config": {"seed": 1}, "variants": [
    ...     {"slug": "base", "variant": "Base", "is_base": True, "status": "time_budget", "val_loss": 0.20, "steps": 505},
    ...     {"slug": "b", "variant": "B", "is_base": False, "status": "time_budget", "val_loss": 0.21, "steps": 500}]}
    >>> [(r["slug"], [round(d, 3) for d in r["diffs"]], round(r["mean_diff"], 3)) for r in paired([s0, s1])]
    [('base', [0.0, 0.0], 0.0), ('b', [-0.02, 0.01], -0.005), ('a', [-0.05], -0.05)]
    """
    seeds = [s.get("config", {}).get("seed") for s in sweeps]
    by_seed = [{v["slug"]: v for v in s["variants"]} for s in sweeps]
    bases = [next((v for v in s["variants"] if v.get("is_base")), None) for s in sweeps]
    rows = []
    for v in sweeps[0]["variants"]:
        per = []
        for seed, runs, base in zip(seeds, by_seed, bases):
            r = runs.get(v["slug"])
            if r is None or r.get("status") not in OK or not finite(r.get("val_loss")):
                continue
            ok_base = base is not None and finite(base.get("val_loss"))
            per.append({"seed": seed, "val_loss": r["val_loss"], "steps": r.get("steps"),
                        "diff": r["val_loss"] - base["val_loss"] if ok_base else math.nan})
        diffs = [p["diff"] for p in per if finite(p["diff"])]
        rows.append({"slug": v["slug"], "variant": v["variant"], "is_base": bool(v.get("is_base")), "per_seed": per,
                     "diffs": diffs, "mean_diff": statistics.fmean(diffs) if diffs else math.nan,
                     "seeds": len(diffs)})
    # the base, then the variants with most seeds, each group by mean difference (best = most negative)
    rows.sort(key=lambda r: (not r["is_base"], -r["seeds"], r["mean_diff"] if finite(r["mean_diff"]) else math.inf))
    return rows


def table(rows: list[dict], seeds: list) -> str:
    head = ["variant"] + [f"val loss (seed {s})" for s in seeds] + [f"vs base (seed {s})" for s in seeds] + \
        ["mean vs base", "steps per seed"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        per = {p["seed"]: p for p in r["per_seed"]}
        loss = [f"{per[s]['val_loss']:.4f}" if s in per else "" for s in seeds]
        diff = [f"{per[s]['diff']:+.4f}" if s in per and finite(per[s]["diff"]) else "" for s in seeds]
        mean = "base" if r["is_base"] else (f"**{r['mean_diff']:+.4f}**" if r["seeds"] > 1 else
                                            (f"{r['mean_diff']:+.4f}" if finite(r["mean_diff"]) else "—"))
        steps = ", ".join(str(per[s]["steps"]) for s in seeds if s in per)
        lines.append("| " + " | ".join([r["variant"], *loss, *diff, mean, steps]) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("sweeps", nargs="+", type=Path, help="sweep folders: the full sweep first, then its repeats")
    p.add_argument("--out", type=Path, help="also write the table (markdown) here")
    cfg = p.parse_args(argv)
    sweeps = [load(d) for d in cfg.sweeps]
    seeds = [s.get("config", {}).get("seed") for s in sweeps]
    if len(set(seeds)) < len(seeds):
        print(f"error: two sweeps ran with the same seed ({seeds}); repeats need --seed N", file=sys.stderr)
        return 2
    md = table(paired(sweeps), seeds)
    note = ("Val loss: last eval, nats per answer token. vs base: the variant's val loss minus the base's in the "
            "same seed (negative = better); bold: the mean over two or more seeds.")
    print(md + "\n\n" + note)
    if cfg.out:
        cfg.out.write_text(f"<!-- python bench/ablation_seeds.py {' '.join(map(str, cfg.sweeps))} -->\n{md}\n\n{note}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
