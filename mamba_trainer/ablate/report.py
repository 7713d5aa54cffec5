"""The sweep report, made from run folders alone: ``results.json``, ``results.csv``, ``README.md`` (and plots).

Per variant (units): val loss = the last finite eval loss (nats per target token) and its perplexity and
next-token accuracy; train time = seconds from the first to the last training step, evaluations included,
summed over resumed launches; tokens/s = the median of the logged training throughputs; steps = optimizer
steps done. Improvement vs base = (base val loss - val loss) / base val loss, in % (positive = better).

Rebuilding from the same folders gives the same bytes, except the README's "Generated on" line.
"""

from __future__ import annotations

import csv
import io
import math
import statistics
import time
from pathlib import Path

from ..jsonio import read_json, read_metrics, write_json
from ..rundir import ENVIRONMENT_FILE, RunConfig, is_run_dir
from .readers import curves, end_record, finite
from .runner import RUNS_DIR, SWEEP_FILE, read_variant_file, variant_status
from .factors import FACTORS, ALIASES, parse_value

OK = ("completed", "time_budget")  # ranked; a stopped run is cut short, listed unranked until a rerun ends it
GENERATED_PREFIX = "**Generated on:**"
PLOT_FILES = {
    "performance_comparison.png": "Validation loss, perplexity and accuracy, and training time, per variant (best "
                                  "first; the best is green, the base is outlined, diverged runs are grey). Lower "
                                  "is better for loss, perplexity and time; higher for accuracy.",
    "training_curves.png": "Validation and training loss against optimizer steps (top) and wall-clock seconds "
                           "(bottom). The best variants are coloured, the rest grey; diverged runs are dashed.",
    "performance_heatmap.png": "Final validation loss over two factors of the grid (one panel per value of a third, "
                               "if any; other factors at their best value). Greener is better; the best cell is boxed.",
}


def _json_safe(x):
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    return x


def _read_json(path: Path) -> dict:
    data = read_json(path, default={})  # a missing or torn file reads as empty: the report shows what is there
    return data if isinstance(data, dict) else {}


# ---- reading -------------------------------------------------------------------------------------------------
def run_dirs(sweep_dir: Path) -> list[Path]:
    """Variant folders in sweep order (sweep.json's order, then any others by name)."""
    sweep_dir = Path(sweep_dir)
    root = sweep_dir / RUNS_DIR
    found = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    order = [v["slug"] for v in _read_json(sweep_dir / SWEEP_FILE).get("variants_resolved", [])]
    rank = {slug: i for i, slug in enumerate(order)}
    return sorted(found, key=lambda p: (rank.get(p.name, len(rank)), p.name))


def _values(factors: dict[str, str]) -> dict:
    out = {}
    for name, text in factors.items():
        key = ALIASES.get(name, name)
        try:
            out[key] = parse_value(FACTORS[key], text).value if key in FACTORS else text
        except Exception:  # noqa: BLE001 - a hand-edited file: keep the text
            out[key] = text
    return out


def summarize(run_dir: Path) -> dict:
    """One row of the results table, from a run folder (variant.json optional)."""
    run_dir = Path(run_dir)
    recorded = read_variant_file(run_dir)
    variant = recorded.get("variant") or {"name": run_dir.name, "slug": run_dir.name, "kind": "named",
                                          "is_base": False, "factors": {}, "raw_flags": {}}
    records = read_metrics(run_dir)
    status = variant_status(run_dir)
    if status in ("new", "incomplete"):
        status = "incomplete" if records or is_run_dir(run_dir) else "not run"
    evals = [r for r in records if finite(r.get("eval_loss"))]
    train = [r for r in records if finite(r.get("loss"))]
    last_eval = evals[-1] if evals else {}
    c = curves(run_dir)
    train_time = max([t for _, t, _ in c["train"] + c["eval"]], default=None)
    tps = [r["tokens_per_second"] for r in records if finite(r.get("tokens_per_second"))]
    end = end_record(records) or {}
    steps = end.get("step", max([r.get("step", 0) for r in records], default=0))
    config = RunConfig.load(run_dir) or RunConfig()  # a missing or torn file reads as empty
    val_loss = last_eval.get("eval_loss")
    return {
        "variant": variant["name"], "slug": variant.get("slug", run_dir.name), "kind": variant.get("kind", "named"),
        "is_base": bool(variant.get("is_base")), "factors": dict(variant.get("factors", {})),
        "values": _values(variant.get("factors", {})), "raw_flags": dict(variant.get("raw_flags", {})),
        "optimizer": config.optimizer_type, "status": status,
        "detail": recorded.get("detail") if status not in OK else None,
        "val_loss": val_loss, "val_perplexity": math.exp(min(val_loss, 50.0)) if finite(val_loss) else None,
        "val_accuracy": last_eval.get("eval_accuracy"), "eval_step": last_eval.get("step"),
        "train_loss": train[-1]["loss"] if train else None,
        "train_time_s": round(train_time, 2) if train_time is not None else None,
        "tokens_per_second": round(statistics.median(tps), 1) if tps else None,
        "steps": steps, "max_steps": config.training_arguments.get("max_steps"),
        "wall_s": recorded.get("wall_s"), "run_dir": f"{RUNS_DIR}/{run_dir.name}",
    }


