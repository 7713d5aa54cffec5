"""Does a model's training step cost depend on its weights? Forward + backward of saved models on one batch, side
by side, with CPU denormals kept and flushed.

    python bench/weights_step_cost.py bench/results/ablation_seed003/runs/adamw_standard/final \\
        bench/results/ablation_seed003/runs/adamw_at_muon_lr/final

Same shapes, same batch, same threads: on hardware whose cost is data-independent the rows match. On x86 CPUs,
arithmetic on subnormal floats (|x| < 1.2e-38) runs far slower, so a model whose activations or gradients hold many
of them trains slower per step (it fits fewer steps into a ``--time_budget``). ``torch.set_flush_denormal(True)``
treats them as zero; it is set per thread, so with several torch threads it may reach only part of the work.
Rounds are interleaved (model A, model B, A, B, ...) so drift on a shared machine hits both alike.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch


def step_seconds(model, ids: torch.Tensor) -> float:
    start = time.perf_counter()
    model(input_ids=ids, labels=ids).loss.backward()
    model.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("models", nargs="+", type=Path, help="saved model folders (the first is the reference)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq_len", type=int, default=256)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    cfg = p.parse_args(argv)
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(cfg.threads)
    for path in cfg.models:
        if not (path / "config.json").is_file():
            print(f"error: {path}: no saved model there (config.json); pass a run's final/ or checkpoint-N/ folder",
                  file=sys.stderr)
            return 2
    models = [AutoModelForCausalLM.from_pretrained(path) for path in cfg.models]
    vocab = min(m.config.vocab_size for m in models)
    ids = torch.randint(0, vocab, (cfg.batch, cfg.seq_len), generator=torch.Generator().manual_seed(0))
    times = {(i, flush): [] for i in range(len(models)) for flush in (False, True)}
    for model in models:  # warm-up: first calls allocate and pick kernels
        step_seconds(model, ids)
    for _ in range(cfg.rounds):
        for flush in (False, True):
            torch.set_flush_denormal(flush)
            for i, model in enumerate(models):
                times[(i, flush)].append(step_seconds(model, ids))
    torch.set_flush_denormal(False)
    ref = statistics.median(times[(0, False)])
    print(f"forward+backward of {cfg.batch} x {cfg.seq_len} tokens, {cfg.threads} threads, median of {cfg.rounds} "
          "interleaved rounds")
    print("| model | step s (denormals kept) | vs first | step s (flushed) | vs first |")
    print("|---|---|---|---|---|")
    for i, path in enumerate(cfg.models):
        kept, flushed = statistics.median(times[(i, False)]), statistics.median(times[(i, True)])
        print(f"| {path} | {kept:.3f} | {kept / ref:.2f} | {flushed:.3f} | {flushed / ref:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
