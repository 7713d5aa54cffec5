"""Training throughput of Muon vs AdamW: same model, same data, same batch, one run, side by side.

    python bench/throughput.py                                   # hybrid-tiny, CPU, ~5 minutes
    python bench/throughput.py --model_size hybrid-small --tokenizer bundled --steps 20 --rounds 1

Each round trains the model for ``--steps`` optimizer steps with each optimizer, alternating (A B A B ...) so
that drifting machine load hits both alike. Reported: median tokens/s over the steps after ``--skip`` warm-up
steps, pooled over rounds, and the ratio Muon / AdamW per round and its median (target >= 0.97). Not a test: timings are noisy.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from mamba_trainer.rundir import series  # noqa: E402
from mamba_trainer.runs import mamba_train_command, run_logged  # noqa: E402  (the one runner of mamba-train runs)


def run_once(workdir: Path, optimizer: str, args, seed: int) -> list[float]:
    out = workdir / f"{optimizer}_{seed}"
    flags = ["--model_size", args.model_size, "--training_preset", "muon_demo" if optimizer == "muon" else "demo",
             "--optimizer", optimizer, "--max_steps", str(args.steps), "--logging_steps", "1", "--eval_strategy", "no",
             "--save_strategy", "no", "--max_train_examples", "4000", "--per_device_train_batch_size", str(args.batch),
             "--max_seq_length", str(args.seq_len), "--seed", str(seed)]
    if args.tokenizer:
        flags += ["--tokenizer", args.tokenizer]
    flags += args.extra.split()
    log = workdir / f"{optimizer}_{seed}.log"
    if run_logged(mamba_train_command(flags, run_dir=out), log, cwd=workdir, append=False) != 0:
        sys.exit(f"{optimizer} run failed:\n{log.read_text()[-3000:]}")
    _, rates = series(out, "tokens_per_second")
    return rates[args.skip:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_size", default="hybrid-tiny")
    parser.add_argument("--tokenizer", default=None, help="e.g. 'bundled' to run a real size offline")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--skip", type=int, default=5, help="warm-up steps left out of the median")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq_len", type=int, default=256)
    parser.add_argument("--extra", default="", help="more mamba-train flags for both runs, e.g. '--bf16 true'")
    args = parser.parse_args()

    rates = {"adamw": [], "muon": []}
    ratios = []  # per round: a load change between rounds moves both optimizers of a round alike
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):
            order = ("adamw", "muon") if round_ % 2 == 0 else ("muon", "adamw")
            this_round = {}
            for optimizer in order:
                this_round[optimizer] = run_once(Path(tmp), optimizer, args, seed=round_)
                rates[optimizer] += this_round[optimizer]
            med_round = {k: statistics.median(v) for k, v in this_round.items()}
            ratios.append(med_round["muon"] / med_round["adamw"])
            print(f"round {round_ + 1}/{args.rounds}: adamw {med_round['adamw']:,.0f} tok/s, muon "
                  f"{med_round['muon']:,.0f} tok/s, ratio {ratios[-1]:.3f}", flush=True)

    med = {k: statistics.median(v) for k, v in rates.items()}
    sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]
    from machine import describe_machine

    print(f"\n{describe_machine()}")
    print(f"model {args.model_size}, batch {args.batch} x {args.seq_len} tokens, {args.steps} steps x "
          f"{args.rounds} rounds per optimizer, first {args.skip} steps of each run skipped")
    print("| optimizer | median tokens/s | steps measured |")
    print("|---|---:|---:|")
    for name in ("adamw", "muon"):
        print(f"| {name} | {med[name]:,.0f} | {len(rates[name])} |")
    print(f"\nMuon / AdamW throughput ratio: median of per-round ratios {statistics.median(ratios):.3f} "
          f"(rounds: {', '.join(f'{r:.3f}' for r in ratios)}; target >= 0.97)")


if __name__ == "__main__":
    main()