def collect(sweep_dir: Path) -> list[dict]:
    return [summarize(d) for d in run_dirs(sweep_dir)]


def rank_rows(rows: list[dict]) -> list[dict]:
    """Successful runs by val loss (best first), then runs without an eval, then diverged/failed ones;
    sets ``rank`` (None for runs that did not finish well) and ``improvement_vs_base_pct``."""
    good = sorted([r for r in rows if r["status"] in OK and finite(r["val_loss"])],
                  key=lambda r: (r["val_loss"], r["variant"]))
    rest = [r for r in rows if r not in good]
    rest.sort(key=lambda r: (r["status"] in ("diverged", "failed"), rows.index(r)))
    base = next((r for r in rows if r["is_base"]), None)
    base_loss = base["val_loss"] if base and base["status"] in OK and finite(base["val_loss"]) else None
    out = []
    for i, row in enumerate(good + rest):
        row = dict(row)
        row["rank"] = i + 1 if row in good else None
        ok = row["rank"] is not None and base_loss
        row["improvement_vs_base_pct"] = round(100.0 * (base_loss - row["val_loss"]) / base_loss, 4) if ok else None
        out.append(row)
    return out


# ---- insights ------------------------------------------------------------------------------------------------
def _f(x, digits=4) -> str:
    return f"{x:.{digits}f}" if finite(x) else "—"


def insights(ranked: list[dict], grid: dict[str, list[str]], wall_clock_budget: bool) -> list[str]:
    good = [r for r in ranked if r["rank"] is not None]
    bad = [r for r in ranked if r["status"] in ("diverged", "failed")]
    out = []
    if good:
        best = good[0]
        out.append(f"**Overall best:** {best['variant']} reached the lowest validation loss, {_f(best['val_loss'])} "
                   f"(perplexity {_f(best['val_perplexity'], 2)}, accuracy {_f(best['val_accuracy'])}).")
        base = next((r for r in ranked if r["is_base"]), None)
        if base is not None and base["improvement_vs_base_pct"] is not None and base is not best:
            out.append(f"**Best improvement:** {best['variant']} improves on the base ({base['variant']}, "
                       f"{_f(base['val_loss'])}) by {best['improvement_vs_base_pct']:+.2f}%.")
        elif base is best:
            out.append(f"**Base holds:** no variant beats the base ({base['variant']}).")
    for name, texts in grid.items():
        key = ALIASES.get(name, name)
        label = FACTORS[key].label if key in FACTORS else name
        parts, means = [], {}
        for text in texts:
            mine = [r for r in ranked if r["kind"] == "grid" and r["factors"].get(key) == text]
            ok = [r["val_loss"] for r in mine if r["rank"] is not None]
            if ok:
                means[text] = statistics.fmean(ok)
            div = sum(r["status"] in ("diverged", "failed") for r in mine)
            parts.append(f"{text} → {_f(means[text]) if text in means else 'no result'}"
                         + (f" ({div}/{len(mine)} diverged)" if div else ""))
        if means:
            top = min(means, key=means.get)
            mine_best = next((r for r in good if r["kind"] == "grid"), None)
            tail = f"; the best grid variant uses {mine_best['factors'].get(key)}" if mine_best else ""
            out.append(f"**{label}:** {top} is best on average (mean val loss over the grid: "
                       f"{', '.join(parts)}){tail}.")
    if good:
        timed = [r for r in good if finite(r["tokens_per_second"])]
        if timed:
            fast = max(timed, key=lambda r: r["tokens_per_second"])
            out.append(f"**Fastest:** {fast['variant']} ran at {fast['tokens_per_second']:,.0f} tokens/s "
                       f"(median), {_f(fast['train_time_s'], 1)} s of training.")
        if wall_clock_budget:
            most = max(good, key=lambda r: r["steps"] or 0)
            out.append(f"**Most steps in the time budget:** {most['variant']} ({most['steps']} steps).")
        lo, hi = good[0]["val_loss"], good[-1]["val_loss"]
        out.append(f"**Performance range:** validation loss from {_f(lo)} to {_f(hi)} "
                   f"(spread {_f(hi - lo)}, {100 * (hi - lo) / lo:.2f}% of the best) over {len(good)} variants.")
        muon = [r for r in good if r.get("optimizer") == "muon"]
        for r in good:
            if r.get("optimizer") == "adamw" and muon:
                ref = muon[0]
                out.append(f"**AdamW check:** {r['variant']} reached {_f(r['val_loss'])}, "
                           f"{100 * (r['val_loss'] - ref['val_loss']) / ref['val_loss']:+.2f}% vs the best Muon "
                           f"variant ({ref['variant']}).")
    if bad:
        names = "; ".join(f"{r['variant']} ({r['status']} at step {r['steps']}"
                          + (f": {r['detail']}" if r.get("detail") else "") + ")" for r in bad)
        out.append(f"**Diverged or failed:** {len(bad)} of {len(ranked)} — {names}.")
    else:
        out.append(f"**Diverged:** none of {len(ranked)}.")
    return out


