"""The lr-transfer study's horizon and batch part (``bench/lr_transfer.py --report`` writes it into summary.md and
rule.json): the best lr at width 192 by steps and batch, its power laws, those laws carried to the long-run presets,
and the longest horizon's best as a bound on them.
"""

from __future__ import annotations

import re
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from lr_transfer import BASE, FAMILIES, architecture, best_lr, condition_name, fit_power, inside  # noqa: E402


def preset_sides(cfg: dict) -> list[tuple[str, str]]:
    """(preset key, optimizer whose lr it is) for each lr a preset sets: Muon's AdamW side is AdamW's."""
    return [("learning_rate", cfg["optimizer"])] + ([("adamw_lr", "adamw")] if cfg["optimizer"] == "muon" else [])


COND_RE = re.compile(r"^s(\d+)_b(\d+)$")


def horizon_md(table) -> tuple[str, dict]:
    """Best lr at width 192 by condition (steps, batch): the horizon and batch trends."""
    trend = defaultdict(dict)
    for (cond, family, kind, variant, width), res in table.items():
        if width == 192 and variant == "":
            grid, fine = best_lr(res)
            if grid is not None:
                trend[f"{family}/{kind}"][cond] = {"grid": grid, "refined": fine, "points": len(res),
                                                   "settled": inside(res, grid), "lowest": grid == min(res)}
    lines = ["### Best lr at width 192 by horizon and batch", "", "| family / optimizer | condition | points | best (refined) |",
             "|---|---|---|---|"]
    for key in sorted(trend):
        for cond in sorted(trend[key], key=lambda c: tuple(int(x) for x in re.findall(r"\d+", c))):
            t = trend[key][cond]
            edge = "" if t["settled"] else " (on its grid's edge)"
            lines.append(f"| {key} | {cond} | {t['points']} | {t['grid']:g} ({t['refined']:.3g}){edge} |")
    fits = trend_exponents(trend)
    if fits:
        lines += ["", "Power laws through the settled bests at width 192 (best lr ~ steps^h at batch "
                  f"{BASE['batch']}; ~ batch^b at {BASE['steps']} steps):", ""]
        for key, f in sorted(fits.items()):
            parts = [f"{name} {f[name]:+.2f} (from {', '.join(f[name + '_from'])}"
                     + "".join(f"; {a} to {b}: {x:+.2f}" for a, b, x in f.get(name + "_local", [])) + ")"
                     for name in ("h", "b") if name in f]
            lines.append(f"- {key}: " + "; ".join(parts))
    return "\n".join(lines) + "\n", trend


def trend_exponents(trend) -> dict:
    """Per family/optimizer: ``h``, the exponent of steps through the settled batch-``BASE`` bests (two or more
    horizons), and ``b``, of batch through the settled ``BASE``-steps bests (two or more batches); each with the
    conditions it came from."""
    fits = {}
    for key, conds in trend.items():
        settled = {tuple(map(int, COND_RE.match(c).groups())): v["refined"] for c, v in conds.items()
                   if v["settled"] and COND_RE.match(c)}
        out = {}
        for name, pick, axis in (("h", lambda sb: sb[1] == BASE["batch"], 0),
                                 ("b", lambda sb: sb[0] == BASE["steps"], 1)):
            pts = {sb[axis]: lr for sb, lr in settled.items() if pick(sb)}
            if len(pts) >= 2:
                # fit_power fits lr = c * (x / 192) ** alpha: the exponent is the same for any reference point
                out[name] = fit_power(pts)[1]
                names = [condition_name(*((x, BASE["batch"]) if axis == 0 else (BASE["steps"], x))) for x in sorted(pts)]
                out[name + "_from"] = names
                if len(pts) >= 3:  # the exponent between neighbours: does the trend bend?
                    xs = sorted(pts)
                    out[name + "_local"] = [[names[i], names[i + 1], fit_power({x: pts[x] for x in xs[i:i + 2]})[1]]
                                            for i in range(len(xs) - 1)]
        if out:
            fits[key] = out
    return fits


#: the long-run presets the extrapolation table carries the trends to (the ones a user leaves a GPU busy with)
EXTRAPOLATE_PRESETS = ("default", "muon_default")


def extrapolate(rule, fits) -> list[dict]:
    """What the measured trends give at each of ``EXTRAPOLATE_PRESETS``' horizon and tokens per step: the best lr at
    width 512 (base condition) x (steps / base steps)^h x (tokens per step / base tokens per step)^b, per family and
    side (Muon's AdamW side takes AdamW's trend), against the lr the preset states at width 512. ``h``/``b`` are the
    width-192 exponents; a side without both, or without a best at 512, gives no row."""
    from configs.model_configs import TRAINING_CONFIGS

    base_tokens = BASE["batch"] * BASE["seq_len"]
    rows = []
    for name in EXTRAPOLATE_PRESETS:
        cfg = TRAINING_CONFIGS[name]
        steps = cfg["max_steps"]
        tokens = cfg["per_device_train_batch_size"] * cfg["gradient_accumulation_steps"] * cfg["max_seq_length"]
        for family in FAMILIES:
            for key, kind in preset_sides(cfg):
                best = ((rule.get(f"{family}/{kind}") or {}).get("best") or {}).get(512)
                f = fits.get(f"{family}/{kind}") or {}
                if not best or "h" not in f or "b" not in f:
                    continue
                lr = best["refined"] * (steps / BASE["steps"]) ** f["h"] * (tokens / base_tokens) ** f["b"]
                rows.append({"preset": name, "family": family, "side": key, "kind": kind, "steps": steps,
                             "tokens": tokens, "best_512": best["refined"], "h": f["h"], "b": f["b"],
                             "trend_lr": lr, "preset_lr": cfg[key], "lr_width": cfg.get("lr_width")})
    return rows


