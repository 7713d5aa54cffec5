"""Reproduce the math demonstration of docs/benchmarks.md: hybrid-tiny on bundled-math, Muon vs AdamW, on a CPU.

    python bench/math_demo.py                        # everything below, then the table (~40 min on 2 loaded cores)
    python bench/math_demo.py --steps 200 --limit 200 --root checkpoints/math_demo
    python bench/math_demo.py --report_only          # the table again, from the run folders alone

Stages, each one subprocess whose command is printed; a stage whose output already exists is skipped, so an
interrupted demo continues where it stopped (delete the folder to redo a stage):
  init   mamba-train --training_preset muon_demo --max_steps 0        the untrained model ("step 0"): the same
                                                                      seed gives the weights both runs start from
  muon   mamba-train --training_preset muon_demo --max_steps 200 --time_budget 20m --eval_steps 100
                     --gsm8k_eval_samples 50                          (answer accuracy on 50 problems at each eval)
  adamw  mamba-train --training_preset demo      (the same flags)
  eval   mamba-eval --model <run> --dataset bundled-math --split test --limit 200     greedy, for each of the three

The runs use one intra-op thread unless OMP_NUM_THREADS is set: on the shared 2-core machine the demo was
made on, two threads competing with other jobs ran a training step ~4x slower than one (measured, 250 vs
1,000 tokens/s). Timings depend on the machine and its load; the table reports them as measured.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from mamba_trainer.jsonio import read_metrics  # noqa: E402
from mamba_trainer.rundir import end_record, is_finished  # noqa: E402
from mamba_trainer.runs import mamba_train_command, run_logged  # noqa: E402  (the one runner of mamba-train runs)

RUNS = {  # name -> (preset, is a training run)
    "init": ("muon_demo", False),
    "muon": ("muon_demo", True),
    "adamw": ("demo", True),
}


def train_command(name: str, root: Path, a) -> list[str]:
    preset, trains = RUNS[name]
    flags = ["--training_preset", preset, "--model_size", "hybrid-tiny", "--seed", str(a.seed),
             "--packing", a.packing, "--eval_packing", "same" if a.packing == "stream" else "bfd"]
    if trains:
        flags += ["--max_steps", str(a.steps), "--time_budget", a.time_budget, "--eval_steps", str(a.eval_steps),
                  "--save_steps", str(a.steps), "--gsm8k_eval_samples", str(a.train_eval_problems)]
    else:
        flags += ["--max_steps", "0"]
    return mamba_train_command(flags, run_dir=root / name)


def eval_command(name: str, root: Path, a) -> list[str]:
    return [sys.executable, "-m", "mamba_trainer.evaluate", "--model", str(root / name), "--dataset", "bundled-math",
            "--split", "test", "--limit", str(a.limit), "--max_new_tokens", str(a.max_new_tokens)]


def run(cmd: list[str], log: Path) -> float:
    """Run ``cmd`` with its output teed to ``log``; returns wall-clock seconds. A failure stops the demo."""
    print("$ " + " ".join(shlex.quote(c) for c in cmd), flush=True)
    started = time.perf_counter()

    def show(line: str) -> None:
        if not line.startswith("[transformers]"):  # the kernel-fallback notes, once per layer type
            sys.stdout.write(line)

    code = run_logged(cmd, log, cwd=REPO, tee=show)
    seconds = time.perf_counter() - started
    if code != 0:
        sys.exit(f"error: {cmd[2]} failed with status {code}; see {log}")
    return seconds


def describe(name: str, root: Path, timings: dict) -> dict:
    """One table row from a run folder: steps, train wall-clock, last losses, answer accuracy."""
    run_dir = root / name
    metrics = read_metrics(run_dir)
    train = [m for m in metrics if "loss" in m]
    evals = [m for m in metrics if "eval_loss" in m]
    end = end_record(metrics) or {}
    result_file = run_dir / "eval" / "bundled-math_test.json"
    summary = json.loads(result_file.read_text())["summary"]["models"][0] if result_file.is_file() else {}
    trains = RUNS[name][1]
    return {
        # --max_steps 0 still runs the Trainer's first step, at the warmup's lr of 0: the weights stay the initial ones
        "run": name, "preset": RUNS[name][0], "steps": end.get("step", 0) if trains else 0, "end": end.get("reason"),
        "train_seconds": timings.get(f"train_{name}", train[-1]["elapsed_s"] if train else 0.0) if trains else None,
        "final_loss": train[-1]["loss"] if train else None,
        "final_eval_loss": evals[-1]["eval_loss"] if evals else None,
        "train_time_gsm8k": [(m["step"], m["eval_gsm8k_strict"], m["eval_gsm8k_flexible"])
                             for m in metrics if "eval_gsm8k_strict" in m],
        "n": summary.get("n"), "strict": summary.get("strict"), "flexible": summary.get("flexible"),
        "eval_seconds": summary.get("seconds"),
    }


def table(rows: list[dict]) -> str:
    def pct(x):
        return "-" if x is None else f"{100 * x:.1f}%"

    def num(x):
        return "-" if x is None else f"{x:.3f}"

    lines = ["| run | preset | steps | train wall-clock | final train loss | final eval loss | n | strict | flexible |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        clock = "-" if r["train_seconds"] is None else f"{r['train_seconds'] / 60:.1f} min"
        ended = "" if r["end"] in ("completed", None) else f" ({r['end']})"  # e.g. the time budget stopped it
        lines.append(f"| {r['run']} | {r['preset']} | {r['steps']}{ended} | {clock} | "
                     f"{num(r['final_loss'])} | {num(r['final_eval_loss'])} | {r['n'] or '-'} | {pct(r['strict'])} | "
                     f"{pct(r['flexible'])} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    parser.add_argument("--root", default="checkpoints/math_demo", help="Folder for the three runs (relative: to the repo).")
    parser.add_argument("--steps", type=int, default=200, help="Optimizer steps of each training run.")
    parser.add_argument("--time_budget", default="20m", help="Wall-clock guard of each training run (the table shows "
                        "when it ended one).")
    parser.add_argument("--eval_steps", type=int, default=100, help="Eval (loss + answer accuracy) every N steps.")
    parser.add_argument("--train_eval_problems", type=int, default=50, help="Problems solved at each training eval.")
    parser.add_argument("--limit", type=int, default=200, help="bundled-math test problems in the final evaluation.")
    parser.add_argument("--max_new_tokens", type=int, default=256, help="Longest generated answer.")
    parser.add_argument("--seed", type=int, default=42, help="Seed of the model init and the data order.")
    parser.add_argument("--packing", default="stream", choices=("stream", "bfd"),
                        help="Training rows: stream (with its eval rows packed the same way) is what README's numbers "
                        "were made with; bfd (examples kept apart, leak-free eval) is mamba-train's default now.")
    parser.add_argument("--report_only", action="store_true", help="Only print the table from existing run folders.")
    a = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    root = (REPO / a.root) if not Path(a.root).is_absolute() else Path(a.root)
    timings_file = root / "timings.json"
    timings = json.loads(timings_file.read_text()) if timings_file.is_file() else {}

    if not a.report_only:
        for name in RUNS:
            if not is_finished(root / name):
                timings[f"train_{name}"] = run(train_command(name, root, a), root / "logs" / f"train_{name}.log")
                timings_file.write_text(json.dumps(timings, indent=1))
        for name in RUNS:
            if not (root / name / "eval" / "bundled-math_test.json").is_file():
                timings[f"eval_{name}"] = run(eval_command(name, root, a), root / "logs" / f"eval_{name}.log")
                timings_file.write_text(json.dumps(timings, indent=1))

    rows = [describe(name, root, timings) for name in RUNS]
    (root / "summary.json").write_text(json.dumps({"settings": vars(a), "omp_num_threads": os.environ["OMP_NUM_THREADS"],
                                                   "rows": rows}, indent=1))
    print(table(rows))
    for r in rows:
        if r["train_time_gsm8k"]:
            curve = ", ".join(f"step {s}: {100 * st:.0f}%/{100 * fl:.0f}%" for s, st, fl in r["train_time_gsm8k"])
            print(f"{r['run']}: answer accuracy during training (strict/flexible, {a.train_eval_problems} problems): {curve}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