# ---- configuration block ---------------------------------------------------------------------------------------
def config_summary(sweep_dir: Path, rows: list[dict], sweep: dict) -> dict:
    """The shared setup, read from the base variant's run_config.json (else the first that has one)."""
    ordered = sorted(rows, key=lambda r: not r["is_base"])
    config, env = None, {}
    for r in ordered:
        path = Path(sweep_dir) / r["run_dir"]
        config = RunConfig.load(path)
        if config is not None and config.raw:
            env = _read_json(path / ENVIRONMENT_FILE)
            break
    if config is None or not config.raw:
        return {}
    t, mu, data, model = config.training_arguments, config.muon, config.data, config.model
    counts = data.get("counts") or {}
    return {
        "model_size": model.get("model_size"), "architecture": model.get("architecture"),
        "num_parameters": model.get("num_parameters"), "preset": config.training_preset,
        "optimizer": config.optimizer_type, "max_steps": t.get("max_steps"),
        "time_budget": sweep.get("time_budget"),
        "batch_size": (t.get("per_device_train_batch_size") or 0) * (t.get("gradient_accumulation_steps") or 1),
        "per_device_batch": t.get("per_device_train_batch_size"), "grad_accum": t.get("gradient_accumulation_steps"),
        "seq_len": data.get("max_seq_length"), "learning_rate": t.get("learning_rate"), "adamw_lr": mu.get("adamw_lr"),
        "lr_scheduler": t.get("lr_scheduler_type"), "warmup_steps": t.get("warmup_steps"),
        "momentum": mu.get("momentum"), "momentum_start": mu.get("momentum_warmup_start"),
        "momentum_ramp": mu.get("momentum_warmup_steps"), "nesterov": mu.get("nesterov"), "backend": mu.get("backend"),
        "ns_steps": mu.get("ns_steps"), "eval_steps": t.get("eval_steps"),
        "eval_sequences": counts.get("eval_sequences"), "eval_examples": counts.get("eval_examples"),
        "dataset": (data.get("source") or {}).get("dataset") or data.get("data_dir") or data.get("dataset"),
        "train_examples": counts.get("train_examples"), "device": env.get("device"), "seed": t.get("seed"),
    }