def extrapolation_md(rows) -> str:
    if not rows:
        return ""
    base_tokens = BASE["batch"] * BASE["seq_len"]
    lines = ["### The trends carried to the presets' horizon and batch (at width 512)", "",
             f"Best lr at width 512 ({BASE['steps']} steps of {base_tokens:,} tokens) x "
             f"(steps / {BASE['steps']})^h x (tokens per step / {base_tokens:,})^b, with width "
             "192's h and b (least squares through every settled point): how far the presets' "
             "horizon and batch sit from what was measured, and what the trends would say there.", "",
             "| preset | family | side | steps (x measured) | tokens/step (x measured) | best at 512 | h | b "
             "| trend's lr | preset's lr | preset / trend |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| `{r['preset']}` | {r['family']} | "
                     f"{'AdamW side' if r['side'] == 'adamw_lr' else 'AdamW' if r['kind'] == 'adamw' else 'Muon'} | {r['steps']:,} "
                     f"(x{r['steps'] / BASE['steps']:.0f}) | {r['tokens']:,} (x{r['tokens'] / base_tokens:.0f}) "
                     f"| {r['best_512']:.3g} | {r['h']:+.2f} | {r['b']:+.2f} | {r['trend_lr']:.2g} | {r['preset_lr']:g} "
                     f"| {r['preset_lr'] / r['trend_lr']:.2g} |")
    return "\n".join(lines) + "\n"


def ceilings(trend, fits) -> dict:
    """Per family/optimizer, the best lr at the longest horizon measured at width 192 (batch ``BASE``), and whether
    it bounds the long-run presets from above: it does when every measured horizon step lowered the best lr (each
    ``h_local``, or ``h`` for two horizons, <= 0) and the larger batch did not raise it (``b`` <= 0): the presets run
    longer and with larger batches than any proxy. A best on its grid's low edge (two or more points) is a bound
    too (the bowl's minimum lies at or below it); one on its high edge is not used."""
    out = {}
    for key, conds in trend.items():
        horizons = {int(COND_RE.match(c).group(1)): (c, v) for c, v in conds.items()
                    if COND_RE.match(c) and int(COND_RE.match(c).group(2)) == BASE["batch"]
                    and (v["settled"] or (v.get("lowest") and v["points"] >= 2))}
        if not horizons:
            continue
        cond, v = horizons[max(horizons)]
        f = fits.get(key) or {}
        steps_exps = [x for *_, x in f.get("h_local", [])] or ([f["h"]] if "h" in f else [])
        why = ("fewer than two horizons measured" if not steps_exps
               else f"the best lr rose with the horizon (h {max(steps_exps):+.2f})" if max(steps_exps) > 0
               else "no batch measured" if "b" not in f
               else f"the best lr rose with the batch (b {f['b']:+.2f})" if f["b"] > 0 else "")
        out[key] = {"condition": cond, "best_192": v["refined"] if v["settled"] else v["grid"],
                    "settled": v["settled"], "bounds": not why, "why_not": why}
    return out


def preset_bounds(bounds) -> list[dict]:
    """Each long-run preset's lr (stated at width 512) against its family's bound carried to 512 by the presets'
    width rule (configs/lr_rule.py), per side (Muon's AdamW side against AdamW's bound)."""
    from configs import lr_rule
    from configs.model_configs import TRAINING_CONFIGS
    from configs.training_presets import PRESETS

    rows = []
    for name in PRESETS:
        cfg = TRAINING_CONFIGS[name]
        if cfg.get("lr_width") != 512:
            continue
        for family in FAMILIES:
            for key, kind in preset_sides(cfg):
                c = bounds.get(f"{family}/{kind}")
                if c is None:
                    continue
                at_512 = lr_rule.carry(c["best_192"], 192, 512, architecture(family), kind)
                rows.append({"preset": name, "family": family, "side": key, "kind": kind, **c, "bound_512": at_512,
                             "preset_lr": cfg[key], "above": c["bounds"] and cfg[key] > at_512})
    return rows


def bounds_md(rows) -> str:
    """One line per family and optimizer: the bound, and each long-run preset's lr on that side against it."""
    if not rows:
        return ""
    lines = ["### The long-run presets against the longest horizon measured (at width 512)", "",
             "The best lr at width 192 at the longest horizon measured, carried to 512 by the presets' width rule "
             "(configs/lr_rule.py). Where every measured horizon step and the larger batch lowered the best lr, it "
             "bounds the presets' lr from above: they run longer, with larger batches, than any proxy.", "",
             "| family / optimizer | from | best at 192 | at 512 | a bound? | presets' lr at 512 (x the bound) |",
             "|---|---|---|---|---|---|"]
    by_side = defaultdict(list)
    for r in rows:
        by_side[f"{r['family']}/{r['kind']}"].append(r)
    for key, side in by_side.items():
        r = side[0]
        cells = [f"`{x['preset']}`{' (AdamW side)' if x['side'] == 'adamw_lr' else ''} {x['preset_lr']:g} "
                 + (f"(**x{x['preset_lr'] / x['bound_512']:.2g}, above**)" if x["above"]
                    else f"(x{x['preset_lr'] / x['bound_512']:.2g})") for x in side]
        lines.append(f"| {key} | {r['condition']}{'' if r['settled'] else ' (low edge)'} | {r['best_192']:.3g} "
                     f"| {r['bound_512']:.3g} | {'yes' if r['bounds'] else 'no: ' + r['why_not']} | {'; '.join(cells)} |")
    return "\n".join(lines) + "\n"
