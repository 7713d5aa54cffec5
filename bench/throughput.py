"""Training throughput, side by side in one run: Muon vs AdamW (the default), or two packing modes.

    python bench/throughput.py                                   # Muon vs AdamW, hybrid-tiny, CPU, ~5 minutes
    python bench/throughput.py --compare packing                 # stream vs bfd (examples kept apart), Muon
    python bench/throughput.py --model_size hybrid-small --tokenizer bundled --steps 20 --rounds 1

Each round trains the model for ``--steps`` optimizer steps with each arm, alternating (A B A B ...) so that
drifting machine load hits both alike. Reported: median tokens/s over the steps after ``--skip`` warm-up steps,
pooled over rounds, and the ratio of the second arm to the first per round and its median (targets: Muon / AdamW
>= 0.97; bfd / stream >= 0.95). mamba-train logs non-padding tokens, so tokens/s here is content tokens/s whatever
the packing. Not a test: timings are noisy.
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


#: what each comparison runs: arm name -> (optimizer, packing); the first arm is the ratio's denominator
COMPARISONS = {"optimizer": {"adamw": ("adamw", "stream"), "muon": ("muon", "stream")},
               "packing": {"stream": ("muon", "stream"), "bfd": ("muon", "bfd")}}
TARGETS = {"optimizer": 0.97, "packing": 0.95}


def run_once(workdir: Path, arm: str, args, seed: int) -> list[float]:
    optimizer, packing = COMPARISONS[args.compare][arm]
    out = workdir / f"{arm}_{seed}"
    flags = ["--model_size", args.model_size, "--training_preset", "muon_demo" if optimizer == "muon" else "demo",
             "--optimizer", optimizer, "--packing", packing, "--max_steps", str(args.steps), "--logging_steps", "1",
             "--eval_strategy", "no", "--save_strategy", "no", "--max_train_examples", "4000",
             "--per_device_train_batch_size", str(args.batch), "--max_seq_length", str(args.seq_len),
             "--seed", str(seed)]
    if args.tokenizer:
        flags += ["--tokenizer", args.tokenizer]
    flags += args.extra.split()
    log = workdir / f"{arm}_{seed}.log"
    if run_logged(mamba_train_command(flags, run_dir=out), log, cwd=workdir, append=False) != 0:
        sys.exit(f"{arm} run failed:\n{log.read_text()[-3000:]}")
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
    parser.add_argument("--compare", choices=sorted(COMPARISONS), default="optimizer",
                        help="optimizer: AdamW vs Muon; packing: stream vs bfd (Muon)")
    args = parser.parse_args()
    first, second = COMPARISONS[args.compare]

    rates = {first: [], second: []}
    ratios = []  # per round: a load change between rounds moves both arms of a round alike
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):
            order = (first, second) if round_ % 2 == 0 else (second, first)
            this_round = {}
            for arm in order:
                this_round[arm] = run_once(Path(tmp), arm, args, seed=round_)
                rates[arm] += this_round[arm]
            med_round = {k: statistics.median(v) for k, v in this_round.items()}
            ratios.append(med_round[second] / med_round[first])
            print(f"round {round_ + 1}/{args.rounds}: {first} {med_round[first]:,.0f} tok/s, {second} "
                  f"{med_round[second]:,.0f} tok/s, ratio {ratios[-1]:.3f}", flush=True)

    med = {k: statistics.median(v) for k, v in rates.items()}
    sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]
    from machine import describe_machine

    print(f"\n{describe_machine()}")
    print(f"model {args.model_size}, batch {args.batch} x {args.seq_len} tokens, {args.steps} steps x "
          f"{args.rounds} rounds per arm, first {args.skip} steps of each run skipped")
    print(f"| {args.compare} | median tokens/s | steps measured |")
    print("|---|---:|---:|")
    for name in (first, second):
        print(f"| {name} | {med[name]:,.0f} | {len(rates[name])} |")
    print(f"\n{second} / {first} throughput ratio: median of per-round ratios {statistics.median(ratios):.3f} "
          f"(rounds: {', '.join(f'{r:.3f}' for r in ratios)}; target >= {TARGETS[args.compare]})")


if __name__ == "__main__":
    main()