def _config_lines(cfg: dict, sweep: dict, rows: list[dict], sweep_dir: Path) -> list[str]:
    n, ok = len(rows), sum(r["rank"] is not None for r in rows)
    div = sum(r["status"] == "diverged" for r in rows)
    failed = sum(r["status"] == "failed" for r in rows)
    unfinished = sum(r["status"] in ("stopped", "incomplete", "new") for r in rows)  # a rerun finishes them
    lines = []
    if cfg:
        params = f", {cfg['num_parameters'] / 1e6:.2f}M params" if cfg.get("num_parameters") else ""
        lines.append(f"*   **Model:** {cfg['model_size']} ({cfg['architecture']}{params})")
        lines.append(f"*   **Base preset:** {cfg['preset']} ({cfg['optimizer']})")
        budget = f"{cfg['max_steps']} steps per variant"
        if cfg.get("time_budget"):
            budget = f"{cfg['time_budget']} of wall-clock per variant (at most {cfg['max_steps']} steps)"
        lines.append(f"*   **Budget:** {budget}")
        lines.append(f"*   **Batch size:** {cfg['batch_size']} sequences ({cfg['per_device_batch']} x "
                     f"{cfg['grad_accum']} accumulation) of {cfg['seq_len']} tokens")
        lr = f"{cfg['learning_rate']:g}"
        if cfg["optimizer"] == "muon":
            side = cfg.get("adamw_lr")
            lr += f" (Muon matrices), {side:g} (AdamW side)" if side is not None else " (Muon)"
        lines.append(f"*   **Base learning rate:** {lr}; {cfg['lr_scheduler']} schedule, "
                     f"{cfg['warmup_steps']:g} warmup steps")
        if cfg["optimizer"] == "muon":
            ramped = cfg.get("momentum_ramp") and cfg.get("momentum_start") is not None
            ramp = (f"{cfg['momentum_start']:g} → {cfg['momentum']:g} over {cfg['momentum_ramp']} steps" if ramped
                    else f"{cfg['momentum']:g} constant")
            steps = cfg["ns_steps"] if cfg.get("ns_steps") else "its default"
            lines.append(f"*   **Base Muon:** momentum {ramp}, Nesterov {'on' if cfg['nesterov'] else 'off'}, "
                         f"backend {cfg['backend']} with {steps} steps")
        held = f"{cfg['eval_sequences']} held-out sequences"
        if cfg.get("eval_examples"):  # packed: examples -> fewer sequences of seq_len tokens
            held = f"{cfg['eval_examples']} held-out examples ({cfg['eval_sequences']} sequences)"
        lines.append(f"*   **Evaluation:** every {cfg['eval_steps']} steps on {held} of {cfg['dataset']}")
        lines.append(f"*   **Seed:** {cfg['seed']}; **device:** {cfg['device']}")
    grid = sweep.get("grid") or {}
    if grid:
        lines.append("*   **Grid:** " + " × ".join(
            f"{FACTORS[ALIASES.get(k, k)].label if ALIASES.get(k, k) in FACTORS else k} ∈ {{{', '.join(v)}}}"
            for k, v in grid.items()))
    if sweep.get("base_flags"):
        lines.append(f"*   **Base flags:** `{' '.join(sweep['base_flags'])}`")
    lines.append(f"*   **Total experiments:** {n} ({ok} successful, {div} diverged, {failed} failed"
                 + (f", {unfinished} unfinished" if unfinished else "") + ")")
    lines.append(f"*   **Rerun / continue:** `muon-ablate --resume_sweep {sweep_dir}`")
    return lines


# ---- writing ---------------------------------------------------------------------------------------------------
COLUMNS = ("Rank", "Variant", "Val Loss", "Val Perplexity", "Val Accuracy", "Train Time (s)", "Tokens/s", "Steps",
           "Improvement vs Base")


def _table_row(r: dict) -> list[str]:
    name = r["variant"] + (" (base)" if r["is_base"] and not r["variant"].startswith("Base") else "")
    if r["rank"] is None:
        name += f" — **{r['status']}**" + (" (last good metrics)" if finite(r["val_loss"]) else "")
    imp = "base" if r["is_base"] and r["rank"] is not None else (
        f"{r['improvement_vs_base_pct']:+.2f}%" if r["improvement_vs_base_pct"] is not None else "—")
    tps = f"{r['tokens_per_second']:,.0f}" if finite(r["tokens_per_second"]) else "—"
    return [str(r["rank"]) if r["rank"] is not None else "—", name.replace("|", "/"), _f(r["val_loss"]),
            _f(r["val_perplexity"], 2), _f(r["val_accuracy"]), _f(r["train_time_s"], 1), tps, str(r["steps"]), imp]


def markdown_table(ranked: list[dict]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "|".join("---" for _ in COLUMNS) + "|"]
    lines += ["| " + " | ".join(_table_row(r)) + " |" for r in ranked]
    return "\n".join(lines)


def results_csv(ranked: list[dict], factor_names: list[str]) -> str:
    buf = io.StringIO()
    fields = ["rank", "variant", "slug", "kind", "is_base", "status", *factor_names, "val_loss", "val_perplexity",
              "val_accuracy", "train_loss", "train_time_s", "tokens_per_second", "steps", "eval_step",
              "improvement_vs_base_pct", "wall_s", "detail"]
    writer = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in ranked:
        writer.writerow({**{k: ("" if v is None else v) for k, v in r.items()},
                         **{f: r["factors"].get(f, "") for f in factor_names}})
    return buf.getvalue()


