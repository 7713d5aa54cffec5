"""Is a preset's lr right at a size? The lr the preset resolves to there (configs/lr_rule.py) against 1/3x and 3x.

    python bench/lr_check.py --model_size hybrid-small-standard --training_preset muon_default --steps 100 \
        --extra "--bf16 true"                        # bench/gpu_check.sh's check, on one GPU
    python bench/lr_check.py --model_size hybrid-tiny --training_preset muon_demo --steps 5 --out /tmp/lr_check

Three ``mamba-train`` runs, the same data, seed and steps, started together (on one GPU they share it; on a CPU
they share the cores): the preset's resolved lr, and the Muon-side (or AdamW) lr times ``--factors`` (1/3 and 3 by
default); under Muon the AdamW side stays at the preset's. Each run's final eval loss goes in a table, and the line
``best: ...`` says which factor won. ``<out>/results.json`` holds the numbers.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import shutil
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def final_eval_loss(run_dir: Path) -> float | None:
    """The run's final eval loss as every bench reads it (`mamba_trainer.runs.summarize_run`); None unless it
    completed."""
    from mamba_trainer.rundir import read_metrics
    from mamba_trainer.runs import summarize_run

    final = summarize_run(read_metrics(run_dir))["final"]
    return None if math.isinf(final) else final


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model_size", default="hybrid-small-standard")
    p.add_argument("--training_preset", default="muon_default")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq_len", type=int, default=1024)
    p.add_argument("--eval_examples", type=int, default=64)
    p.add_argument("--factors", default="0.3333,1,3", help="multiples of the resolved lr, comma-separated")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--extra", default="", help="more mamba-train flags for every run (e.g. \"--bf16 true\")")
    p.add_argument("--out", default=str(ROOT / "results" / "lr_check"))
    args = p.parse_args(argv)
    from mamba_trainer import runs
    from mamba_trainer.learning_rates import preset_lrs

    extra = shlex.split(args.extra)
    base = preset_lrs(args.model_size, args.training_preset, extra)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    warmup = max(args.steps // 10, 1)
    common = ["--model_size", args.model_size, "--training_preset", args.training_preset, "--seed", str(args.seed),
              "--max_steps", str(args.steps), "--warmup_steps", str(warmup), "--per_device_train_batch_size",
              str(args.batch), "--gradient_accumulation_steps", "1", "--max_seq_length", str(args.seq_len),
              "--max_eval_examples", str(args.eval_examples), "--eval_strategy", "steps", "--eval_steps",
              str(args.steps), "--logging_steps", str(max(args.steps // 10, 1)), "--save_strategy", "no",
              "--disable_tqdm", "true", *extra]
    if base["adamw_lr"] is not None:
        common += ["--adamw_lr", f"{base['adamw_lr']:.6g}"]  # the AdamW side stays at the preset's
    factors = [float(f) for f in args.factors.split(",")]

    def one(factor: float):
        lr = float(f"{base['learning_rate'] * factor:.4g}")
        run_dir = out / f"lr_x{factor:g}"
        flags = [*common, "--learning_rate", f"{lr:g}"]
        shutil.rmtree(run_dir, ignore_errors=True)  # a measurement, made afresh each time
        rc = runs.run_logged(runs.mamba_train_command(flags, run_dir=run_dir), out / f"lr_x{factor:g}.log",
                             env=runs.child_env(), append=False, header="mamba-train " + shlex.join(flags) + "\n")
        return {"factor": factor, "learning_rate": lr, "returncode": rc, "final_eval_loss": final_eval_loss(run_dir)}

    with ThreadPoolExecutor(len(factors)) as pool:
        results = list(pool.map(one, factors))
    side = f", AdamW side {base['adamw_lr']:g}" if base["adamw_lr"] is not None else ""
    print(f"{args.model_size} / {args.training_preset} ({base['optimizer']}), {args.steps} steps of {args.batch} x "
          f"{args.seq_len} tokens; the preset resolves to lr {base['learning_rate']:g}{side}"
          + (f" (carried from width {base['lrs']['lr_width']})" if base["lrs"] else ""))
    print("| lr factor | lr | final eval loss |\n|---|---|---|")
    for r in results:
        loss = "failed (see its log)" if r["final_eval_loss"] is None else f"{r['final_eval_loss']:.4f}"
        print(f"| {r['factor']:g}x | {r['learning_rate']:g} | {loss} |")
    done = [r for r in results if r["final_eval_loss"] is not None]
    if done:
        best = min(done, key=lambda r: r["final_eval_loss"])
        print(f"best: {best['factor']:g}x the preset's lr"
              + (" (the preset's own)" if best["factor"] == 1 else " (the preset's lr is off by this factor or more)"))
    (out / "results.json").write_text(json.dumps({"args": vars(args), "preset": base, "runs": results}, indent=1))
    return 0 if len(done) == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