def grid_from_rows(rows: list[dict]) -> dict[str, list[str]]:
    """Without sweep.json, the grid is what the grid variants' folders record (values in numeric order)."""
    grid: dict[str, list[str]] = {}
    for r in rows:
        if r["kind"] != "grid":
            continue
        for name, text in r["factors"].items():
            if text not in grid.setdefault(name, []):
                grid[name].append(text)
    out = {}
    for name, texts in grid.items():
        if len(texts) > 1:
            key = FACTORS.get(name)
            out[name] = sorted(texts, key=lambda t: parse_value(key, t).sort_key()) if key else texts
    return out


def build_report(sweep_dir: Path, *, plots: bool = True, now: str | None = None) -> dict:
    """Write results.json, results.csv, README.md (and plots/) into ``sweep_dir``; returns results.json's data."""
    sweep_dir = Path(sweep_dir)
    sweep = _read_json(sweep_dir / SWEEP_FILE).get("spec", {})
    ranked = rank_rows(collect(sweep_dir))
    grid = {ALIASES.get(k, k): v for k, v in (sweep.get("grid") or {}).items()}
    if not grid:
        grid = grid_from_rows(ranked)
    factor_names = list(dict.fromkeys([*grid, *(f for r in ranked for f in r["factors"])]))
    cfg = config_summary(sweep_dir, ranked, sweep)
    notes = insights(ranked, grid, bool(sweep.get("time_budget")))
    best = next((r for r in ranked if r["rank"] is not None), None)
    base = next((r for r in ranked if r["is_base"]), None)
    data = {"sweep": sweep, "config": cfg, "base_variant": base["variant"] if base else None,
            "best_variant": best["variant"] if best else None, "insights": notes, "variants": ranked}
    write_json(sweep_dir / "results.json", _json_safe(data))
    (sweep_dir / "results.csv").write_text(results_csv(ranked, factor_names))
    plot_files = []
    if plots:
        from .plots import make_plots

        plot_files = make_plots(sweep_dir, ranked, grid, sweep.get("heatmap"))
    (sweep_dir / "README.md").write_text(readme(sweep_dir, sweep, cfg, ranked, notes, plot_files, now))
    return data


def readme(sweep_dir: Path, sweep: dict, cfg: dict, ranked: list[dict], notes: list[str], plot_files: list[str],
           now: str | None) -> str:
    name = sweep.get("name") or sweep_dir.name
    out = [f"# Muon Ablation Study: {name}", "",
           "Each variant below is a separate training run of the same base setup with the listed changes; "
           "its run folder is under `runs/`. Val loss is the last evaluation's mean cross-entropy (nats per "
           "target token); improvement is relative to the base variant (positive = lower loss).", ""]
    if plot_files:
        out += ["## Visualizations", ""]
        for file in plot_files:
            title = file.removesuffix(".png").replace("_", " ").title()
            out += [f"### {title}", f"![{title}](plots/{file})", PLOT_FILES.get(file, ""), ""]
    out += ["## Experiment Configuration", "", *_config_lines(cfg, sweep, ranked, sweep_dir), ""]
    best = next((r for r in ranked if r["rank"] is not None), None)
    if best:
        out += ["## Best Performing Variant", "", f"**{best['variant']}**",
                f"*   **Validation Loss:** {_f(best['val_loss'])}",
                f"*   **Validation Perplexity:** {_f(best['val_perplexity'], 2)}",
                f"*   **Validation Accuracy:** {_f(best['val_accuracy'])}",
                f"*   **Training Time:** {_f(best['train_time_s'], 1)}s ({best['steps']} steps)", ""]
        if best["raw_flags"] or best["factors"]:
            flags = " ".join(f"{k}={v}" for k, v in {**best["factors"], **best["raw_flags"]}.items())
            out += [f"*   **Settings:** {flags}", ""]
    out += ["## Detailed Results", "", markdown_table(ranked), ""]
    uneven = [r["variant"] for r in ranked if r["rank"] is not None and r["eval_step"] != r["steps"]]
    if uneven:
        out += [f"Note: the last evaluation of {len(uneven)} variant(s) came before their last step "
                "(max_steps is not a multiple of eval_steps); their val metrics are from that evaluation.", ""]
    out += ["## Key Insights", "", *[f"*   {n}" for n in notes], ""]
    total = sum(r["wall_s"] or 0 for r in ranked)
    ok = sum(r["rank"] is not None for r in ranked)
    stamp = now or time.strftime("%Y-%m-%d %H:%M:%S")
    out += [f"{GENERATED_PREFIX} {stamp}",
            f"**Total Training Time:** {total:.1f} seconds (wall-clock of all runs, start-up included)",
            f"**Success Rate:** {ok}/{len(ranked)} experiments ({100 * ok / max(len(ranked), 1):.1f}%)", ""]
    return "\n".join(out)
